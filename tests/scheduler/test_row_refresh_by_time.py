"""A panel row that only time has changed since it was computed (its local midnight passed, nothing marked it)
is computed again from the days it keeps plus the snapshots of the days completed since: the same row and the
same kept days as a computation from every snapshot, reading only the new days. A row marked since (a changed
snapshot) is computed from every snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
import pymongo.monitoring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.services.container import Services
from tests.scheduler.helpers import STORED_DAY, make_person, services_on, stored_day


class _SnapshotIds(pymongo.monitoring.CommandListener):
    """How many snapshot ids each find of adherence_days asked for."""

    def __init__(self):
        self.asked: list[int] = []

    def started(self, event):
        if event.command_name == "find" and event.command.get("find") == "adherence_days":
            self.asked.append(len(event.command["filter"]["_id"]["$in"]))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ZONES = ["Pacific/Auckland", "Europe/London", "America/Los_Angeles"]


def _row_and_days(db, services, pid: str) -> tuple[dict, dict]:
    """The row and its kept days, without the versions they were stored under (the mark's seq, which the
    rebuild below moves on, and the instant they were computed as of)."""
    row = db.panel_rows.find_one({"_id": pid}, {"seq": 0, "computed_at": 0})
    kept = {k: v for k, v in services.stores.panel_row_days.by_ids([pid])[pid].items()
            if k not in ("seq", "computed_at")}
    return row, kept


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(zone=st.sampled_from(ZONES), history=st.lists(STORED_DAY, min_size=34, max_size=34),
       later=st.lists(STORED_DAY, min_size=3, max_size=3), days_on=st.integers(min_value=1, max_value=3),
       changed=st.one_of(st.none(), st.integers(min_value=2, max_value=25)))
def test_a_row_computed_again_by_time_alone_is_the_row_computed_from_every_snapshot(
        jobs_db, settings, mongo_uri, zone, history, later, days_on, changed):
    for name in jobs_db.list_collection_names():
        jobs_db[name].delete_many({})
    clock = {"at": START}
    services = services_on(jobs_db, settings, lambda: clock["at"])
    patient = make_person(jobs_db, "patient", zone)
    today = START.astimezone(patient.zone_history().zone_at(START)).date()
    docs = [stored_day(patient.id, today - timedelta(days=n), v) for n, v in enumerate(history) if v is not None]
    if docs:
        jobs_db.adherence_days.insert_many(docs)
    services.panel_rows.refresh([patient.id])
    # Then, as the hourly job does: today's snapshot (not complete yet: the row is not marked), and the days
    # after it as they begin; optionally a late change to an older day, which marks the row.
    for n in range(days_on):
        value = later[n]
        if value is not None:
            doc = stored_day(patient.id, today + timedelta(days=n), value)
            jobs_db.adherence_days.replace_one({"_id": doc["_id"]}, doc, upsert=True)
    clock["at"] = START + timedelta(days=days_on)
    if changed is not None:
        doc = stored_day(patient.id, today - timedelta(days=changed), 0.25)
        jobs_db.adherence_days.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        services.panel_rows.mark([patient.id], "adherence")
    listener = _SnapshotIds()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        refresher = Services(settings.with_changes(mongodb_db=jobs_db.name), client=watched,
                             clock=lambda: clock["at"]).panel_rows
        assert refresher.refresh_due() == 1
    finally:
        watched.close()
    by_time = _row_and_days(jobs_db, services, patient.id)
    # Only the days completed since (all 30 when a change marked the row).
    assert listener.asked == [30 if changed is not None else days_on], (listener.asked, changed, days_on)
    # From every snapshot: no kept days to start from.
    jobs_db.panel_row_days.delete_many({})
    services.panel_rows.rebuild()
    full = _row_and_days(jobs_db, services, patient.id)
    assert by_time == full, (history, later, days_on, changed)
    assert by_time[1]["today"] == (today + timedelta(days=days_on)).isoformat()


def test_a_refresher_that_has_not_run_for_days_finds_every_row_due_however_long_ago(jobs_db, settings,
                                                                                      monkeypatch):
    """Rows scheduled at a midnight older than the refresher's usual look back (a worker stopped for four days)
    are all computed, a limit's worth a pass, until none is left."""
    import companion.services.read_models as read_models

    clock = {"at": START}
    services = services_on(jobs_db, settings, lambda: clock["at"])
    patients = [make_person(jobs_db, "patient", zone) for zone in ZONES]
    services.panel_rows.refresh([p.id for p in patients])
    clock["at"] = START + timedelta(days=4)
    monkeypatch.setattr(read_models, "OVERDUE_LIMIT", 2)
    refresher = services_on(jobs_db, settings, lambda: clock["at"]).panel_rows
    assert refresher.refresh_due() == 2
    clock["at"] += timedelta(minutes=1)
    assert refresher.refresh_due() == 1  # still reading every mark due: the first pass met its limit
    clock["at"] += timedelta(minutes=1)
    assert refresher.refresh_due() == 0
    assert {d["today"] for d in services.stores.panel_row_days.by_ids([p.id for p in patients]).values()} == {
        (clock["at"].astimezone(p.zone_history().zone_at(clock["at"])).date()).isoformat() for p in patients}
