"""The database going away mid-flight: 503 problem details quickly, and recovery on its own."""

from __future__ import annotations

import time

import pymongo
import pytest

from companion import create_app
from companion.services.container import Services
from companion.settings import load_settings
from companion.store.db import make_client
from tests.conftest import FAST_PASSWORDS
from tests.support.ferretdb import FerretServer
from tests.support.mailbox import Mailbox, sign_up
from tests.support.world import PASSWORD, build_world


@pytest.fixture
def own_server(tmp_path):
    server = FerretServer(tmp_path / "ferretdb")
    server.start()
    yield server
    server.stop()


def test_killed_database_gives_503_and_the_api_recovers(own_server, mail_dir):
    app = create_app({"mongodb_uri": own_server.uri, "mongodb_db": "outage", "secret_key": "o" * 48,
                      "db_timeout_ms": 1000, "mail_dir": str(mail_dir), **FAST_PASSWORDS})
    client = app.test_client()
    signup = {"email": "p@example.org", "password": PASSWORD, "display_name": "P", "time_zone": "UTC"}
    assert sign_up(client, Mailbox(mail_dir), **signup).status_code == 201
    tokens = client.post("/api/v1/auth/login", json={"email": "p@example.org", "password": PASSWORD}).json
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    own_server.kill()
    for response in (client.get("/api/v1/auth/me", headers=headers), client.get("/readyz"),
                     client.post("/api/v1/auth/signup", json={**signup, "email": "q@example.org"})):
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"]
        assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200

    own_server.start()
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    app.extensions["companion"].client.close()
    with pymongo.MongoClient(own_server.uri) as fresh:
        assert fresh.outage.users.count_documents({"email": "q@example.org"}) == 0


def test_indexes_are_created_at_start_up_and_again_without_error(app, db):
    from companion.store.db import ensure_indexes

    ensure_indexes(db)
    assert db.users.index_information()["email_unique"]["unique"] is True
    assert db.audit_events.index_information()["chain_seq"]["unique"] is True
    assert db.care_links.index_information()["pair_unique"]["unique"] is True


def test_client_uses_durable_write_concern(services):
    assert services.client.write_concern.document == {"w": "majority", "j": True, "wtimeout": 5000}
    assert services.db.users.write_concern.document["w"] == "majority"


class _Reads(pymongo.monitoring.CommandListener):
    """The read commands a client sends, with the read concern each carries."""

    READS = ("find", "aggregate", "count", "distinct")

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def started(self, event) -> None:
        if event.command_name in self.READS:
            self.sent.append((event.command_name, event.command.get("readConcern")))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_reads_ask_for_majority_read_concern_and_the_clinicians_panel_and_review_are_answered_so(
        settings_overrides):
    """C1: what a clinician reads (their panel, a patient's review, the notes) is only what a majority of the
    replica set holds. FerretDB, which the tests run on, accepts the field (and ignores it: one node)."""
    settings = load_settings(settings_overrides)
    reads = _Reads()
    client = make_client(settings.mongodb_uri, event_listeners=[reads])
    assert client.read_concern.level == "majority"
    assert client[settings.mongodb_db].clinical_notes.read_concern.level == "majority"
    app = create_app(settings_overrides, services=Services(settings, client))
    try:
        http = app.test_client()
        world = build_world(http, app.extensions["companion"])
        clinician, patient = world["clinician_team"].headers, world["patient_a"].id
        reads.sent.clear()
        for url in ("/api/v1/clinician/panel", f"/api/v1/patients/{patient}/review/pain",
                    f"/api/v1/patients/{patient}/review/notes"):
            answer = http.get(url, headers=clinician)
            assert answer.status_code == 200, (url, answer.json)
    finally:
        client.close()
    assert {name for name, _ in reads.sent} >= {"find", "count"}
    assert [r for r in reads.sent if r[1] != {"level": "majority"}] == []
