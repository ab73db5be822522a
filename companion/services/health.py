"""Whether this process can serve: the database answers and every index exists as the code declares it;
the migration step that brings the indexes there; and the scheduler worker's heartbeat."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pymongo
from pymongo.errors import PyMongoError

from companion.domain.errors import DomainError, ServiceUnavailable
from companion.store.db import IndexChange, IndexesOutOfDate, IndexMigrationFailed, redacted_uri
from companion.store.stores import Stores

log = logging.getLogger(__name__)

NOT_REACHABLE = "the database is not reachable"


class MigrationFailed(DomainError):
    """An index could not be brought to its definition (the detail names it and why)."""


class Health:
    def __init__(self, stores: Stores, database_uri: str = ""):
        self.stores = stores
        self.database = redacted_uri(database_uri)
        self.indexes_pending = False

    def problem(self) -> str | None:
        """None once the database answers and the missing indexes are created; otherwise what stands in the
        way, in one line (where the database is, without credentials, or the indexes to migrate)."""
        try:
            self.stores.ensure_indexes()
        except IndexesOutOfDate as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the caller waits and tries again
            return f"{NOT_REACHABLE} at {self.database} ({type(exc).__name__})"
        return None

    def unreachable(self) -> str | None:
        """None when the database answers; otherwise where it was looked for, in one line."""
        try:
            self.stores.ping()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the database cannot be used
            return f"{NOT_REACHABLE} at {self.database} ({type(exc).__name__})"
        return None

    def ensure_indexes(self) -> None:
        """Create the missing indexes (idempotent); raises IndexesOutOfDate when one changed in the code,
        and the database's own error when it cannot be reached."""
        self.stores.ensure_indexes()

    def migrate_indexes(self, progress: Callable[[IndexChange], None] | None = None) -> list[IndexChange]:
        """The migration step: create, or drop and create again, every index that is not as declared.
        Raises MigrationFailed naming the index that could not be created."""
        try:
            return self.stores.migrate_indexes(progress)
        except IndexMigrationFailed as exc:
            raise MigrationFailed(str(exc)) from exc

    def ensure_indexes_at_start(self) -> None:
        """Create the indexes at start-up; if the database is not there yet, or an index needs the migration
        step, leave it to the readiness check (the process starts anyway and answers 503 until then)."""
        try:
            self.stores.ensure_indexes()
        except IndexesOutOfDate as exc:
            log.error("not ready: %s", exc)
            self.indexes_pending = True
        except Exception as exc:  # noqa: BLE001 - the app starts; /readyz reports the database
            log.warning("could not ensure indexes at start-up (%s); /readyz will retry", type(exc).__name__)
            self.indexes_pending = True

    def reachable(self, timeout_s: float) -> bool:
        """Whether the database answers a ping within ``timeout_s`` (the web's breaker probes with it)."""
        try:
            with pymongo.timeout(timeout_s):
                self.stores.ping()
        except PyMongoError:
            return False
        return True

    def ready(self) -> None:
        """Raise ServiceUnavailable unless the database answers and the indexes are as declared; the detail
        says which (an index to migrate names the command that does it)."""
        try:
            self.stores.ping()
            if self.indexes_pending:
                self.stores.ensure_indexes()
                self.indexes_pending = False
        except IndexesOutOfDate as exc:
            raise ServiceUnavailable(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            raise ServiceUnavailable(NOT_REACHABLE) from exc
