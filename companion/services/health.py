"""Whether this process can serve: the database answers and every index exists."""

from __future__ import annotations

import logging

from companion.domain.errors import ServiceUnavailable
from companion.store.stores import Stores

log = logging.getLogger(__name__)


class Health:
    def __init__(self, stores: Stores):
        self.stores = stores
        self.indexes_pending = False

    def ensure_indexes(self) -> None:
        """Create every collection's indexes (idempotent); raises when the database cannot be reached."""
        self.stores.ensure_indexes()

    def ensure_indexes_at_start(self) -> None:
        """Create the indexes at start-up; if the database is not there yet, leave it to the first readiness
        check (the process starts anyway and answers 503 until then)."""
        try:
            self.stores.ensure_indexes()
        except Exception as exc:  # noqa: BLE001 - the app starts; /readyz reports the database
            log.warning("could not ensure indexes at start-up (%s); /readyz will retry", type(exc).__name__)
            self.indexes_pending = True

    def ready(self) -> None:
        """Raise ServiceUnavailable unless the database answers (and the indexes exist)."""
        try:
            self.stores.ping()
            if self.indexes_pending:
                self.stores.ensure_indexes()
                self.indexes_pending = False
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            raise ServiceUnavailable("the database is not reachable") from exc
