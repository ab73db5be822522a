"""Gateways upload TENS session records: each stored once, each answered, only for bound units."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import time_machine

from companion.http.admission import EXTENSION, GatewayBudget
from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"


def upload(client, gateway, records):
    return client.post(URL, json={"records": records}, headers=gateway.headers)


def statuses(response):
    return {r["record_id"]: r["status"] for r in response.json["results"]}


def test_a_batch_is_stored_once_however_often_it_is_replayed(client, world, db):
    batch = [session_record(world.a_device, seq) for seq in range(1, 21)]
    first = upload(client, world["gateway_a"], batch)
    assert first.status_code == 200
    assert set(statuses(first).values()) == {"created"}
    for _ in range(2):
        again = upload(client, world["gateway_a"], batch)
        assert set(statuses(again).values()) == {"duplicate"}
    assert db.session_records.count_documents({"patient_id": world["patient_a"].id}) == 20


def test_concurrent_replays_store_each_record_exactly_once(app, world, db):
    # The race needs all 8 uploads inside the handler at once: a gateway budget that admits them (the budget
    # itself, which turns the others away, is tested in tests/api/test_admission.py).
    app.extensions[EXTENSION].gateways = GatewayBudget(8, 30)
    batch = [session_record(world.a_device, seq) for seq in range(1, 51)]

    def send(_):
        # As the gateway does: an upload answered 503 (another placement of the unit under way) is sent again.
        for _ in range(200):
            answer = app.test_client().post(URL, json={"records": batch}, headers=world["gateway_a"].headers)
            if answer.status_code != 503:
                return statuses(answer)
            assert answer.headers["Retry-After"] == "2"
            time.sleep(0.05)
        raise AssertionError("never placed")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert db.session_records.count_documents({}) == 50
    for record in batch:
        fates = [a[record["record_id"]] for a in answers]
        assert fates.count("created") == 1 and fates.count("duplicate") == 7
    assert db.unit_claims.count_documents({}) == 0  # each placement let go of its claim


def test_two_batches_of_one_unit_at_once_count_an_overlap_once(app, world, db, services, monkeypatch):
    """Two hubs (or two web servers) send batches of one unit at once; the second starts 20 minutes into the
    first's 30-minute session. The batch arriving while the other is placed waits its turn (503): placed one after
    the other, the 10 minutes they share are counted once (30 + 20 minutes), not twice (60)."""
    app.extensions[EXTENSION].gateways = GatewayBudget(8, 30)
    start = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    one = session_record(world.a_device, 1, started_at=start)
    two = session_record(world.a_device, 2, started_at=start + timedelta(minutes=20))
    records = services.stores.session_records
    real_by_ids, placing, second_answered = records.by_ids, threading.Event(), threading.Event()
    answers: dict[str, list[int]] = {"one": [], "two": []}

    def by_ids(ids, fields=None):
        if threading.current_thread().name == "one" and not placing.is_set():
            placing.set()  # batch one reads the unit's stored records; batch two arrives now
            second_answered.wait(30)
        return real_by_ids(ids, fields)

    def send(name, record):
        for _ in range(200):
            answer = app.test_client().post(URL, json={"records": [record]}, headers=world["gateway_a"].headers)
            answers[name].append(answer.status_code)
            if name == "two":
                second_answered.set()
            if answer.status_code != 503:
                return
            time.sleep(0.05)

    monkeypatch.setattr(records, "by_ids", by_ids)
    first = threading.Thread(target=send, args=("one", one), name="one")
    first.start()
    assert placing.wait(30)
    send("two", two)
    first.join(60)
    assert answers["one"] == [200] and answers["two"][0] == 503 and answers["two"][-1] == 200
    stored = {d["device_seq"]: d for d in db.session_records.find({})}
    assert sum(d["counted_minutes"] for d in stored.values()) == 50.0, {
        seq: (d["counts"], d["counted_minutes"]) for seq, d in stored.items()}


def test_stored_record_keeps_device_gateway_and_server_times(client, world, db):
    record = session_record(world.a_device, 7, offset_s=-95.5)
    upload(client, world["gateway_a"], [record])
    stored = db.session_records.find_one({"_id": record["record_id"]})
    assert stored["patient_id"] == world["patient_a"].id
    assert stored["device_started_at"] - stored["started_at"] == timedelta(seconds=-95.5)
    assert stored["clock_offset_s"] == -95.5
    assert stored["gateway_received_at"] < stored["server_received_at"]


def test_records_breaking_a_rule_are_stored_held_with_their_reasons_and_only_a_broken_identity_is_refused(
        client, world, db):
    # Every start at noon of some day, far from midnight and from the offline window's edge, so that each record
    # breaks only the rule it is written to break (at 01:58, 23:50 and 00:00 UTC this test once failed).
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    serial = world.a_device
    batch = [
        session_record(serial, 1, started_at=noon + timedelta(minutes=1)),
        session_record(serial, 2, started_at=noon + timedelta(minutes=2), duration_s=0),
        session_record(serial, 3, started_at=noon + timedelta(days=2)),  # tomorrow: in the future
        session_record(serial, 4, started_at=noon - timedelta(days=31)),
        session_record(serial, 5, started_at=noon - timedelta(days=6)),
        session_record(serial, 6, started_at=noon + timedelta(minutes=6), patient_id=world["patient_b"].id),
        session_record(serial, 7, started_at=noon + timedelta(minutes=7), frequency_hz=5000),
        session_record(serial, 8, started_at=noon + timedelta(minutes=8), record_id=f"{serial}:999"),
    ]
    results = {r["record_id"]: r for r in upload(client, world["gateway_a"], batch).json["results"]}
    assert {rid for rid, r in results.items() if r["status"] == "created"} == {f"{serial}:{n}" for n in (1, 2, 3, 4, 5, 7)}
    assert {rid for rid, r in results.items() if not r.get("held")} == {f"{serial}:1", f"{serial}:5",
                                                                       f"{serial}:6", f"{serial}:999"}
    assert results[f"{serial}:2"]["flags"] == ["clinical"]
    assert results[f"{serial}:3"]["flags"] == ["future"]
    assert results[f"{serial}:4"]["flags"] == ["outside_window"]
    assert results[f"{serial}:7"]["flags"] == ["clinical"]
    # Refused: not a session record at all (an unknown field), or no identity to store it under.
    assert results[f"{serial}:6"]["status"] == "rejected" and "patient_id" in results[f"{serial}:6"]["reason"]
    assert results[f"{serial}:999"]["status"] == "rejected" and "record_id" in results[f"{serial}:999"]["reason"]
    stored = {d["_id"]: d for d in db.session_records.find({})}
    assert len(stored) == 6
    assert "duration" in stored[f"{serial}:2"]["flags"][0]["reason"]
    assert "future" in stored[f"{serial}:3"]["flags"][0]["flag"]
    assert "frequency" in stored[f"{serial}:7"]["flags"][0]["reason"]
    assert {rid for rid, d in stored.items() if d["held"]} == {f"{serial}:{n}" for n in (2, 3, 4, 7)}


def test_a_record_numbered_0_is_refused_alone_and_the_rest_of_its_batch_stored(client, world, db):
    """A unit numbers its records from 1 (docs/companion-tens-profile.md), and placement reads them from 1: a record
    0 stored would stay where it arrived for good (held, for a record sent before its sync)."""
    batch = [session_record(world.a_device, seq) for seq in (0, 1, 2)]
    answer = upload(client, world["gateway_a"], batch)
    assert answer.status_code == 200
    results = {r["record_id"]: r for r in answer.json["results"]}
    assert [results[f"{world.a_device}:{seq}"]["status"] for seq in (0, 1, 2)] == ["rejected", "created", "created"]
    assert results[f"{world.a_device}:0"]["reason"] == "device_seq: Must be greater than or equal to 1 and less " \
                                                       "than or equal to 4294967295."
    assert sorted(d["device_seq"] for d in db.session_records.find({})) == [1, 2]


def test_a_gateway_cannot_write_for_another_patients_unit(client, world, db):
    response = upload(client, world["gateway_a"], [session_record(world.b_device, 1)])
    assert response.status_code == 403
    assert db.session_records.count_documents({}) == 0
    denied = db.audit_events.find_one({"actor_id": world["gateway_a"].id, "outcome": "denied"})
    assert denied["resource_type"] == "session_record"


def test_a_unit_bound_to_nobody_is_refused(client, world, db):
    assert upload(client, world["gateway_a"], [session_record("CTU-NOBODY1", 1)]).status_code == 403
    assert db.session_records.count_documents({}) == 0


def test_more_than_five_hundred_records_is_refused_whole(client, world, db):
    batch = [session_record(world.a_device, seq) for seq in range(501)]
    assert upload(client, world["gateway_a"], batch).status_code == 422
    assert db.session_records.count_documents({}) == 0


def test_electrode_off_and_low_battery_raise_device_events_once(client, world, db):
    batch = [session_record(world.a_device, 1, end_reason="electrode_off", battery_pct=9)]
    upload(client, world["gateway_a"], batch)
    upload(client, world["gateway_a"], batch)
    kinds = sorted(e["kind"] for e in db.device_events.find({"patient_id": world["patient_a"].id}))
    assert kinds == ["battery_low", "electrode_off"]
    assert db.devices.find_one({"_id": world.a_device})["status"]["battery_pct"] == 9


def test_an_older_record_arriving_late_does_not_set_the_units_battery_back(client, world, db):
    newest = session_record(world.a_device, 5, battery_pct=80)
    assert upload(client, world["gateway_a"], [newest]).status_code == 200
    older = session_record(world.a_device, 2, battery_pct=10)  # a second hub's backlog, uploaded late
    assert upload(client, world["gateway_a"], [older]).status_code == 200
    status = db.devices.find_one({"_id": world.a_device})["status"]
    assert (status["last_record_seq"], status["battery_pct"]) == (5, 80)


def test_an_upload_replaces_a_last_contact_stored_in_the_future(client, world, db):
    """A last contact only moves forward, but one in the future (noted from a gateway clock ahead before readings
    were clamped) would keep the unit from counting as silent until then: the upload's time replaces it."""
    db.devices.update_one({"_id": world.a_device},
                          {"$set": {"status.last_seen_at": datetime.now(UTC) + timedelta(days=2)}})
    assert upload(client, world["gateway_a"], [session_record(world.a_device, 1)]).status_code == 200
    held = db.devices.find_one({"_id": world.a_device})["status"]["last_seen_at"].replace(tzinfo=UTC)
    assert abs(held - datetime.now(UTC)) < timedelta(seconds=30)


