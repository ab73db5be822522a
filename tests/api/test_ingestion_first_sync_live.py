"""A sync whose transfer also brings a session recorded while the gateway was connected (it started
after the gateway read the unit's clock, so the record is numbered above the sync's highest): that session says
nothing about the clock before the sync. It is placed by the offset after the sync, and on a unit's first sync the backlog is placed by the offset read then (counted), not held
as a clock jump (companion.domain.device_time, companion.services.session_times.derive)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"
SYNC = "sync-live-00001"
BEFORE = (70, 40, 12)  # hours before the sync: the backlog the unit held when the gateway connected


def _upload(client, world, now: datetime, unit_clock: datetime, clock_set_to: datetime | None, behind: timedelta,
            earlier: tuple[dict, ...] = ()):
    """The first sync, ten minutes before the upload (tied by the gateway's monotonic clock), its three held
    sessions read by a clock ``behind``, and one of two minutes that began a minute after the reading, read by
    the clock as it was after the sync (set right, or as it was)."""
    synced = now - timedelta(minutes=10)
    after_sync = timedelta(0) if clock_set_to is not None else behind
    records = [session_record(world.a_device, n + 1, started_at=synced - timedelta(hours=h) + behind, offset_s=0.0,
                              sync_id=SYNC) for n, h in enumerate(BEFORE)]
    records.append(session_record(world.a_device, 4, started_at=synced + timedelta(minutes=1) + after_sync,
                                  duration_s=120, offset_s=0.0, sync_id=SYNC))
    sync = {"sync_id": SYNC, "serial": world.a_device, "highest_seq": 3, "unit_clock": unit_clock.isoformat(),
            "gateway_clock": synced.isoformat(), "boot_id": "b1", "monotonic_s": 400.0,
            "clock_set_to": clock_set_to.isoformat() if clock_set_to is not None else None,
            "vouched_time": synced.isoformat()}
    answer = client.post(URL, json={"records": records, "syncs": [*earlier, sync], "gateway_clock": {
        "wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 1000.0}}, headers=world["gateway_a"].headers)
    assert answer.status_code == 200, answer.json
    return [answer.json["results"][n] for n in range(len(records))], synced


def test_a_session_recorded_during_the_first_transfer_leaves_a_right_clocks_backlog_counted_exact(client, world, db):
    now = datetime.now(UTC).replace(microsecond=0)
    results, synced = _upload(client, world, now, now - timedelta(minutes=10), None, timedelta(0))
    assert [(r["held"], r["time_quality"]) for r in results] == [(False, "exact")] * 4, results
    live = db.session_records.find_one({"_id": results[3]["record_id"]})
    assert live["started_earliest"] <= synced + timedelta(minutes=1) <= live["started_latest"]


def test_a_clock_set_at_the_first_sync_leaves_the_backlog_corrected_and_the_session_after_the_set_exact(
        client, world, db):
    """The unit's clock was a day behind all along; the gateway set it right at the first sync."""
    now = datetime.now(UTC).replace(microsecond=0)
    behind = timedelta(days=-1)
    synced = now - timedelta(minutes=10)
    results, _ = _upload(client, world, now, synced + behind, synced, behind)
    assert [(r["held"], r["time_quality"]) for r in results] == [(False, "corrected")] * 3 + [(False, "exact")]
    for result, hours in zip(results, BEFORE, strict=False):
        stored = db.session_records.find_one({"_id": result["record_id"]})
        assert abs(stored["started_at"] - (synced - timedelta(hours=hours))) < timedelta(seconds=15)


def test_a_session_recorded_during_a_later_transfer_is_placed_after_the_sync_and_counted(client, world, db):
    """Taken as ended by the sync that captured it, it fitted no offset and was placed by sequence, its bounds
    ending before it began (estimated, held)."""
    now = datetime.now(UTC).replace(microsecond=0)
    week_ago = now - timedelta(days=7)
    earlier = {"sync_id": "sync-week-00001", "serial": world.a_device, "highest_seq": 0,
               "unit_clock": week_ago.isoformat(), "gateway_clock": week_ago.isoformat(), "boot_id": "b0",
               "monotonic_s": 50.0, "vouched_time": week_ago.isoformat()}
    results, synced = _upload(client, world, now, now - timedelta(minutes=10), None, timedelta(0), (earlier,))
    assert [(r["held"], r["time_quality"]) for r in results] == [(False, "exact")] * 4, results
    live = db.session_records.find_one({"_id": results[3]["record_id"]})
    assert live["started_earliest"] <= synced + timedelta(minutes=1) <= live["started_latest"]


def test_a_sync_reporting_too_low_a_highest_sequence_keeps_its_backlog_on_its_days(client, world, db):
    """A gateway not our own reports highest_seq 0 and sends, under that sync, three sessions that ended 70, 40 and
    12 hours before the clock was read: they are the sync's (ended before its reading), placed by its offset on their
    own days, not squashed onto the upload's time and counted today."""
    now = datetime.now(UTC).replace(microsecond=0)
    synced = now - timedelta(minutes=10)
    records = [session_record(world.a_device, n + 1, started_at=synced - timedelta(hours=h), offset_s=0.0,
                              sync_id="sync-stale-0001") for n, h in enumerate(BEFORE)]
    sync = {"sync_id": "sync-stale-0001", "serial": world.a_device, "highest_seq": 0,
            "unit_clock": synced.isoformat(), "gateway_clock": synced.isoformat(), "boot_id": "b1",
            "monotonic_s": 400.0, "clock_set_to": None, "vouched_time": synced.isoformat()}
    answer = client.post(URL, json={"records": records, "syncs": [sync], "gateway_clock": {
        "wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 1000.0}}, headers=world["gateway_a"].headers)
    assert answer.status_code == 200, answer.json
    for n, hours in enumerate(BEFORE):
        stored = db.session_records.find_one({"_id": f"{world.a_device}:{n + 1}"})
        assert abs(stored["started_at"].replace(tzinfo=UTC) - (synced - timedelta(hours=hours))) < timedelta(
            minutes=1), (hours, stored["started_at"], stored["time_quality"])
        assert not stored["held"]
