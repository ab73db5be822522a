"""Hygiene (issue 15, finding 9): answers that carry health data are never cached nor sniffed, the API description
page runs only its own scripts, the clinician's name search stays out of the access log, a caregiver without
leave to read free text sees none of it, the development run listens on this machine only and keeps its
secrets to its user, and the client's address is the one a trusted proxy saw (finding 4)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from companion import create_app
from tests.conftest import FAST_PASSWORDS
from tests.support.gunicorn import Gunicorn
from tests.support.matrix_params import PROVIDERS
from tests.support.world import make_user

ROOT = Path(__file__).resolve().parents[2]
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def test_every_answer_of_the_api_is_no_store_and_nosniff(app, client, world, services):
    """Every GET of the API, as the patient, the care team and the gateway: no cache may keep it."""
    values = {"patient_id": world["patient_a"].id}
    values.update({name: provide(client, world, services) for name, provide in PROVIDERS.items()})
    checked = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not rule.rule.startswith("/api/"):
            continue
        url = _PARAM.sub(lambda m: values[m.group(1)], rule.rule)
        for caller in ("patient_a", "clinician_team", "gateway_a", None):
            response = client.get(url, headers=world[caller].headers if caller else {})
            assert response.headers["X-Content-Type-Options"] == "nosniff", url
            assert "no-store" in response.headers["Cache-Control"], url
            response.close()  # a streamed download (the events CSV) ends in this request's context, as a server ends it
            checked += 1
    assert checked > 100
    # Errors too, and the health probes.
    assert client.get("/api/v1/no-such-thing").headers["Cache-Control"] == "no-store"
    assert client.get("/healthz").headers["X-Content-Type-Options"] == "nosniff"


def test_the_api_description_page_allows_only_its_own_scripts(client):
    page = client.get("/docs")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-eval'" not in policy
    scripts = re.findall(rb"<script>(.*?)</script>", page.get_data(), re.S)
    assert scripts, "the page's inline script is allowed by its hash"
    for script in scripts:
        assert f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


def test_a_caregiver_without_note_permission_sees_no_free_text_of_the_diary(client, world):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]  # granted alerts only, no notes
    entry = {"client_entry_id": "hygiene-entry-1", "recorded_at": "2026-11-29T09:00:00+00:00", "nrs": 6,
             "context": {"note": "Qzxvy note", "location": "Qzxvy lower back", "activity": "Qzxvy gardening"}}
    assert client.post(f"/api/v1/patients/{patient.id}/pain-entries", json=entry,
                       headers=patient.headers).status_code == 201
    seen = client.get(f"/api/v1/patients/{patient.id}/pain-entries?from=2026-11-01T00:00:00Z&to=2026-12-31T00:00:00Z",
                      headers=caregiver.headers)
    assert seen.status_code == 200
    assert "Qzxvy" not in seen.get_data(as_text=True)
    own = client.get(f"/api/v1/patients/{patient.id}/pain-entries?from=2026-11-01T00:00:00Z&to=2026-12-31T00:00:00Z",
                     headers=patient.headers)
    assert own.get_data(as_text=True).count("Qzxvy") == 3


@pytest.fixture
def logged_server(mongo_uri, db_name, tmp_path):
    gunicorn = Gunicorn({"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "COMPANION_SECRET_KEY": "h" * 48,
                         "COMPANION_PASSWORD_MEMORY_KIB": "1024"}, workers=1, log_dir=tmp_path)
    gunicorn.start()
    yield gunicorn
    gunicorn.stop()


def test_the_clinicians_name_search_stays_out_of_the_access_log(logged_server, mongo_uri, db_name):
    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "h" * 48, **FAST_PASSWORDS})
    clinician = make_user(app.test_client(), app.extensions["companion"], key="searching_doc", role="clinician")
    app.extensions["companion"].close()
    headers = {"Authorization": f"Bearer {clinician.token}"}
    answer = httpx.get(f"{logged_server.url}/api/v1/clinician/panel", params={"q": "Qzxvy Canarysson"},
                       headers={**headers, "Referer": f"{logged_server.url}/clinician/?q=Qzxvy+Canarysson"},
                       timeout=30)
    assert answer.status_code == 200
    request_id = answer.headers["X-Request-ID"]
    log = logged_server.log_path.read_text()
    # The one line per request is the app's (gunicorn's access log is off): the route's template, never the query.
    (line,) = [json.loads(line) for line in log.splitlines() if request_id in line and '"request"' in line]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/v1/clinician/panel", 200)
    assert "Qzxvy" not in log and "Canarysson" not in log


def test_the_development_run_listens_on_this_machine_only_and_keeps_its_files_private():
    procfile = (ROOT / "Procfile").read_text()
    # A platform routes to the web process from outside (so the Procfile listens on every address unless told
    # otherwise); the development run tells it this machine only.
    assert "--bind ${COMPANION_BIND:-0.0.0.0}:" in procfile  # noqa: S104
    script = (ROOT / "scripts" / "run-local.sh").read_text()
    assert "umask 077" in script.split("scripts/bootstrap.sh")[0]
    assert 'COMPANION_BIND="${COMPANION_BIND:-127.0.0.1}"' in script
    assert "chmod 600 var/dev-secret" in script and "chmod 700 var" in script


def test_the_address_behind_a_trusted_proxy_is_the_clients_in_the_audit(mongo_uri, db_name, world_of):
    behind = world_of(trusted_proxies=1)
    client, patient = behind["client"], behind["patient"]
    client.get(f"/api/v1/patients/{patient.id}", headers={**patient.headers,
                                                          "X-Forwarded-For": "198.51.100.23, 203.0.113.9"})
    direct = world_of(trusted_proxies=0)
    direct["client"].get(f"/api/v1/patients/{direct['patient'].id}",
                         headers={**direct["patient"].headers, "X-Forwarded-For": "198.51.100.23"})
    seen = behind["db"].audit_events.find_one({"actor_id": patient.id, "resource_type": "patient"})
    assert seen["client_ip"] == "203.0.113.9"  # the entry our one proxy added; the rest is the client's say-so
    ignored = direct["db"].audit_events.find_one({"actor_id": direct["patient"].id, "resource_type": "patient"})
    assert ignored["client_ip"] == "127.0.0.1"


@pytest.fixture
def world_of(mongo_uri, mongo_client, tmp_path):
    made = []

    def build(**overrides):
        name = f"proxy_{len(made)}_{tmp_path.name[-8:]}"
        app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": name, "secret_key": "p" * 48, **FAST_PASSWORDS,
                          **overrides})
        made.append((app, name))
        client = app.test_client()
        patient = make_user(client, app.extensions["companion"], key="proxied", role="patient")
        return {"client": client, "patient": patient, "db": app.extensions["companion"].db}

    yield build
    for app, name in made:
        app.extensions["companion"].close()
        mongo_client.drop_database(name)



def test_an_answer_with_no_content_claims_no_content_type(client, world):
    patient = world["patient_a"]
    answer = client.post("/api/v1/auth/logout", headers=patient.headers)
    assert answer.status_code == 204 and answer.get_data() == b""
    assert "Content-Type" not in answer.headers
    assert answer.headers["Cache-Control"] == "no-store"