def test_patient_reads_their_sessions_and_others_cannot(client, world):
    upload(client, world["gateway_a"], [session_record(world.a_device, s) for s in (1, 2, 3)])
    url = f"/api/v1/patients/{world['patient_a'].id}/sessions"
    mine = client.get(url, headers=world["patient_a"].headers)
    assert [s["device_seq"] for s in mine.json["items"]] == [3, 2, 1]
    assert client.get(url, headers=world["caregiver_linked"].headers).status_code == 200
    assert client.get(url, headers=world["patient_b"].headers).status_code == 404


def test_device_status_reports_update_the_unit(client, world, db):
    report = {"serial": world.a_device, "battery_pct": 55, "firmware": "1.4.2",
              "last_seen_at": datetime.now(UTC).isoformat(), "last_error": None}
    assert client.post("/api/v1/gateway/device-status", json={"devices": [report]},
                       headers=world["gateway_a"].headers).status_code == 204
    assert db.devices.find_one({"_id": world.a_device})["status"]["firmware"] == "1.4.2"
    other = {**report, "serial": world.b_device}
    assert client.post("/api/v1/gateway/device-status", json={"devices": [other]},
                       headers=world["gateway_a"].headers).status_code == 403


def _report_last_seen(client, world, db, seen: datetime, **extra) -> datetime:
    """Report unit A seen at ``seen`` (``extra``: the report's clock, the batch's gateway clock); the last contact
    the server then holds."""
    device = {"serial": world.a_device, "battery_pct": 55, "firmware": "1.4.2", "last_seen_at": seen.isoformat()}
    body = {"devices": [{**device, **{k: v for k, v in extra.items() if k != "gateway_clock"}}]}
    if "gateway_clock" in extra:
        body["gateway_clock"] = extra["gateway_clock"]
    assert client.post("/api/v1/gateway/device-status", json=body, headers=world["gateway_a"].headers).status_code == 204
    held = db.devices.find_one({"_id": world.a_device})["status"]["last_seen_at"]
    return held if held.tzinfo else held.replace(tzinfo=UTC)


