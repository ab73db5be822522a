"""A unit handed over before the app is told: the new wearer's sessions are not counted as the old one's, and
the hand-over, told late with the time it happened, moves what was stored since then."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pymongo
import pytest

from companion.store.sessions import SessionRecords
from tests.proof.test_database_server import plan_of
from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"
LONDON = ZoneInfo("Europe/London")  # patient A's zone (tests/support/world.py)


def upload(client, gateway, records):
    return client.post(URL, json={"records": records}, headers=gateway.headers)


def devices(patient_id: str) -> str:
    return f"/api/v1/patients/{patient_id}/devices"


def owners(db, serial: str) -> dict[int, tuple[str | None, bool]]:
    return {d["device_seq"]: (d["patient_id"], d["held"]) for d in db.session_records.find({"device_serial": serial})}


def prescribe(services, patient_id: str) -> None:
    today = services.adherence.local_today(patient_id)
    services.plans.prescribe(patient_id, {
        "tens": {"sessions_per_day": 1, "daily_minutes_target": None, "minutes_per_session": 30, "programmes": [1],
                 "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": today - timedelta(days=10),
                 "end_date": None, "counts_towards_adherence": True},
        "medications": [], "mindfulness": None}, created_by="c", at=datetime.now(UTC) - timedelta(days=10))


def tens_minutes(db, patient_id: str) -> float:
    return sum(d.get("tens_minutes") or 0 for d in db.adherence_days.find({"patient_id": patient_id}))


def test_a_handover_recorded_late_credits_the_new_wearers_sessions_to_the_old_patient(client, world, db, services):
    serial, a, b, now = "CTU-HANDOV1", world["patient_a"], world["patient_b"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    client.delete(f"/api/v1/patients/{a.id}/devices/{serial}", headers=world["clinician_team"].headers)
    client.post(f"/api/v1/patients/{b.id}/devices", json={"serial": serial}, headers=b.headers)
    client.post(URL, json={"records": [session_record(serial, 1, started_at=now - timedelta(days=2)),
                                       session_record(serial, 2, started_at=now - timedelta(days=1))]},
                headers=world["gateway_b"].headers)
    docs = list(db.session_records.find({"device_serial": serial}))
    assert all(d["patient_id"] != a.id or d["held"] for d in docs)


def test_sessions_the_new_wearers_hub_brings_from_after_the_old_hub_last_saw_the_unit_are_held_for_both(
        client, world, db, services):
    """A release with no time says only that the unit had changed hands by then: what another patient's hub
    brings from before the old wearer's own hub last had contact with the unit is still theirs; what is later
    may be the new wearer's, and is held with both named, for either care team to decide."""
    serial, a, b, now = "CTU-HANDOV2", world["patient_a"], world["patient_b"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    report = {"serial": serial, "battery_pct": 50, "firmware": "1.0",
              "last_seen_at": (now - timedelta(days=3)).isoformat(), "last_seen_clock": "server"}
    assert client.post("/api/v1/gateway/device-status", json={"devices": [report]},
                       headers=world["gateway_a"].headers).status_code == 204
    assert client.delete(f"{devices(a.id)}/{serial}", headers=world["clinician_team"].headers).status_code == 204
    assert client.post(devices(b.id), json={"serial": serial}, headers=b.headers).status_code == 201
    answer = upload(client, world["gateway_b"], [session_record(serial, 1, started_at=now - timedelta(days=4)),
                                                 session_record(serial, 2, started_at=now - timedelta(days=2))])
    assert answer.status_code == 200
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}
    held = db.session_records.find_one({"_id": f"{serial}:2"})
    assert held["candidate_patient_ids"] == [a.id, b.id]
    # B's care team sees it among B's held sessions and counts it as B's: it is B's, and counted once.
    listed = client.get(f"/api/v1/patients/{b.id}/sessions/held", headers=world["clinician_other"].headers)
    assert f"{serial}:2" in {h["record_id"] for h in listed.json["items"]}
    counted = client.put(f"/api/v1/patients/{b.id}/sessions/{serial}:2/resolution", json={"action": "count"},
                         headers=world["clinician_other"].headers)
    assert counted.status_code == 200 and counted.json["held"] is False
    assert owners(db, serial) == {1: (a.id, False), 2: (b.id, False)}
    mine = client.get(f"/api/v1/patients/{b.id}/sessions", headers=b.headers).json["items"]
    assert [s["record_id"] for s in mine] == [f"{serial}:2"]
    theirs = client.get(f"/api/v1/patients/{a.id}/sessions", headers=a.headers).json["items"]
    assert [s["record_id"] for s in theirs] == [f"{serial}:1"]


