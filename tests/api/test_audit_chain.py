"""The audit trail detects truncation, deletion and re-linking by someone who can write to the database, records
every refusal, counts gateways' routine calls instead of logging each, and keeps a retention period
(issue 15, finding 6). ``companion audit-verify`` is run as an operator would, against the anchor file."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from companion import cli, create_app
from tests.conftest import FAST_PASSWORDS
from tests.support.world import build_world

SECRET = "a" * 48


@pytest.fixture
def anchors(tmp_path):
    return tmp_path / "audit-anchors.log"


@pytest.fixture
def audited(mongo_uri, db_name, anchors, monkeypatch):
    """The app writing anchors to a file, a small world built through it, and the environment the command line
    reads its settings from (the same database, secret and anchor file)."""
    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": SECRET,
                      "audit_anchor_file": str(anchors), **FAST_PASSWORDS})
    client = app.test_client()
    world = build_world(client, app.extensions["companion"])
    client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=world["clinician_team"].headers)
    app.extensions["companion"].audit.anchor_now()
    for variable, value in {"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "COMPANION_SECRET_KEY": SECRET,
                            "COMPANION_AUDIT_ANCHOR_FILE": str(anchors)}.items():
        monkeypatch.setenv(variable, value)
    yield app, client, world
    app.extensions["companion"].close()


def canonical(event: dict) -> bytes:
    """The event's canonical JSON, as the chain hashes it (an attacker can compute it: it is no secret)."""
    from companion.domain.audit_chain import canonical as of

    return of(event)


def _verify(capsys, *extra) -> tuple[int, str]:
    status = cli.main(["audit-verify", *extra])
    return status, capsys.readouterr().out


def _chain(db):
    chain_id = db.audit_events.find_one({}, sort=[("seq", -1)])["chain_id"]
    return chain_id, list(db.audit_events.find({"chain_id": chain_id}).sort("seq", 1))


def test_an_untouched_trail_verifies(audited, capsys):
    status, out = _verify(capsys)
    assert status == 0, out
    assert "BREAK" not in out and "1 chains" in out


def test_cutting_the_end_of_a_chain_is_found(audited, capsys):
    app, _, _ = audited
    db = app.extensions["companion"].db
    chain_id, events = _chain(db)
    db.audit_events.delete_many({"chain_id": chain_id, "seq": {"$gte": events[-3]["seq"]}})
    status, out = _verify(capsys)
    assert status == 1
    assert f"BREAK chain {chain_id} seq {events[-1]['seq']}: truncated" in out


def test_deleting_an_event_and_relinking_the_rest_is_found(audited, capsys):
    """The attacker removes one event and rewrites every later one so that seq and prev_hash line up again,
    hashing them as the old unkeyed chain did: without the key the hashes cannot match."""
    app, _, _ = audited
    db = app.extensions["companion"].db
    chain_id, events = _chain(db)
    gone = events[5]
    db.audit_events.delete_one({"_id": gone["_id"]})
    prev = events[4]["hash"]
    for event in events[6:]:
        relinked = {**event, "seq": event["seq"] - 1, "prev_hash": prev}
        relinked["hash"] = hashlib.sha256(canonical(relinked)).hexdigest()
        db.audit_events.delete_one({"_id": event["_id"]})
        db.audit_events.insert_one(relinked)
        prev = relinked["hash"]
    status, out = _verify(capsys)
    assert status == 1
    assert f"BREAK chain {chain_id} seq {gone['seq']}: content changed" in out
    assert "truncated" in out  # the chain is one event shorter than its anchor says


def test_deleting_a_whole_chain_is_found(audited, capsys):
    app, _, _ = audited
    db = app.extensions["companion"].db
    chain_id, events = _chain(db)
    db.audit_events.delete_many({"chain_id": chain_id})
    status, out = _verify(capsys)
    assert status == 1
    assert f"BREAK chain {chain_id} seq {events[-1]['seq']}: truncated" in out and "no events" in out


