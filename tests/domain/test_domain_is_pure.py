import ast
from pathlib import Path

import companion.domain

FORBIDDEN = {"flask", "pymongo", "bson", "bleak", "firebase_admin", "marshmallow", "apscheduler"}


def test_domain_modules_import_no_adapters():
    for path in Path(companion.domain.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & FORBIDDEN, f"{path.name} imports {names}"
