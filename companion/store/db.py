"""The MongoDB connection: durable defaults, one client per process, indexes at start-up and migrations.

Every process creates the indexes that are missing when it starts (idempotent). An index whose definition
in the code changed (other keys, now unique, a new name for the same keys) is not changed behind the
operator's back by whichever process starts first: :func:`ensure_indexes` refuses with
:class:`IndexesOutOfDate`, naming each index, and the migration step (``companion migrate``, run before
new web and worker processes start) applies the change with :func:`migrate_indexes`.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pymongo import IndexModel, MongoClient, monitoring
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConfigurationError, PyMongoError

log = logging.getLogger(__name__)

# Each module lists the indexes of the collections it owns in a module-level INDEXES dict
# ({collection: [IndexModel, ...]}); ensure_indexes creates them all, idempotently.
INDEX_MODULES = [
    "companion.store.accounts",
    "companion.store.tokens",
    "companion.store.throttle",
    "companion.store.relationships",
    "companion.store.audit",
    "companion.store.devices",
    "companion.store.sessions",
    "companion.store.idempotency",
    "companion.store.push_tokens",
    "companion.store.outbox",
    "companion.store.leases",
    "companion.store.alerts",
    "companion.store.adherence",
    "companion.store.plans",
    "companion.store.reminders",
    "companion.store.diary",
    "companion.store.content",
    "companion.store.clinical_notes",
    "companion.store.web_sessions",
    "companion.store.heartbeats",
    "companion.store.changes",
    "companion.store.codes",
    "companion.store.signups",
    "companion.store.recompute",
    "companion.store.gateway_reports",
    "companion.store.read_models",
]


def redacted_uri(uri: str) -> str:
    """A MongoDB URI fit for a log line or an error: without its user name and password."""
    return re.sub(r"//[^@/]*@", "//", uri)


def count_by_id(col: Collection, id_condition: dict) -> int:
    """How many documents of ``col`` have an ``_id`` matching ``id_condition`` (a string range or an ``$in``),
    counted from the ``_id`` index by the `count` command with a hint: pymongo's count_documents is an
    aggregation, which the development server answers by reading every matching document (its build counts
    such conditions from the index: scripts/ferretdb-v1.24.2-id-prefix-count.patch). A command pymongo does not
    dress: it carries the collection's read concern (:func:`make_client`'s majority) here."""
    concern = col.read_concern.document
    return int(col.database.command("count", col.name, query={"_id": id_condition}, hint="_id_",
                                    **({"readConcern": concern} if concern else {}))["n"])


class DatabaseNotFound(Exception):
    """A ``mongodb+srv://`` address whose DNS records cannot be looked up: the client cannot even be made (one
    line, saying so, with the address without its credentials)."""


def make_client(uri: str, *, timeout_ms: int = 5000, server_selection_timeout_ms: int = 2000,
                event_listeners: Sequence[monitoring.CommandListener] = ()) -> MongoClient:
    """A client that acknowledges writes only once they are durable, reads only what is durable, and never waits
    forever.

    Reads ask for read concern ``majority`` (checklist C1: a clinician's review and panel, and every other read,
    see only data a majority of the replica set holds, which a failover cannot roll back; the writes, acknowledged
    at ``w: majority``, are seen by the reads after them). The development and test server (FerretDB, one node)
    accepts the field and ignores it (any level, docs/reliability.md C1): there, every read is of durable data.

    timeoutMS bounds every operation, server selection included (pymongo then ignores
    serverSelectionTimeoutMS, and sends the remaining budget to the server as maxTimeMS), so a slow
    query or a dead server becomes an error the API turns into 503 within that time, not a hung worker.
    ``event_listeners``: pymongo's command monitoring (tests watch what is sent).
    A ``mongodb+srv://`` address is looked up in DNS here, by pymongo; a lookup that fails raises
    :class:`DatabaseNotFound`.
    """
    try:
        return _client(uri, timeout_ms, server_selection_timeout_ms, event_listeners)
    except ConfigurationError as exc:
        if not uri.startswith("mongodb+srv://"):
            raise
        said = (str(exc).splitlines() or [""])[0][:200]
        raise DatabaseNotFound(f"the database is not reachable at {redacted_uri(uri)}: its DNS records cannot be "
                               f"looked up ({said})") from None


def _client(uri: str, timeout_ms: int, server_selection_timeout_ms: int,
            event_listeners: Sequence[monitoring.CommandListener]) -> MongoClient:
    return MongoClient(
        uri,
        w="majority",
        journal=True,
        wtimeoutMS=5000,
        readConcernLevel="majority",
        retryWrites=True,
        retryReads=True,
        event_listeners=list(event_listeners),
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        connectTimeoutMS=server_selection_timeout_ms,
        tz_aware=True,
        appname="companion",
    )


# What makes two definitions of an index different besides its keys (FerretDB v1 keeps only `unique`;
# the code declares no other option, see tests/api/test_index_migrations.py).
INDEX_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "collation")
MIGRATE_COMMAND = "companion migrate"


@dataclass(frozen=True)
class IndexChange:
    """One declared index that the database lacks or holds in another form.

    ``action`` is ``create`` (missing), ``recreate`` (same name, other definition: dropped and created
    again) or ``rename`` (the same keys under the old name ``was``: that one is dropped first)."""

    collection: str
    name: str
    action: str
    definition: dict
    was: dict | None = None

    @property
    def is_change(self) -> bool:
        """True when applying it drops an existing index (what only the migration step does)."""
        return self.action != "create"

    def describe(self) -> str:
        now = _describe(self.definition)
        if self.action == "create":
            return f"{self.collection}.{self.name}: created {now}"
        if self.action == "rename":
            return f"{self.collection}.{self.name}: replaces {self.was['name']} {_describe(self.was)}, now {now}"
        return f"{self.collection}.{self.name}: recreated, was {_describe(self.was)}, now {now}"


class IndexesOutOfDate(RuntimeError):
    """Indexes whose definition changed in the code; the migration step applies them."""

    def __init__(self, changes: list[IndexChange]):
        self.changes = changes
        names = ", ".join(f"{c.collection}.{c.name}" for c in changes)
        super().__init__(f"{len(changes)} index(es) differ from their definition in the code ({names}): "
                         f"run `{MIGRATE_COMMAND}`")


class IndexMigrationFailed(RuntimeError):
    """An index could not be created (e.g. a new unique index over duplicate documents)."""


def declared_indexes() -> Iterator[tuple[str, list[IndexModel]]]:
    """Each collection the stores own, with the indexes they declare for it."""
    for module_name in INDEX_MODULES:
        module = importlib.import_module(module_name)
        yield from getattr(module, "INDEXES", {}).items()


def _key(doc: dict) -> list[tuple[str, object]]:
    return [(field, int(d) if isinstance(d, int | float) else d) for field, d in doc["key"].items()]


def index_form(doc: dict) -> tuple:
    """What an index is, from its description (a listed index's or a declaration's ``document``): its keys and
    options. Two descriptions with the same form are the same index, whatever their names."""
    return (_key(doc), tuple((opt, doc.get(opt)) for opt in INDEX_OPTIONS if doc.get(opt) not in (None, False)))


def _describe(doc: dict) -> str:
    keys = ", ".join(f"{field} {direction}" for field, direction in _key(doc))
    options = "".join(f" {opt}" if doc.get(opt) is True else f" {opt}={doc.get(opt)}"
                      for opt in INDEX_OPTIONS if doc.get(opt) not in (None, False))
    return f"({keys}){options}"


def plan_indexes(db: Database) -> list[IndexChange]:
    """What the database needs so that every declared index exists as declared (nothing when it does).
    Indexes the code does not declare are left alone, unless one holds a declared index's keys under
    another name (the index was renamed)."""
    changes = []
    # Not list_indexes on a collection that does not exist yet: FerretDB answers it with an error (which
    # pymongo hides) and logs the whole exchange as a warning.
    present = set(db.list_collection_names())
    for collection, models in declared_indexes():
        existing = {doc["name"]: doc for doc in db[collection].list_indexes()} if collection in present else {}
        declared = {model.document["name"] for model in models}
        for model in models:
            wanted = model.document
            current = existing.get(wanted["name"])
            if current is not None:
                if index_form(current) != index_form(wanted):
                    changes.append(IndexChange(collection, wanted["name"], "recreate", wanted, current))
                continue
            renamed = next((doc for name, doc in existing.items()
                            if name not in declared and name != "_id_" and _key(doc) == _key(wanted)), None)
            changes.append(IndexChange(collection, wanted["name"], "rename" if renamed else "create", wanted,
                                       renamed))
    return changes


def _create(db: Database, change: IndexChange) -> None:
    options = {k: v for k, v in change.definition.items() if k != "key"}
    # One index per command: FerretDB v1.24 drops the connection (a server-side panic) when
    # one createIndexes command names several indexes that all exist already.
    db[change.collection].create_indexes([IndexModel(list(change.definition["key"].items()), **options)])


def ensure_indexes(db: Database) -> None:
    """Create every declared index that is missing (idempotent). Raises :class:`IndexesOutOfDate`, after
    creating the missing ones, when an existing index differs from its declaration."""
    plan = plan_indexes(db)
    for change in plan:
        if not change.is_change:
            _create(db, change)
    out_of_date = [change for change in plan if change.is_change]
    if out_of_date:
        raise IndexesOutOfDate(out_of_date)
    log.info("indexes ensured", extra={"modules": len(INDEX_MODULES), "indexes_created": len(plan)})


def migrate_indexes(db: Database, progress: Callable[[IndexChange], None] | None = None) -> list[IndexChange]:
    """Bring every declared index to its declaration: create the missing, drop and create again the
    changed (between the two, queries on that collection go without the index, and a unique one is not
    enforced). Returns what was done; raises :class:`IndexMigrationFailed` naming the index that could
    not be created (the changes before it stay applied; run it again once the cause is fixed)."""
    plan = plan_indexes(db)
    for change in plan:
        try:
            if change.was is not None:
                db[change.collection].drop_index(change.was["name"])
            _create(db, change)
        except PyMongoError as exc:
            reason = (getattr(exc, "details", None) or {}).get("errmsg") or str(exc)
            raise IndexMigrationFailed(f"{change.collection}.{change.name} could not be created "
                                       f"{_describe(change.definition)}: {reason}") from exc
        log.info("index migrated", extra={"collection": change.collection, "index": change.name,
                                          "action": change.action})
        if progress is not None:
            progress(change)
    return plan