def test_a_units_last_contact_is_never_later_than_the_report_and_never_moves_back(client, world, db):
    # A gateway clock two days ahead would keep the unit from ever counting as silent.
    held = _report_last_seen(client, world, db, datetime.now(UTC) + timedelta(days=2))
    assert held <= datetime.now(UTC)
    # A report of an earlier contact (a slow retry, a clock behind) leaves the later one standing.
    assert _report_last_seen(client, world, db, datetime.now(UTC) - timedelta(hours=5)) == held
    assert _report_last_seen(client, world, db, held - timedelta(hours=1), last_seen_clock="server") == held


def test_a_last_contact_stored_in_the_future_before_readings_were_clamped_is_replaced_by_the_next_report(
        client, world, db):
    """Kept with $max, a contact stored from a gateway clock ahead (before the server clamped readings) stood, and
    the unit raised no silent-unit alert until that time came."""
    db.devices.update_one({"_id": world.a_device},
                          {"$set": {"status.last_seen_at": datetime.now(UTC) + timedelta(days=2)}})
    seen = datetime.now(UTC) - timedelta(minutes=10)
    held = _report_last_seen(client, world, db, seen, last_seen_clock="server")
    assert abs(held - seen) < timedelta(seconds=1)


def test_a_last_contact_on_the_gateways_own_clock_is_moved_by_the_offset_the_server_measures(client, world, db):
    three_days_behind = datetime.now(UTC) - timedelta(days=3)  # a gateway without a battery clock, no NTP
    clock = {"wall": three_days_behind.isoformat(), "boot_id": "boot-1", "monotonic_s": 120.0}

    held = _report_last_seen(client, world, db, three_days_behind - timedelta(minutes=10), last_seen_clock="gateway",
                             gateway_clock=clock)

    # Seen ten minutes ago, not three days ago: the caregiver is not told a unit in use went silent.
    assert abs(held - (datetime.now(UTC) - timedelta(minutes=10))) < timedelta(seconds=30)