def test_an_altered_anchor_is_refused_and_no_anchors_is_a_warning(audited, anchors, tmp_path, capsys):
    lines = anchors.read_text().splitlines()
    forged = lines[-1].replace("seq=", "seq=9")
    (tmp_path / "forged.log").write_text("\n".join([*lines[:-1], forged]) + "\n")
    status, out = _verify(capsys, "--anchors", str(tmp_path / "forged.log"))
    assert status == 1 and "whose MAC does not match" in out
    (tmp_path / "empty.log").write_text("")
    status, out = _verify(capsys, "--anchors", str(tmp_path / "empty.log"))
    assert status == 0 and "WARNING no anchors read" in out


def test_anchors_are_logged_too_so_a_log_extract_serves_as_the_anchor_file(audited, caplog, tmp_path, capsys):
    app, client, world = audited
    with caplog.at_level("INFO", logger="companion.audit.anchor"):
        client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=world["patient_a"].headers)
        app.extensions["companion"].audit.anchor_now()
    logged = [r.getMessage() for r in caplog.records if r.name == "companion.audit.anchor"]
    assert logged and all(line.startswith("audit-anchor v1 chain=") for line in logged)
    (tmp_path / "from-logs.txt").write_text("\n".join(f"2026-01-01 INFO companion.audit.anchor: {line}"
                                                      for line in logged))
    status, out = _verify(capsys, "--anchors", str(tmp_path / "from-logs.txt"))
    assert status == 0, out


def test_refusals_are_audited_401_and_403_included(audited):
    app, client, world = audited
    db = app.extensions["companion"].db
    patient = world["patient_a"]
    before = db.audit_events.count_documents({"outcome": "denied"})
    assert client.get(f"/api/v1/patients/{patient.id}").status_code == 401
    assert client.get(f"/api/v1/patients/{patient.id}", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert client.get("/api/v1/admin/users", headers=patient.headers).status_code == 403
    assert client.patch(f"/api/v1/patients/{patient.id}", json={"display_name": "X"},
                        headers=world["caregiver_linked"].headers).status_code == 403
    assert client.post("/api/v1/auth/login", json={"email": patient.email, "password": "wrong guess"}) \
        .status_code == 401
    denied = list(db.audit_events.find({"outcome": "denied"}).sort([("at", 1), ("seq", 1)]))[before:]
    assert [(e["status"], e["actor_role"], e["patient_ids"], e["route"]) for e in denied] == [
        (401, "anonymous", [patient.id], "/api/v1/patients/<patient_id>"),
        (401, "anonymous", [patient.id], "/api/v1/patients/<patient_id>"),
        (403, "patient", [None], "/api/v1/admin/users"),
        (403, "caregiver", [patient.id], "/api/v1/patients/<patient_id>"),
        (401, "anonymous", [None], "/api/v1/auth/login"),
    ]


def test_a_gateways_routine_polling_is_counted_per_day_not_written_per_call(audited, capsys):
    app, client, world = audited
    services = app.extensions["companion"]
    db = services.db
    gateway = world["gateway_a"]
    status = {"devices": [{"serial": world.a_device, "battery_pct": 70, "firmware": "1.2",
                           "last_seen_at": "2026-01-01T00:00:00Z"}]}
    before = db.audit_events.count_documents({})
    for _ in range(10):
        assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 200
        assert client.post("/api/v1/gateway/device-status", headers=gateway.headers, json=status).status_code == 204
    assert db.audit_events.count_documents({}) == before
    counts = {c["route"]: c["count"] for c in db.audit_heartbeats.find()}
    assert counts == {"/api/v1/gateway/devices": 10, "/api/v1/gateway/device-status": 10}
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1)):
        assert services.housekeeping.audit_retention()["heartbeat_days"] == 2
        assert services.housekeeping.audit_retention()["heartbeat_days"] == 0  # once
    rolled = list(db.audit_events.find({"action": "heartbeat"}))
    assert sorted((e["route"], e["count"], e["patient_ids"]) for e in rolled) == [
        ("/api/v1/gateway/device-status", 10, [world["patient_a"].id]),
        ("/api/v1/gateway/devices", 10, [world["patient_a"].id])]
    assert db.audit_heartbeats.count_documents({}) == 0
    services.audit.anchor_now()
    assert _verify(capsys)[0] == 0


