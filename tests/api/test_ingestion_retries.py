"""An upload that fails half-way, races another, or carries odd values: every record the gateway handed over is
stored once, placed, counted and followed by its day marks and device events, whatever the interleaving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import ConnectionFailure

from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"


def _yesterday() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def _once(target, name, behaviour):
    """``target.name`` behaving as ``behaviour(real, ...)`` on its first call only."""
    real = getattr(target, name)
    state = {"done": False}

    def wrapper(*args, **kwargs):
        if not state["done"]:
            state["done"] = True
            return behaviour(real, *args, **kwargs)
        return real(*args, **kwargs)
    return wrapper


def _fail(real, *args, **kwargs):
    raise ConnectionFailure("the database went away")


def _not_yet_stored(real, *args, **kwargs):
    return {}  # a read that ran before a concurrent upload's insert landed


def test_a_retry_after_a_failure_past_the_insert_places_the_neighbours_the_first_attempt_did_not(
        client, world, db, services, monkeypatch):
    day, gateway = _yesterday(), world["gateway_a"].headers
    later = session_record(world.a_device, 5, started_at=day + timedelta(hours=10, minutes=10))
    assert client.post(URL, json={"records": [later]}, headers=gateway).status_code == 200
    records = services.stores.session_records
    monkeypatch.setattr(records, "set_fields", _once(records, "set_fields", _fail))
    earlier = session_record(world.a_device, 4, started_at=day + timedelta(hours=10))  # overlaps it by 20 min
    assert client.post(URL, json={"records": [earlier]}, headers=gateway).status_code == 503
    assert client.post(URL, json={"records": [earlier]}, headers=gateway).status_code == 200
    stored = {d["device_seq"]: d for d in db.session_records.find({})}
    assert (stored[5]["counts"], stored[5]["counted_minutes"]) == (False, 10.0)


def test_a_retry_racing_its_failed_original_still_marks_the_day_and_records_the_events(
        client, world, db, services, monkeypatch):
    gateway = world["gateway_a"].headers
    batch = [session_record(world.a_device, 1, started_at=_yesterday() + timedelta(hours=10),
                            end_reason="electrode_off")]
    marks = services.stores.days_to_recompute
    monkeypatch.setattr(marks, "mark", _once(marks, "mark", _fail))
    assert client.post(URL, json={"records": batch}, headers=gateway).status_code == 503
    monkeypatch.undo()
    records = services.stores.session_records
    monkeypatch.setattr(records, "by_ids", _once(records, "by_ids", _not_yet_stored))
    retry = client.post(URL, json={"records": batch}, headers=gateway)
    assert retry.json["results"][0]["status"] == "duplicate"
    assert db.days_to_recompute.count_documents({"patient_id": world["patient_a"].id}) >= 1
    assert [e["kind"] for e in db.device_events.find({})] == ["electrode_off"]


def test_a_retry_after_a_failure_in_writing_the_changes_still_records_the_device_events(client, world, db,
                                                                                       services, monkeypatch):
    """A session stored held (its sync had not arrived) is placed by the sync that comes later and counted; the
    first attempt fails after the placement is written, the gateway retries: the electrode-off event of the
    now counted session must exist (a counted session has its device events from the start)."""
    now, gateway = datetime.now(UTC), world["gateway_a"].headers
    record = session_record(world.a_device, 1, started_at=now - timedelta(hours=2), offset_s=0.0,
                            end_reason="electrode_off", sync_id="sync-0000001")
    first = client.post(URL, json={"records": [record]}, headers=gateway).json["results"][0]
    assert first["held"] is True
    sync = {"sync_id": "sync-0000001", "serial": world.a_device, "highest_seq": 1,
            "unit_clock": (now - timedelta(minutes=10)).isoformat(),
            "gateway_clock": (now - timedelta(minutes=10)).isoformat(), "boot_id": "b1", "monotonic_s": 400.0}
    body = {"syncs": [sync], "gateway_clock": {"wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 1000.0}}
    events = services.stores.device_events
    monkeypatch.setattr(events, "record", _once(events, "record", _fail))
    assert client.post(URL, json=body, headers=gateway).status_code == 503
    assert client.post(URL, json=body, headers=gateway).status_code == 200
    stored = db.session_records.find_one({"_id": record["record_id"]})
    assert stored["held"] is False and stored["counts"] is True, stored["flags"]
    assert [e["kind"] for e in db.device_events.find({})] == ["electrode_off"]


def test_a_retry_after_a_failure_in_moving_the_device_events_of_a_session_placed_again_still_moves_them(
        client, world, db, services, monkeypatch):
    """An old hub's sync arriving after the unit's first contact places a counted session again (its unit's
    clock jumped an hour between the two syncs, on either side of it); the first attempt fails on moving its
    electrode-off event, the gateway retries: the event is where the session now is."""
    now, gateway, serial = datetime.now(UTC), world["gateway_a"].headers, world.a_device

    def sync(sync_id: str, highest: int, at: datetime, unit_ahead: timedelta) -> dict:
        return {"sync_id": sync_id, "serial": serial, "highest_seq": highest, "unit_clock": (at + unit_ahead).isoformat(),
                "gateway_clock": at.isoformat(), "boot_id": "b1", "monotonic_s": 100_000 + (at - now).total_seconds()}

    record = session_record(serial, 1, started_at=now - timedelta(hours=3), offset_s=3600.0, end_reason="electrode_off",
                            sync_id="sync-0000002")
    first_contact = {"records": [record], "syncs": [sync("sync-0000002", 1, now - timedelta(minutes=10),
                                                         timedelta(hours=1))],
                     "gateway_clock": {"wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 100_000.0}}
    assert client.post(URL, json=first_contact, headers=gateway).status_code == 200
    old_sync = {"syncs": [sync("sync-0000001", 0, now - timedelta(hours=5), timedelta(0))],
                "gateway_clock": {"wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 100_001.0}}
    events = services.stores.device_events
    monkeypatch.setattr(events, "move", _once(events, "move", _fail))
    assert client.post(URL, json=old_sync, headers=gateway).status_code == 503
    assert client.post(URL, json=old_sync, headers=gateway).status_code == 200
    stored = db.session_records.find_one({"_id": record["record_id"]})
    assert stored["time_basis"] == "clock_jumped_ambiguous" and stored["counts"] is True, stored["time_basis"]
    assert [(e["kind"], e["at"]) for e in db.device_events.find({})] == [("electrode_off", stored["started_at"])]


def test_another_content_racing_the_first_copy_is_kept_apart(client, world, db, services, monkeypatch):
    gateway = world["gateway_a"].headers
    first, other = session_record(world.a_device, 1), session_record(world.a_device, 1, duration_s=900)
    assert client.post(URL, json={"records": [first]}, headers=gateway).status_code == 200
    records = services.stores.session_records
    monkeypatch.setattr(records, "by_ids", _once(records, "by_ids", _not_yet_stored))
    answer = client.post(URL, json={"records": [other]}, headers=gateway).json["results"][0]
    assert (answer["status"], answer["flags"]) == ("duplicate", ["conflicting_copy"])
    assert db.session_conflicts.count_documents({"record_id": first["record_id"]}) == 1


def test_a_record_twice_in_one_batch_is_stored_counted_and_derived_once(client, world, db):
    record = session_record(world.a_device, 1, started_at=_yesterday() + timedelta(hours=10),
                            end_reason="electrode_off")
    answer = client.post(URL, json={"records": [record, record]}, headers=world["gateway_a"].headers).json
    assert [r["status"] for r in answer["results"]] == ["created"]
    assert db.session_records.count_documents({}) == 1
    assert db.days_to_recompute.count_documents({"patient_id": world["patient_a"].id}) >= 1
    assert [e["kind"] for e in db.device_events.find({})] == ["electrode_off"]


def test_two_contents_under_one_id_in_one_batch_keep_the_first_and_set_the_other_apart(client, world, db):
    first, other = session_record(world.a_device, 1), session_record(world.a_device, 1, duration_s=900)
    answer = client.post(URL, json={"records": [first, other]}, headers=world["gateway_a"].headers).json
    assert [r["status"] for r in answer["results"]] == ["created"]
    assert db.session_records.find_one({})["duration_s"] == first["duration_s"]
    assert db.session_conflicts.count_documents({"record_id": first["record_id"]}) == 1


def test_a_held_session_a_clinician_counts_gets_its_device_events(client, world, db):
    record = session_record(world.a_device, 1, frequency_hz=5000, end_reason="electrode_off", battery_pct=9,
                            started_at=datetime.now(UTC) - timedelta(days=1))
    stored = client.post(URL, json={"records": [record]}, headers=world["gateway_a"].headers).json["results"][0]
    assert stored["held"] is True and db.device_events.count_documents({}) == 0
    url = f"/api/v1/patients/{world['patient_a'].id}/sessions/{record['record_id']}/resolution"
    assert client.put(url, json={"action": "count"}, headers=world["clinician_team"].headers).json["held"] is False
    assert sorted(e["kind"] for e in db.device_events.find({})) == ["battery_low", "electrode_off"]


def test_a_clinicians_decision_waits_for_an_upload_of_the_same_unit_being_placed(client, world, db):
    """The decision places the unit's records again, as an upload does: while an upload of the unit holds its
    placement, the decision is answered 503 with a short Retry-After and nothing of it is written (else the
    upload would write its placement over the decision's, or each would miss the other's records)."""
    record = session_record(world.a_device, 1, frequency_hz=5000, started_at=datetime.now(UTC) - timedelta(days=1))
    assert client.post(URL, json={"records": [record]}, headers=world["gateway_a"].headers).json[
        "results"][0]["held"] is True
    db.unit_claims.insert_one({"_id": world.a_device, "holder": "an upload being placed",
                               "until": datetime.now(UTC) + timedelta(minutes=5)})
    url = f"/api/v1/patients/{world['patient_a'].id}/sessions/{record['record_id']}/resolution"
    busy = client.put(url, json={"action": "count"}, headers=world["clinician_team"].headers)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) >= 1
    assert db.session_records.find_one({"_id": record["record_id"]}).get("resolution") is None
    db.unit_claims.delete_one({"_id": world.a_device})
    assert client.put(url, json={"action": "count"}, headers=world["clinician_team"].headers).json["held"] is False
    assert db.unit_claims.count_documents({}) == 0  # the decision let go of its claim


@pytest.mark.parametrize("reading", ["9999-12-31T23:59:30+00:00", "0001-01-01T00:00:10+00:00"])
def test_a_record_read_at_the_ends_of_time_is_refused_alone(client, world, db, reading):
    good, odd = session_record(world.a_device, 1), session_record(world.a_device, 2)
    odd["started_at"] = odd["device_started_at"] = reading
    answer = client.post(URL, json={"records": [good, odd]}, headers=world["gateway_a"].headers)
    assert answer.status_code == 200
    assert {r["record_id"]: r["status"] for r in answer.json["results"]} == {
        good["record_id"]: "created", odd["record_id"]: "rejected"}


def test_a_gateway_clock_at_the_end_of_time_is_answered_422_and_such_a_sync_is_refused_alone(client, world, db):
    gateway, now = world["gateway_a"].headers, datetime.now(UTC)
    far = {"wall": "9999-01-01T00:00:00+00:00", "boot_id": "b1", "monotonic_s": 5.0}
    answer = client.post(URL, json={"records": [session_record(world.a_device, 1)], "gateway_clock": far},
                         headers=gateway)
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    clock = {"wall": now.isoformat(), "boot_id": "b1", "monotonic_s": 200.0}
    bad = {"sync_id": "sync-0000001", "serial": world.a_device, "highest_seq": 0,
           "unit_clock": "9999-12-31T00:00:00+00:00", "gateway_clock": now.isoformat(), "boot_id": "b1",
           "monotonic_s": 100.0}
    refused = client.post(URL, json={"syncs": [bad], "gateway_clock": clock}, headers=gateway)
    assert [s["status"] for s in refused.json["syncs"]] == ["rejected"]
    assert db.unit_syncs.count_documents({}) == 0
    good = {**bad, "sync_id": "sync-0000002", "highest_seq": 1, "unit_clock": now.isoformat(), "monotonic_s": 150.0}
    record = session_record(world.a_device, 1, sync_id="sync-0000002", offset_s=0.0)
    assert client.post(URL, json={"records": [record], "syncs": [good], "gateway_clock": clock},
                       headers=gateway).status_code == 200


def test_a_retry_from_a_rebooted_gateway_leaves_what_the_first_attempt_placed(client, world, db):
    """A hub booted offline syncs a unit, comes online and uploads: the server ties the sync to its own clock
    through the boot's monotonic clock and counts the session. The answer is lost and the hub reboots; its retry
    carries the same sync from a boot that no longer ties it to anything. The stored sync stands: the session
    stays counted, then and after the next sync of the new boot."""
    now = datetime.now(UTC)
    serial, gateway = world.a_device, world["gateway_a"].headers
    sync = {"sync_id": "sync-boot1-0001", "serial": serial, "highest_seq": 1,
            "unit_clock": (now - timedelta(minutes=10)).isoformat(),
            "gateway_clock": (now - timedelta(minutes=10)).isoformat(), "boot_id": "b1", "monotonic_s": 1000.0}
    record = session_record(serial, 1, started_at=now - timedelta(hours=2), offset_s=0.0, sync_id=sync["sync_id"])
    body = {"records": [record], "syncs": [sync]}
    for boot, monotonic in (("b1", 1600.0), ("b2", 40.0)):
        assert client.post(URL, json={**body, "gateway_clock": {"wall": now.isoformat(), "boot_id": boot,
                                                                "monotonic_s": monotonic}},
                           headers=gateway).status_code == 200
        stored = db.session_records.find_one({"_id": record["record_id"]})
        assert (stored["held"], stored["counts"], stored["time_quality"]) == (False, True, "exact"), stored["flags"]
    later = {"sync_id": "sync-boot2-0001", "serial": serial, "highest_seq": 2, "unit_clock": now.isoformat(),
             "gateway_clock": now.isoformat(), "boot_id": "b2", "monotonic_s": 100.0,
             "vouched_time": now.isoformat(), "vouched_error_s": 0.5}
    second = session_record(serial, 2, started_at=now - timedelta(minutes=50), offset_s=0.0,
                            sync_id=later["sync_id"])
    assert client.post(URL, json={"records": [second], "syncs": [later], "gateway_clock": {
        "wall": now.isoformat(), "boot_id": "b2", "monotonic_s": 110.0}}, headers=gateway).status_code == 200
    assert db.session_records.count_documents({"held": False, "counts": True}) == 2


def test_a_record_whose_serial_is_not_one_is_rejected_alone_with_its_reason(client, world):
    good, bad = session_record(world.a_device, 1), session_record(world.a_device, 2)
    bad["device_serial"] = "CTU A0001"  # a space: a bit flipped in the hub's buffer
    answer = client.post(URL, json={"records": [good, bad]}, headers=world["gateway_a"].headers)
    assert answer.status_code == 200, answer.json
    results = {r["record_id"]: r for r in answer.json["results"]}
    assert results[good["record_id"]]["status"] == "created"
    assert results[bad["record_id"]]["status"] == "rejected" and "device_serial" in results[bad["record_id"]]["reason"]
    other = session_record(world.b_device, 3)  # a unit that is not this gateway's: the batch is refused whole
    assert client.post(URL, json={"records": [good, other]}, headers=world["gateway_a"].headers).status_code == 403