def _measure_gateway_clock(client, world, wall: datetime) -> None:
    """A sync-only upload from gateway A whose wall clock reads ``wall``: the server measures (and keeps) its
    offset, and says it in the answer."""
    sync = {"sync_id": "sync-0000001", "serial": world.a_device, "highest_seq": 0,
            "unit_clock": datetime.now(UTC).isoformat(), "gateway_clock": wall.isoformat(), "boot_id": "b1",
            "monotonic_s": 100.0}
    answer = client.post(URL, json={"syncs": [sync], "gateway_clock": {
        "wall": wall.isoformat(), "boot_id": "b1", "monotonic_s": 101.0}}, headers=world["gateway_a"].headers).json
    assert answer["clock"]["vouched"] is False and answer["clock"]["gateway_offset_s"] < -29 * 3600


def test_a_unit_reported_every_cycle_by_a_gateway_whose_clock_is_behind_is_not_called_silent(client, world, db,
                                                                                            services):
    """A gateway whose wall clock is 30 hours behind (a Pi without an RTC, booted offline) and which sends no
    clock reading with its status (an older gateway) reports the unit's status at every cycle: the unit is
    heard from now, by the server's clock (the offset measured at its last upload)."""
    behind = datetime.now(UTC) - timedelta(hours=30)
    _measure_gateway_clock(client, world, behind)
    for minutes_later in (0, 10):
        _report_last_seen(client, world, db, behind + timedelta(minutes=minutes_later))
        services.alerts.evaluate()
    silent = list(db.alerts.find({"kind": "unit_silent"}))
    seen = db.devices.find_one({"_id": world.a_device})["status"]["last_seen_at"]
    assert silent == [], f"{len(silent)} unit_silent alert(s); last contact stored as {seen}"