def test_a_handover_told_late_with_its_time_moves_the_sessions_since_then_to_the_new_wearer(client, world, db,
                                                                                           services):
    """The clinic gives the unit to B, and tells the app days later, with no time; B's hub brings B's sessions
    (counted for A before this was fixed, held now). Told when it happened, the sessions since then are B's:
    they leave A's figures (and held list) for B's, counted once."""
    serial, a, b, now = "CTU-HANDOV3", world["patient_a"], world["patient_b"], datetime.now(UTC)
    for patient in (a, b):
        prescribe(services, patient.id)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert client.delete(f"{devices(a.id)}/{serial}", headers=world["clinician_team"].headers).status_code == 204
    assert client.post(devices(b.id), json={"serial": serial}, headers=b.headers).status_code == 201
    upload(client, world["gateway_b"], [session_record(serial, 1, started_at=now - timedelta(days=2)),
                                        session_record(serial, 2, started_at=now - timedelta(days=1))])
    assert owners(db, serial) == {1: (None, True), 2: (None, True)}
    handed_over = (now - timedelta(days=3)).isoformat()
    # A's care team says when A gave it back; B says since when B has worn it.
    assert client.delete(f"{devices(a.id)}/{serial}", query_string={"handed_over_at": handed_over},
                         headers=world["clinician_team"].headers).status_code == 204
    assert owners(db, serial) == {1: (None, True), 2: (None, True)}  # bound to nobody then: still held
    again = client.post(devices(b.id), json={"serial": serial, "handed_over_at": handed_over}, headers=b.headers)
    assert again.status_code == 201
    assert owners(db, serial) == {1: (b.id, False), 2: (b.id, False)}
    services.adherence_job.run()
    assert tens_minutes(db, b.id) == 60 and tens_minutes(db, a.id) == 0
    held_a = client.get(f"/api/v1/patients/{a.id}/sessions/held", headers=world["clinician_team"].headers)
    assert held_a.json["items"] == []


def test_a_release_told_late_moves_the_old_wearers_counted_sessions_out_of_their_figures(client, world, db,
                                                                                        services):
    """Sessions stored as A's (A's hub brought them while the unit was still bound to A) from after the time A's
    care team then says the unit changed hands leave A's figures, today and the adherence days alike; the new
    wearer's binding, told from then too, does not take them on A's hub's word: held for the care teams."""
    serial, a, b, now = "CTU-HANDOV4", world["patient_a"], world["patient_b"], datetime.now(UTC)
    prescribe(services, a.id)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    midnight = datetime.combine(now.astimezone(LONDON).date(), time(0), LONDON).astimezone(UTC)
    today = max(now - timedelta(minutes=90), midnight + timedelta(seconds=1))  # on A's today, whatever the hour
    upload(client, world["gateway_a"], [session_record(serial, 1, started_at=now - timedelta(days=4)),
                                        session_record(serial, 2, started_at=today)])
    assert owners(db, serial) == {1: (a.id, False), 2: (a.id, False)}
    services.adherence_job.run()
    assert tens_minutes(db, a.id) == 60
    assert client.get(f"/api/v1/patients/{a.id}/today", headers=a.headers).json["tens"]["sessions"] == 1
    handed_over = (now - timedelta(days=2)).isoformat()
    assert client.delete(f"{devices(a.id)}/{serial}", query_string={"handed_over_at": handed_over},
                         headers=world["clinician_team"].headers).status_code == 204
    assert client.post(devices(b.id), json={"serial": serial, "handed_over_at": handed_over},
                       headers=b.headers).status_code == 201
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}
    assert db.session_records.find_one({"_id": f"{serial}:2"})["candidate_patient_ids"] == [b.id, a.id]
    assert client.get(f"/api/v1/patients/{a.id}/today", headers=a.headers).json["tens"]["sessions"] == 0
    services.adherence_job.run()
    assert tens_minutes(db, a.id) == 30


def test_a_handover_time_in_the_future_or_outside_the_binding_is_refused(client, world, services):
    serial, a, b, now = "CTU-HANDOV5", world["patient_a"], world["patient_b"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=5))
    url, headers = f"{devices(a.id)}/{serial}", world["clinician_team"].headers
    for when in (now + timedelta(hours=1), now - timedelta(days=6)):
        refused = client.delete(url, query_string={"handed_over_at": when.isoformat()}, headers=headers)
        assert refused.status_code == 422 and "handed_over_at" in refused.json["errors"], refused.json
    assert client.delete(url, query_string={"handed_over_at": (now - timedelta(days=1)).isoformat()},
                         headers=headers).status_code == 204
    # Not before A's binding ended (one patient at a time), nor in the future.
    for when in (now - timedelta(days=2), now + timedelta(hours=1)):
        refused = client.post(devices(b.id), json={"serial": serial, "handed_over_at": when.isoformat()},
                              headers=b.headers)
        assert refused.status_code == 422 and "handed_over_at" in refused.json["errors"], refused.json
    # A's end moves only earlier.
    later = client.delete(url, query_string={"handed_over_at": now.isoformat()}, headers=headers)
    assert later.status_code == 422


