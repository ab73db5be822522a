"""A sync whose highest sequence number is far beyond every record of its unit (a glitched transfer summary) is
stored, and placement does not go by it until records reach it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"


def _sync(serial: str, sync_id: str, highest_seq: int, at: datetime) -> dict:
    return {"sync_id": sync_id, "serial": serial, "highest_seq": highest_seq, "unit_clock": at.isoformat(),
            "gateway_clock": at.isoformat(), "boot_id": "b1", "monotonic_s": 10.0}


def test_one_sync_with_a_wild_highest_seq_makes_every_later_overlap_count_twice(client, world, db):
    now, gateway = datetime.now(UTC), world["gateway_a"].headers
    wild = {"sync_id": "sync-wild-0001", "serial": world.a_device, "highest_seq": 2**32 - 1,
            "unit_clock": now.isoformat(), "gateway_clock": now.isoformat(), "boot_id": "b1", "monotonic_s": 10.0}
    assert client.post(URL, json={"syncs": [wild]}, headers=gateway).status_code == 200
    start = now.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    client.post(URL, json={"records": [session_record(world.a_device, 1, started_at=start)]}, headers=gateway)
    client.post(URL, json={"records": [session_record(world.a_device, 2, started_at=start + timedelta(minutes=20))]}, headers=gateway)
    assert sum(d["counted_minutes"] for d in db.session_records.find({})) == 50.0


def test_a_sync_far_beyond_the_stored_records_is_kept_but_not_gone_by(client, world, db):
    """Gone by, a glitched sync two hours ago would say every record numbered below it had ended by then: a
    session of an hour ago would fit no offset and be placed by sequence alone (estimated)."""
    now, gateway = datetime.now(UTC).replace(microsecond=0), world["gateway_a"].headers
    wild = {**_sync(world.a_device, "sync-wild-0002", 2**32 - 1, now - timedelta(hours=2)),
            "vouched_time": (now - timedelta(hours=2)).isoformat()}
    answer = client.post(URL, json={"syncs": [wild]}, headers=gateway)
    assert answer.json["syncs"] == [{"sync_id": "sync-wild-0002", "status": "created"}]
    assert db.unit_syncs.count_documents({"serial": world.a_device}) == 1
    first = {**_sync(world.a_device, "sync-first-0001", 0, now - timedelta(hours=3)),
             "vouched_time": (now - timedelta(hours=3)).isoformat()}
    record = session_record(world.a_device, 1, started_at=now - timedelta(hours=1), duration_s=1200, offset_s=0.0,
                            sync_id="sync-next-0001")
    assert client.post(URL, json={"records": [record], "syncs": [first]}, headers=gateway).status_code == 200
    placed = db.session_records.find_one({"_id": record["record_id"]})
    assert (placed["held"], placed["time_quality"]) == (False, "exact")


def test_a_sync_at_the_units_highest_stored_record_is_gone_by_whatever_the_batch_holds(client, world, db):
    """A unit well past the window (its counter, here, starts high): a sync sent alone, at a record stored before
    it, closes that record's interval as any sync does."""
    now, gateway = datetime.now(UTC).replace(microsecond=0), world["gateway_a"].headers
    seq = 9_000
    before = {**_sync(world.a_device, "sync-early-0001", seq - 1, now - timedelta(hours=4)),
              "vouched_time": (now - timedelta(hours=4)).isoformat()}
    record = session_record(world.a_device, seq, started_at=now - timedelta(hours=3), offset_s=0.0,
                            sync_id="sync-late-0001")
    assert client.post(URL, json={"records": [record], "syncs": [before]}, headers=gateway).status_code == 200
    assert db.session_records.find_one({"_id": record["record_id"]})["time_basis"] != "offset_known"
    after = {**_sync(world.a_device, "sync-late-0001", seq, now), "vouched_time": now.isoformat()}
    assert client.post(URL, json={"syncs": [after]}, headers=gateway).status_code == 200
    placed = db.session_records.find_one({"_id": record["record_id"]})
    assert (placed["time_basis"], placed["time_quality"]) == ("offset_known", "exact")


def test_on_a_units_first_sync_the_sessions_before_a_clock_jump_the_batch_shows_are_held_not_counted_a_day_off(
        client, world, db):
    """A reset left the unit's clock a day behind six hours before its first sync. The session of 12 hours before,
    read by the clock as it was, would start after the sync by the offset read then: the clock jumped after it, so
    the session of three days before, whose reading that offset puts a day late but before the sync, is not counted
    there: its time is not known (held for the care team). The session after the jump counts at its time."""
    now = datetime.now(UTC).replace(microsecond=0)
    serial, behind = world.a_device, timedelta(days=-1)
    real = [now - timedelta(hours=h) for h in (70, 12, 3)]
    readings = [real[0], real[1], real[2] + behind]
    records = [session_record(serial, n + 1, started_at=reading, offset_s=0.0, sync_id="sync-first-0001")
               for n, reading in enumerate(readings)]
    first = {**_sync(serial, "sync-first-0001", 3, now + behind), "gateway_clock": now.isoformat(),
             "monotonic_s": 1000.0}
    answer = client.post(URL, json={"records": records, "syncs": [first], "gateway_clock": {
        "wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 1000.0}}, headers=world["gateway_a"].headers)
    results = {r["record_id"]: r for r in answer.json["results"]}
    assert [(results[r["record_id"]]["held"], results[r["record_id"]]["time_quality"]) for r in records] == [
        (True, "estimated"), (True, "estimated"), (False, "corrected")]
    assert "time_uncertain" in results[records[0]["record_id"]]["flags"]
    stored = db.session_records.find_one({"_id": records[2]["record_id"]})
    assert abs(stored["started_at"] - real[2]) < timedelta(seconds=15)
