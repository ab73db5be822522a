"""The cleanup job removes only what has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from companion.services.housekeeping import purge_expired
from companion.store.throttle import Counters


def test_purge_removes_expired_counters_and_keeps_current_ones(db):
    counters = Counters(db)
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=2)):
        counters.hit("old", 60)
    counters.hit("new", 60)
    removed = purge_expired(db)
    assert removed["rate_events"] == 1
    assert [e["key"] for e in db.rate_events.find()] == ["new"]
    assert purge_expired(db)["rate_events"] == 0