def test_a_gateway_clock_offset_measured_more_than_a_day_before_a_report_is_not_applied_to_it(client, world, db):
    """The clock may have been set right since (NTP came back): a reading two hours old by it stays two hours
    old, not moved 30 hours forward by the offset of then (which would say the unit was heard from now)."""
    _measure_gateway_clock(client, world, datetime.now(UTC) - timedelta(hours=30))
    measured = datetime.now(UTC) - timedelta(hours=25)  # that upload was 25 hours ago: the unit's contact then too
    db.gateways.update_one({"_id": world["gateway_a"].id}, {"$set": {"clock.checked_at": measured}})
    db.devices.update_one({"_id": world.a_device},
                          {"$set": {"status.last_seen_at": measured, "status.last_sync_at": measured}})
    seen = datetime.now(UTC) - timedelta(hours=2)
    assert abs(_report_last_seen(client, world, db, seen) - seen) < timedelta(seconds=1)


def test_a_gateway_is_limited_to_its_upload_rate_with_retry_after(services, client, world, db, monkeypatch):
    monkeypatch.setattr(services.ingestion, "settings", services.settings.with_changes(gateway_uploads_per_min=3))
    # The limit counts by the clock's minute: seven uploads, however a minute's turn splits them, put at least four
    # in one minute (five could split three and two, and pass).
    answers = [upload(client, world["gateway_a"], [session_record(world.a_device, seq)]) for seq in range(1, 8)]
    assert [a.status_code for a in answers].count(429) >= 1
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    stored = db.session_records.count_documents({})
    assert stored == sum(a.status_code == 200 for a in answers)


def _dead_letters(n: int, serial: str) -> dict:
    return {"items": [{"id": n * 100 + i, "device_serial": serial, "record_id": None, "reason": "BadChecksum",
                       "source": "unit", "dead_at": datetime.now(UTC).isoformat(), "payload": "ff" * 4000}
                      for i in range(50)]}


def test_dead_letter_reports_are_held_to_the_gateways_upload_rate_on_a_counter_of_their_own(
        services, client, world, db, monkeypatch):
    """A looping or compromised gateway cannot grow the patient's record and the audit trail without bound:
    past the per-minute limit its reports are answered 429 with Retry-After and nothing is kept; its record
    batches, counted apart, still go through."""
    monkeypatch.setattr(services.ingestion, "settings", services.settings.with_changes(gateway_uploads_per_min=3))
    gateway = world["gateway_a"]
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=5)
    with time_machine.travel(start):  # all six within one minute's window
        answers = [client.post("/api/v1/gateway/dead-letters", json=_dead_letters(n, world.a_device),
                               headers=gateway.headers) for n in range(6)]
    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {429}, statuses
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in answers[3:])
    assert db.gateway_dead_letters.count_documents({}) == 3 * 50
    assert upload(client, gateway, [session_record(world.a_device, 1)]).status_code == 200


def _status_report(client, world, battery: int, seen: datetime) -> None:
    body = {"devices": [{"serial": world.a_device, "battery_pct": battery, "firmware": "1.4.2",
                         "last_seen_at": seen.isoformat(), "last_seen_clock": "server"}]}
    assert client.post("/api/v1/gateway/device-status", json=body, headers=world["gateway_a"].headers).status_code \
        == 204


def test_a_report_of_an_earlier_contact_does_not_set_the_battery_back(client, world, db):
    """A second hub of the patient's that last reached the unit three days ago reports it every cycle: the
    battery read five minutes ago stands."""
    now = datetime.now(UTC)
    _status_report(client, world, 15, now - timedelta(minutes=5))
    _status_report(client, world, 80, now - timedelta(days=3))
    assert db.devices.find_one({"_id": world.a_device})["status"]["battery_pct"] == 15


def test_a_record_sent_again_or_older_does_not_set_back_the_battery_a_later_report_gave(client, world, db):
    now = datetime.now(UTC)
    record = session_record(world.a_device, 5, battery_pct=80, started_at=now - timedelta(hours=3))
    assert client.post(URL, json={"records": [record]}, headers=world["gateway_a"].headers).status_code == 200
    _status_report(client, world, 40, now)
    assert client.post(URL, json={"records": [record]}, headers=world["gateway_a"].headers).status_code == 200
    older = session_record(world.a_device, 6, battery_pct=90, started_at=now - timedelta(hours=2))  # another hub's
    assert client.post(URL, json={"records": [older]}, headers=world["gateway_a"].headers).status_code == 200
    status = db.devices.find_one({"_id": world.a_device})["status"]
    assert (status["battery_pct"], status["last_record_seq"]) == (40, 6)
