"""Fair under floods and outages (companion.http.admission): gateway uploads over the server's budget (every
worker process of it together) are turned away at once with a spread Retry-After while patients' reads go
on; a database known to be down is not waited for (503 at once, Retry-After), and the API recovers by
itself when it is back."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from companion import create_app
from companion.http.admission import EXTENSION, DatabaseBreaker, GatewayBudget, ServerSlots
from tests.api.test_database_outage import own_server  # noqa: F401 - the fixture
from tests.conftest import FAST_PASSWORDS
from tests.support.mailbox import Mailbox, sign_up
from tests.support.records import session_record
from tests.support.world import PASSWORD

URL = "/api/v1/gateway/session-records"
SPREAD_S = 20
BREAKER_DETAIL = "the database is known to be unreachable; try again after the delay given"


@pytest.fixture
def settings_overrides(settings_overrides):
    return {**settings_overrides, "gateway_upload_concurrency": 1, "gateway_retry_spread_s": SPREAD_S}


def _upload(client, gateway, serial, first):
    return client.post(URL, json={"records": [session_record(serial, first + n) for n in range(3)]},
                       headers=gateway.headers)


def test_gateway_uploads_over_the_budget_get_a_spread_retry_after_while_patients_read(app, client, world, db):
    budget = app.extensions[EXTENSION].gateways
    held = budget.take()  # the process's only gateway slot, as a long upload holds it
    delays = []
    for attempt in range(12):
        refused = _upload(client, world["gateway_a"], world.a_device, 1 + 10 * attempt)
        assert refused.status_code == 503 and refused.mimetype == "application/problem+json"
        delays.append(int(refused.headers["Retry-After"]))
    assert all(1 <= d <= SPREAD_S for d in delays) and len(set(delays)) > 1  # spread, not all at once
    status = {"serial": world.a_device, "battery_pct": 80, "firmware": "1.2", "last_seen_at": "2026-03-01T10:00:00Z"}
    assert client.post("/api/v1/gateway/device-status", json={"devices": [status]},
                       headers=world["gateway_a"].headers).status_code == 204  # small reports are not held back
    patient = world["patient_a"]
    assert client.get(f"/api/v1/patients/{patient.id}/sessions", headers=patient.headers).status_code == 200
    assert client.get("/api/v1/auth/me", headers=patient.headers).status_code == 200
    assert db.session_records.count_documents({}) == 0  # nothing turned away was taken
    budget.give_back(held)
    bad = client.post(URL, json={"records": "not a list"}, headers=world["gateway_a"].headers)
    assert bad.status_code == 422  # a failed upload gives its slot back too
    assert _upload(client, world["gateway_a"], world.a_device, 1).status_code == 200
    assert db.session_records.count_documents({}) == 3


def test_a_database_known_to_be_down_is_answered_at_once_then_the_api_recovers(own_server, mail_dir):  # noqa: F811
    app = create_app({"mongodb_uri": own_server.uri, "mongodb_db": "breaker", "secret_key": "b" * 48,
                      "db_timeout_ms": 1000, "db_breaker_failures": 2, "db_breaker_cooldown_s": 1,
                      "mail_dir": str(mail_dir), **FAST_PASSWORDS})
    client = app.test_client()
    breaker = app.extensions[EXTENSION].breaker
    signup = {"email": "p@example.org", "password": PASSWORD, "display_name": "P", "time_zone": "UTC"}
    assert sign_up(client, Mailbox(mail_dir), **signup).status_code == 201
    tokens = client.post("/api/v1/auth/login", json={"email": "p@example.org", "password": PASSWORD}).json
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    try:
        own_server.kill()
        waited = 0
        while breaker.state == "closed" and waited < 5:  # each of these holds a thread for the database budget
            assert client.get("/api/v1/auth/me", headers=headers).status_code == 503
            waited += 1
        assert waited == 2 and breaker.state == "open"
        for path in ("/api/v1/auth/me", "/readyz", "/api/v1/gateway/session-records"):
            answer = client.get(path, headers=headers) if path != URL else client.post(path, json={}, headers=headers)
            assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
            assert answer.json["detail"] == BREAKER_DETAIL and int(answer.headers["Retry-After"]) >= 1
            assert breaker.state == "open"  # answered without trying the database
        assert client.get("/healthz").status_code == 200  # liveness never needs the database
        own_server.start()
        deadline = time.monotonic() + 60
        while client.get("/api/v1/auth/me", headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover"
            time.sleep(0.2)
        assert breaker.state == "closed"
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["companion"].client.close()


@pytest.mark.parametrize(("answers_ping", "state"), [(True, "closed"), (False, "open")])
def test_the_breaker_opens_only_for_a_database_that_does_not_answer_a_ping(answers_ping, state):
    pings = []
    breaker = DatabaseBreaker(lambda timeout_s: pings.append(timeout_s) or answers_ping, failures=2, cooldown_s=5)
    breaker.failed()
    assert breaker.state == "closed" and pings == []
    breaker.failed()  # the threshold: a ping decides (slow is not down)
    assert breaker.state == state and len(pings) == 1


HOLDER = """
import sys, time
from companion.http.admission import ServerSlots
slot = ServerSlots(sys.argv[1], 1).acquire()
print("held" if slot is not None else "refused", flush=True)
time.sleep(600)
"""


def test_the_gateway_budget_is_one_for_every_worker_process_of_the_server_and_a_dead_holder_frees_its_slot(
        app, client, world, db, tmp_path):
    shared = tmp_path / "admission"
    shared.mkdir()
    # This app is one worker; a process of our own is another worker of the same server, holding the one slot.
    app.extensions[EXTENSION].gateways = GatewayBudget(1, SPREAD_S, shared_dir=shared)
    other_worker = subprocess.Popen([sys.executable, "-c", HOLDER, str(shared)], stdout=subprocess.PIPE, text=True,
                                    cwd=Path(__file__).resolve().parents[2])
    try:
        assert other_worker.stdout.readline().strip() == "held"
        for attempt in range(3):
            refused = _upload(client, world["gateway_a"], world.a_device, 1 + 10 * attempt)
            assert refused.status_code == 503 and 1 <= int(refused.headers["Retry-After"]) <= SPREAD_S
        assert db.session_records.count_documents({}) == 0
    finally:
        other_worker.kill()  # SIGKILL: the holder gives nothing back itself
        other_worker.wait(timeout=30)
    assert _upload(client, world["gateway_a"], world.a_device, 1).status_code == 200  # its slot died with it
    assert db.session_records.count_documents({}) == 3


def test_server_slots_are_shared_by_processes_and_by_the_threads_of_one(tmp_path):
    ours, theirs = ServerSlots(tmp_path, 2), ServerSlots(tmp_path, 2)  # two processes' views: two open files each
    first, second = ours.acquire(), theirs.acquire()
    assert {first, second} == {0, 1}
    assert ours.acquire() is None and theirs.acquire() is None
    theirs.release(second)
    again = ours.acquire()
    assert again == second  # the free slot, whoever freed it
    assert ours.acquire() is None  # a slot this process holds is not taken twice by its own threads
    ours.release(first)
    ours.release(again)
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda _: ours.acquire(), range(8)))
    assert sorted(s for s in taken if s is not None) == [0, 1] and taken.count(None) == 6
