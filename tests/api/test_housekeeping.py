"""The cleanup job removes only what has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from companion.store.throttle import Counters


def test_purge_removes_expired_counters_and_keeps_current_ones(db, services):
    counters = Counters(db)
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=2)):
        counters.hit("old", 60)
    counters.hit("new", 60)
    removed = services.housekeeping.purge_expired()
    assert removed["rate_events"] == 1
    assert [e["key"] for e in db.rate_events.find()] == ["new"]
    assert services.housekeeping.purge_expired()["rate_events"] == 0