def test_a_session_upload_is_still_audited_per_call(audited):
    app, client, world = audited
    db = app.extensions["companion"].db
    gateway = world["gateway_a"]
    before = db.audit_events.count_documents({"actor_id": gateway.id})
    client.post("/api/v1/gateway/session-records", headers=gateway.headers, json={"records": [{"record_id": "x"}]})
    assert db.audit_events.count_documents({"actor_id": gateway.id}) > before


def test_retention_deletes_old_events_behind_a_keyed_cut_and_the_rest_still_verifies(audited, capsys):
    app, client, world = audited
    services = app.extensions["companion"]
    db = services.db
    old = db.audit_events.count_documents({})
    later = datetime.now(UTC) + timedelta(days=2193)
    with time_machine.travel(later):
        fresh = create_app({"mongodb_uri": services.settings.mongodb_uri, "mongodb_db": db.name, "secret_key": SECRET,
                            "audit_anchor_file": services.settings.audit_anchor_file, **FAST_PASSWORDS})
        fresh.test_client().get(f"/api/v1/patients/{world['patient_a'].id}")  # a new event, kept
        fresh.extensions["companion"].audit.anchor_now()
        result = fresh.extensions["companion"].housekeeping.audit_retention()
        assert result["audit_events_deleted"] == old
        assert db.audit_events.count_documents({}) >= 1
        status, out = _verify(capsys)
        assert status == 0, out
        cut = db.audit_cuts.find_one({})
        db.audit_cuts.update_one({"_id": cut["_id"]}, {"$set": {"seq": cut["seq"] - 5}})  # hide nothing, say less
        status, out = _verify(capsys)
        assert status == 1 and "forged" in out
        fresh.extensions["companion"].close()


def test_the_worker_schedules_the_retention_jobs(services):
    from companion.jobs.worker import Worker

    ids = {spec.id for spec in Worker(services).specs()}
    assert {"audit-retention", "records-retention"} <= ids


def test_an_event_names_its_chain_position_and_its_keyed_hash(audited):
    app, _, _ = audited
    db = app.extensions["companion"].db
    event = db.audit_events.find_one({"seq": 1})
    unkeyed = hashlib.sha256(canonical(event)).hexdigest()
    assert event["hash"] != unkeyed and len(event["hash"]) == 64
    assert json.loads(canonical(event))["prev_hash"] == event["prev_hash"]


def test_two_retention_runs_at_once_never_move_a_cut_back(audited, capsys, monkeypatch):
    """ops review: purge_before reads the cuts once, then saves each chain's cut with replace_one; a run that
    overlaps a later one (two leaders across a hand-over) moves the cut back below events already deleted."""
    app, client, world = audited
    services = app.extensions["companion"]
    audit = services.audit
    first_cutoff = datetime.now(UTC) + timedelta(hours=1)  # covers the world's events
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1)):
        client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=world["clinician_team"].headers)
        audit.anchor_now()
    later_cutoff = datetime.now(UTC) + timedelta(days=2)  # the other run, an hour or a day later
    original = audit.events.chain_heads_before

    def heads_then_the_later_run_overtakes(cutoff):
        heads = list(original(cutoff))
        monkeypatch.setattr(audit.events, "chain_heads_before", original)
        audit.purge_before(later_cutoff)
        return iter(heads)

    monkeypatch.setattr(audit.events, "chain_heads_before", heads_then_the_later_run_overtakes)
    audit.purge_before(first_cutoff)
    status, out = _verify(capsys)
    assert status == 0, out