def test_an_upload_whose_unit_is_released_between_its_binding_read_and_its_claim_places_by_the_release(
        client, world, db, services, monkeypatch):
    """The upload read the unit's bindings (bound to A, no end); before it claims the unit, the release told late
    (the unit changed hands 3 days ago) is written and finds nothing of the unit's to place again (the upload's
    record is not stored yet). The upload places its record by the bindings once it holds the unit: a session
    after the hand-over is not counted as A's (it was, by the bindings read before the release)."""
    serial, a, now = "CTU-HANDOV9", world["patient_a"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    handed_over = (now - timedelta(days=3)).isoformat()
    real, released = services.ingestion.devices.bindings_of, []

    def the_release_lands_after_this_read(serials):
        read = real(serials)
        if not released:
            thread = threading.Thread(target=lambda: released.append(client.delete(
                f"{devices(a.id)}/{serial}", query_string={"handed_over_at": handed_over},
                headers=world["clinician_team"].headers).status_code))
            thread.start()
            thread.join()
        return read

    monkeypatch.setattr(services.ingestion.devices, "bindings_of", the_release_lands_after_this_read)
    answer = upload(client, world["gateway_a"], [session_record(serial, 1, started_at=now - timedelta(days=1))])
    monkeypatch.undo()
    assert (released, answer.status_code) == ([204], 200)
    assert owners(db, serial) == {1: (None, True)}  # held, as placed after the release: not A's to count
    assert services.sessions.place_after_handover(serial, now - timedelta(days=3)) == 0  # nothing left misplaced


def test_a_handover_time_told_late_gives_the_old_wearer_back_their_backlog_the_new_hub_brought(
        client, world, db, services):
    """A did therapy on day -4 and gave the unit to B on day -3; B's hub pulled A's session with B's own. Released
    with no time, A's session is held (nothing vouches for it). Told the hand-over's time, it is A's by the
    relay rule (stated end, within 14 days): the re-placement must apply that rule to it too."""
    serial, a, b, now = "CTU-HANDOV6", world["patient_a"], world["patient_b"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert client.delete(f"{devices(a.id)}/{serial}", headers=world["clinician_team"].headers).status_code == 204
    assert client.post(devices(b.id), json={"serial": serial}, headers=b.headers).status_code == 201
    assert upload(client, world["gateway_b"], [session_record(serial, 1, started_at=now - timedelta(days=4)),
                                               session_record(serial, 2, started_at=now - timedelta(days=1))]
                  ).status_code == 200
    assert owners(db, serial) == {1: (None, True), 2: (None, True)}
    handed_over = (now - timedelta(days=3)).isoformat()
    assert client.delete(f"{devices(a.id)}/{serial}", query_string={"handed_over_at": handed_over},
                         headers=world["clinician_team"].headers).status_code == 204
    assert client.post(devices(b.id), json={"serial": serial, "handed_over_at": handed_over},
                       headers=b.headers).status_code == 201
    after_correction = owners(db, serial)
    services.sessions.place_after_handover(serial, now - timedelta(days=5))  # the same rule, a wider re-placement
    placed_again = owners(db, serial)
    expected = {1: (a.id, False), 2: (b.id, False)}
    assert (after_correction, placed_again) == (expected, expected)


class _Reads(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.finds: list[dict] = []
        self.returned = 0

    def started(self, event):
        if event.command_name == "find" and event.command["find"] == "session_records":
            self.finds.append(event.command)

    def succeeded(self, event):
        if event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            self.returned += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event):
        pass


def test_the_re_placement_after_a_handover_reads_the_units_latest_records_up_to_its_window_only(db, mongo_uri):
    """Every bind and release re-places a unit's records from the hand-over on: the read takes the latest ones
    (the highest numbers, the window a placement reads), stopped at the window in the database, never every
    record the unit ever stored (those with no bound on their start match whatever their date)."""
    serial, now = "CTU-HANDOV7", datetime.now(UTC)
    db.session_records.insert_many([
        {"_id": f"{serial}:{n}", "device_serial": serial, "device_seq": n,
         "started_latest": None if n % 3 == 0 else now - timedelta(days=40 - n)} for n in range(1, 31)])
    reads = _Reads()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[reads])
    try:
        seqs = SessionRecords(watched[db.name]).of_unit_from(serial, now - timedelta(days=20), limit=4)
    finally:
        watched.close()
    assert seqs == [27, 28, 29, 30]  # of the 17 that match (3, 6, ..., 18 and 20 to 30), the latest 4
    (find,) = reads.finds
    assert (find.get("limit"), dict(find.get("sort", {})), reads.returned) == (4, {"device_seq": -1}, 4)
    assert "serial_seq" in plan_of(db, "session_records", find["filter"])  # the unit's records, on its index


def _while_the_upload_holds_the_unit(monkeypatch, services, request) -> list:
    """The upload has claimed its unit and placed its records by the bindings it read under the claim; before it
    stores them, ``request`` (another caller's real request, on its own thread) arrives. Its answer is collected
    in the list returned."""
    records, answered = services.ingestion.records, []
    real = records.insert_new

    def first_the_other_request(docs, *args, **kwargs):
        if not answered:
            thread = threading.Thread(target=lambda: answered.append(request()))
            thread.start()
            thread.join()
        return real(docs, *args, **kwargs)

    monkeypatch.setattr(records, "insert_new", first_the_other_request)
    return answered


def test_a_release_arriving_while_an_upload_holds_the_unit_changes_nothing_and_its_retry_places_the_upload(
        client, world, db, services, monkeypatch):
    """A's hub uploads a session of the day before; meanwhile A's care team releases the unit as of 3 days ago. The
    upload holds the unit's claim, so the release is answered 503 with Retry-After, its binding unwritten (written,
    its re-placement could not run, and its retry would find nothing left to change: the upload's session counted
    as A's for good). Sent again, it ends the binding and places the upload's session by it: not A's."""
    serial, a, now = "CTU-HANDOVA", world["patient_a"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert upload(client, world["gateway_a"],
                  [session_record(serial, 1, started_at=now - timedelta(days=5))]).status_code == 200
    release = {"path": f"{devices(a.id)}/{serial}", "headers": world["clinician_team"].headers,
               "query_string": {"handed_over_at": (now - timedelta(days=3)).isoformat()}}
    answered = _while_the_upload_holds_the_unit(monkeypatch, services, lambda: client.delete(**release))
    answer = upload(client, world["gateway_a"], [session_record(serial, 2, started_at=now - timedelta(days=1))])
    monkeypatch.undo()
    (busy,) = answered
    assert (answer.status_code, busy.status_code, "Retry-After" in busy.headers) == (200, 503, True)
    assert services.stores.devices.get(serial).patient_id == a.id  # the release wrote nothing
    assert owners(db, serial) == {1: (a.id, False), 2: (a.id, False)}
    assert client.delete(**release).status_code == 204
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}


def test_a_binding_arriving_while_an_upload_holds_the_unit_changes_nothing_and_its_retry_places_the_upload(
        client, world, db, services, monkeypatch):
    """The unit went from A to B 3 days ago; B's care team bound it today and B's hub brought a session of 2 days
    ago (held: nobody wore the unit then, as far as the server knows). B's binding told as of the hand-over arrives
    while B's hub's next upload holds the unit: 503, nothing written; sent again, it makes both sessions B's."""
    serial, a, b, now = "CTU-HANDOVB", world["patient_a"], world["patient_b"], datetime.now(UTC)
    handed_over = now - timedelta(days=3)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    services.gateways.release_unit(a.id, serial, released_at=handed_over)
    bind = {"path": devices(b.id), "headers": b.headers, "json": {"serial": serial}}
    assert client.post(**bind).status_code == 201
    bound_at = services.stores.devices.get(serial).bound_at
    assert upload(client, world["gateway_b"],
                  [session_record(serial, 1, started_at=now - timedelta(days=2))]).status_code == 200
    told = {**bind, "json": {"serial": serial, "handed_over_at": handed_over.isoformat()}}
    answered = _while_the_upload_holds_the_unit(monkeypatch, services, lambda: client.post(**told))
    answer = upload(client, world["gateway_b"], [session_record(serial, 2, started_at=now - timedelta(days=1))])
    monkeypatch.undo()
    (busy,) = answered
    assert (answer.status_code, busy.status_code, "Retry-After" in busy.headers) == (200, 503, True)
    assert services.stores.devices.get(serial).bound_at == bound_at  # the binding was not moved
    assert owners(db, serial) == {1: (None, True), 2: (None, True)}
    assert client.post(**told).status_code == 201
    assert owners(db, serial) == {1: (b.id, False), 2: (b.id, False)}


def test_an_upload_arriving_while_a_release_places_the_unit_again_waits_and_is_placed_by_the_release(
        client, world, db, services, monkeypatch):
    """The other order: the release holds the unit from its write to the end of its re-placement, so an upload
    arriving meanwhile is answered 503 (the hub keeps it), and sent again it is placed by the binding's new end."""
    serial, a, now = "CTU-HANDOVE", world["patient_a"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert upload(client, world["gateway_a"],
                  [session_record(serial, 1, started_at=now - timedelta(days=5))]).status_code == 200
    batch = [session_record(serial, 2, started_at=now - timedelta(days=1))]
    real, answered = services.sessions.place_after_handover, []

    def the_upload_arrives_meanwhile(*args, **kwargs):
        thread = threading.Thread(target=lambda: answered.append(upload(client, world["gateway_a"], batch)))
        thread.start()
        thread.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(services.sessions, "place_after_handover", the_upload_arrives_meanwhile)
    released = client.delete(f"{devices(a.id)}/{serial}", headers=world["clinician_team"].headers,
                             query_string={"handed_over_at": (now - timedelta(days=3)).isoformat()})
    monkeypatch.undo()
    (busy,) = answered
    assert (released.status_code, busy.status_code, "Retry-After" in busy.headers) == (204, 503, True)
    assert upload(client, world["gateway_a"], batch).status_code == 200
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}


def _crashing_once(monkeypatch, services) -> list[datetime]:
    """The hand-over's re-placement stops the first time (the process dies after the binding's write); every
    re-placement asked for is listed (from when) in the list returned."""
    real, asked = services.sessions.place_after_handover, []

    def place(serial, since):
        asked.append(since)
        if len(asked) == 1:
            raise RuntimeError("the process stopped here")
        return real(serial, since)

    monkeypatch.setattr(services.sessions, "place_after_handover", place)
    return asked


def test_a_release_stopped_before_its_re_placement_is_finished_by_a_plain_retry_and_only_once(
        client, world, db, services, monkeypatch):
    serial, a, now = "CTU-HANDOVC", world["patient_a"], datetime.now(UTC)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert upload(client, world["gateway_a"], [session_record(serial, 1, started_at=now - timedelta(days=5)),
                                               session_record(serial, 2, started_at=now - timedelta(days=1))]
                  ).status_code == 200
    asked = _crashing_once(monkeypatch, services)
    with pytest.raises(RuntimeError):
        services.gateways.release_unit(a.id, serial, released_at=now - timedelta(days=3))
    assert owners(db, serial) == {1: (a.id, False), 2: (a.id, False)}  # ended, not placed again yet
    url, headers = f"{devices(a.id)}/{serial}", world["clinician_team"].headers
    assert client.delete(url, headers=headers).status_code == 204  # sent again, with no time
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}
    assert client.delete(url, headers=headers).status_code == 204
    assert len(asked) == 2  # the third release found nothing owed: nothing placed again


