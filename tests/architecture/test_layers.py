"""The layers as the README draws them, held by the build: dependencies point inwards, the HTTP doors and
the scheduler reach data only through the services, and each collection has one owner in store/.

The import rules are import-linter contracts in pyproject.toml; the rules that are not about imports (who
calls collection methods, who queries which collection) are checked here on the code's syntax tree.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import companion
from companion.store import db as store_db

ROOT = Path(companion.__file__).resolve().parents[1]
PACKAGE = ROOT / "companion"
STORE = PACKAGE / "store"
DOORS = ("api", "web", "jobs")
# pymongo's Collection methods that read or write documents (`find` is checked apart: str has one too).
COLLECTION_METHODS = {
    "find_one", "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
    "delete_many", "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "count_documents",
    "estimated_document_count", "aggregate", "bulk_write", "create_index", "create_indexes", "drop_index",
    "distinct", "watch",
}
# What a door must not reach into on the service container: the database and the stores behind it.
BEHIND_THE_SERVICES = {"db", "stores", "col", "client"}


def _modules(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _is_pymongo_find(call: ast.Call) -> bool:
    # pymongo's find takes a filter (or nothing); str.find takes the text to look for.
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "find"):
        return False
    first = call.args[0] if call.args else None
    return first is None or isinstance(first, ast.Dict)


def test_no_module_outside_store_calls_collection_methods():
    found = []
    for path, tree in _modules(PACKAGE):
        if STORE in path.parents:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    node.func.attr in COLLECTION_METHODS or _is_pymongo_find(node)):
                found.append(f"{_relative(path)}:{node.lineno} .{node.func.attr}()")
    assert found == []


def test_the_doors_and_the_scheduler_do_not_reach_behind_the_services():
    found = []
    for door in DOORS:
        for path, tree in _modules(PACKAGE / door):
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in BEHIND_THE_SERVICES:
                    found.append(f"{_relative(path)}:{node.lineno} .{node.attr}")
    assert found == []


def _declared_collections() -> dict[str, str]:
    """Each collection named in a store module's INDEXES, with the module that declares it."""
    owners: dict[str, str] = {}
    for name in store_db.INDEX_MODULES:
        for collection in getattr(importlib.import_module(name), "INDEXES", {}):
            assert collection not in owners, f"{collection} is declared by {owners[collection]} and {name}"
            owners[collection] = name
    return owners


def _collections_used(tree: ast.AST) -> set[str]:
    """Collections a module names as ``db.<name>`` or ``db["<name>"]`` (``self.db`` included)."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_db(node.value) and not node.attr.startswith("_") \
                and node.attr not in {"client", "name", "command", "list_collection_names"}:
            used.add(node.attr)
        elif isinstance(node, ast.Subscript) and _is_db(node.value) and isinstance(node.slice, ast.Constant):
            used.add(node.slice.value)
    return used


def _is_db(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "db") or (
        isinstance(node, ast.Attribute) and node.attr == "db" and isinstance(node.value, ast.Name))


def test_each_collection_is_queried_only_by_the_store_module_that_declares_its_indexes():
    owners = _declared_collections()
    strays = []
    for path, tree in _modules(STORE):
        module = "companion.store." + path.stem
        for collection in _collections_used(tree):
            if owners.get(collection) != module:
                strays.append(f"{module} uses {collection} (declared by {owners.get(collection, 'nobody')})")
    assert strays == []


def test_every_store_module_with_indexes_is_in_the_registry_that_creates_them():
    unregistered = []
    for path, tree in _modules(STORE):
        module = "companion.store." + path.stem
        declares = any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "INDEXES" for t in n.targets)
                       for n in tree.body)
        if declares and module not in store_db.INDEX_MODULES:
            unregistered.append(module)
    assert unregistered == []