def test_two_heartbeat_roll_ups_at_once_write_each_days_count_once_and_the_chain_still_verifies(
        audited, capsys, monkeypatch):
    """The roll-up looked its event up by request id, then wrote it: two runs at once (two leaders across a
    hand-over) both found none and both wrote it."""
    app, client, world = audited
    services = app.extensions["companion"]
    audit, db, gateway = services.audit, services.db, world["gateway_a"]
    for _ in range(3):
        assert client.get("/api/v1/gateway/devices", headers=gateway.headers).status_code == 200
    original = audit.events.with_request_id
    other_run = []

    def looked_up_then_the_other_run_goes_through(request_id):
        found = original(request_id)
        monkeypatch.setattr(audit.events, "with_request_id", original)
        other_run.append(audit.roll_up_heartbeats())
        return found

    monkeypatch.setattr(audit.events, "with_request_id", looked_up_then_the_other_run_goes_through)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1)):
        assert (audit.roll_up_heartbeats(), other_run) == (0, [1])
        client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=world["clinician_team"].headers)
        audit.anchor_now()
    assert [e["count"] for e in db.audit_events.find({"action": "heartbeat"})] == [3]
    status, out = _verify(capsys)
    assert status == 0, out


def test_cuts_saved_at_once_for_a_new_chain_end_at_the_furthest(audited):
    events = audited[0].extensions["companion"].audit.events
    chain_id, barrier = "9d1f0c4e-0000-4000-8000-000000000001", threading.Barrier(8)

    def save(seq):
        barrier.wait()
        events.save_cut({"_id": chain_id, "seq": seq, "hash": "0" * 64, "at": "-", "mac": "-"})

    threads = [threading.Thread(target=save, args=(seq,)) for seq in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events.cuts_by_chain()[chain_id]["seq"] == 7
    assert events.save_cut({"_id": chain_id, "seq": 5, "hash": "0" * 64, "at": "-", "mac": "-"}) is False
    assert events.cuts_by_chain()[chain_id]["seq"] == 7


# ---- nothing verifying under COMPANION_AUDIT_KEY is said in one line, never blamed on the key for sure ----

WRONG_KEY = "b" * 48  # mistyped, or not the writers' key
EITHER = "the key is not the writers', or the trail and its anchors were rewritten"


def _nothing_verifies(out: str) -> str:
    [said] = [line for line in out.splitlines() if line.startswith("NOTHING VERIFIES")]
    return said


def test_a_wrong_audit_key_is_said_in_one_line_not_every_event_reported_tampered(audited, capsys, monkeypatch):
    """It listed every event and every anchor as changed (thousands of BREAK lines for a typo in the key)."""
    app, _, _ = audited
    monkeypatch.setenv("COMPANION_AUDIT_KEY", WRONG_KEY)
    status, out = _verify(capsys)
    assert status == 1, out  # a failure: the anchors' fingerprints cannot show that the key, not the trail, is at fault
    assert "BREAK" not in out and "content changed" not in out and "WRONG KEY" not in out
    said = _nothing_verifies(out)
    assert "COMPANION_AUDIT_KEY" in said and EITHER in said
    assert "not this key's: a hint (not proof" in said  # the anchors name the writers' key: the likely cause
    breaks = _verify(capsys, "--all-breaks")[1].count("BREAK ")
    assert f"({breaks} break(s))" in said and breaks > 10
    assert "--all-breaks lists every break" in out
    # Asked for, every break is still listed under that key.
    status, out = _verify(capsys, "--all-breaks")
    assert status == 1 and out.count("content changed after it was written") > 10 and "WRONG KEY" not in out


def test_without_fingerprints_in_the_anchors_nothing_verifying_under_a_key_is_said_in_one_line(
        audited, anchors, tmp_path, capsys, monkeypatch):
    """Anchors written before they carried the key's fingerprint (or none at all)."""
    monkeypatch.setenv("COMPANION_AUDIT_KEY", WRONG_KEY)
    (tmp_path / "old.log").write_text(re.sub(r" key=[0-9a-f]{16}", "", anchors.read_text()))
    (tmp_path / "none.log").write_text("")
    for given in ("old.log", "none.log"):
        status, out = _verify(capsys, "--anchors", str(tmp_path / given))
        assert status == 1 and "BREAK" not in out, out
        said = _nothing_verifies(out)
        assert EITHER in said and "no anchor names a key fingerprint" in said


def _rewrite_every_event(db) -> None:
    """Someone without the key rewrites every event and recomputes each one's own hash."""
    for event in db.audit_events.find({}):
        forged = {**event, "actor_id": "someone else"}
        db.audit_events.replace_one({"_id": event["_id"]}, {**forged, "hash": hashlib.sha256(canonical(forged))
                                                            .hexdigest()})


def test_a_trail_rewritten_without_the_key_with_anchors_naming_another_key_is_not_passed_off_as_a_wrong_key(
        audited, anchors, capsys):
    """The fingerprint is outside the anchors' MAC: an attacker who rewrites every event and re-forges every anchor
    naming some other key made audit-verify say with certainty WRONG KEY, exit 2, and list no break."""
    app, _, _ = audited
    db = app.extensions["companion"].db
    _rewrite_every_event(db)
    forged_anchors = re.sub(r"mac=[0-9a-f]{64}", "mac=" + "0" * 64, anchors.read_text())
    anchors.write_text(re.sub(r"key=[0-9a-f]{16}", "key=" + "1" * 16, forged_anchors))
    status, out = _verify(capsys)
    assert status == 1 and "WRONG KEY" not in out, out
    said = _nothing_verifies(out)
    assert EITHER in said and "not proof" in said and "treat every break as tampering" in said
    status, listed = _verify(capsys, "--all-breaks")
    breaks = listed.count("BREAK ")
    assert status == 1 and listed.count("content changed after it was written") == db.audit_events.count_documents({})
    assert listed.count("whose MAC does not match") == anchors.read_text().count("audit-anchor")
    assert f"({breaks} break(s))" in said


def test_anchors_without_a_key_fingerprint_still_verify_under_the_right_key(audited, anchors, tmp_path, capsys):
    (tmp_path / "old.log").write_text(re.sub(r" key=[0-9a-f]{16}", "", anchors.read_text()))
    status, out = _verify(capsys, "--anchors", str(tmp_path / "old.log"))
    assert status == 0 and "BREAK" not in out, out


def test_under_the_right_key_one_altered_event_is_a_break_not_a_wrong_key(audited, capsys):
    app, _, _ = audited
    db = app.extensions["companion"].db
    chain_id, events = _chain(db)
    db.audit_events.update_one({"_id": events[3]["_id"]}, {"$set": {"actor_id": "someone else"}})
    status, out = _verify(capsys)
    assert status == 1 and "WRONG KEY" not in out
    assert out.count("content changed after it was written") == 1
    assert f"BREAK chain {chain_id} seq {events[3]['seq']}: content changed" in out


def test_every_event_and_anchor_altered_by_someone_without_the_key_is_listed_not_blamed_on_the_key(
        audited, anchors, capsys):
    """The attacker rewrites every event (their own hashes) and every anchor (their own MACs); the anchors still
    name the key they were written under, which is the verifier's: breaks, every one of them."""
    app, _, _ = audited
    db = app.extensions["companion"].db
    _rewrite_every_event(db)
    anchors.write_text(re.sub(r"mac=[0-9a-f]{64}", "mac=" + "0" * 64, anchors.read_text()))
    status, out = _verify(capsys)
    assert status == 1 and "WRONG KEY" not in out
    assert EITHER in _nothing_verifies(out) and "the trail was most likely rewritten" in out
    assert out.count("content changed after it was written") == db.audit_events.count_documents({})
    assert "whose MAC does not match" in out