def test_a_binding_stopped_before_its_re_placement_is_finished_by_a_plain_retry_and_only_once(
        client, world, db, services, monkeypatch):
    serial, a, b, now = "CTU-HANDOVD", world["patient_a"], world["patient_b"], datetime.now(UTC)
    handed_over = now - timedelta(days=3)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    services.gateways.release_unit(a.id, serial, released_at=handed_over)
    bind = {"path": devices(b.id), "headers": b.headers, "json": {"serial": serial}}
    assert client.post(**bind).status_code == 201
    assert upload(client, world["gateway_b"],
                  [session_record(serial, 1, started_at=now - timedelta(days=1))]).status_code == 200
    assert owners(db, serial) == {1: (None, True)}
    asked = _crashing_once(monkeypatch, services)
    with pytest.raises(RuntimeError):
        services.gateways.bind_unit(b.id, serial, "companion-tens", bound_at=handed_over)
    assert owners(db, serial) == {1: (None, True)}  # moved back, not placed again yet
    assert client.post(**bind).status_code == 201  # sent again, with no time
    assert owners(db, serial) == {1: (b.id, False)}
    assert client.post(**bind).status_code == 201
    assert len(asked) == 2  # the third binding found nothing owed: nothing placed again


def test_a_release_and_a_binding_document_the_503_of_a_unit_being_placed(client):
    paths = client.get("/openapi.json").json["paths"]
    for path, method in (("/api/v1/patients/{patient_id}/devices", "post"),
                         ("/api/v1/patients/{patient_id}/devices/{serial}", "delete")):
        busy = paths[path][method]["responses"]["503"]
        assert "being placed" in busy["description"] and "Retry-After" in busy["headers"], (method, path)
