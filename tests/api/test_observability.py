"""What an operator reads: JSON log lines with the request's ids and no health data, the caller's
X-Request-ID and traceparent honoured and echoed, Prometheus metrics that add up across gunicorn's worker
processes, and `GET /` pointing at the docs and the dashboard."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re

import httpx
import pytest

from companion.http.correlation import client_request_id, parse_traceparent
from companion.logs import CompanionJsonFormatter
from tests.support.ferretdb import ROOT
from tests.support.gunicorn import Gunicorn
from tests.support.records import session_record

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CANARY = "Qzxvy-knee-burning-after-fall"
RANGE = "?from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z"


@pytest.fixture
def log_lines():
    """Every line Companion's loggers write during the test, as the processes format them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CompanionJsonFormatter())
    logger = logging.getLogger("companion")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lambda: [line for line in stream.getvalue().splitlines() if line]
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_every_log_line_is_json_with_the_request_ids_and_no_diary_text(client, world, log_lines):
    patient = world["patient_a"]
    response = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers={
        **patient.headers, "X-Request-ID": "app-7f3a", "traceparent": TRACEPARENT},
        json={"client_entry_id": "entry-0001", "nrs": 7, "recorded_at": "2026-03-02T09:00:00Z",
              "context": {"location": CANARY, "note": CANARY}})
    assert response.status_code == 201, response.json
    lines = [json.loads(line) for line in log_lines()]
    request_line = next(line for line in lines if line["message"] == "request" and line["method"] == "POST")
    assert request_line["route"] == "/api/v1/patients/<patient_id>/pain-entries"
    assert request_line["status"] == 201 and request_line["level"] == "INFO" and request_line["time"]
    assert (request_line["client_request_id"], request_line["trace_id"]) == ("app-7f3a", TRACE_ID)
    assert re.fullmatch(r"[0-9a-f]{32}", request_line["request_id"])
    assert CANARY not in "\n".join(log_lines())
    assert patient.email not in "\n".join(log_lines())


def _plain_digests(address: str) -> list[str]:
    """What a log line must not carry for ``address``: any prefix of a digest anyone can recompute from it."""
    return [hashlib.new(name, address.encode()).hexdigest()[:8] for name in ("sha256", "sha1", "md5")]


def test_a_failed_sign_in_names_the_account_by_a_keyed_pseudonym_that_lines_up_with_its_mail(
        client, world, log_lines):
    """H4: whoever holds the logs and a list of addresses cannot tell who failed to sign in (no plain digest of
    the address), yet an operator sees one account's repeated failures, and the mail sent to it, under one name."""
    newcomer = "newcomer.h4@example.org"
    assert client.post("/api/v1/auth/signup", json={"email": newcomer, "password": "correct horse battery",
                                                    "display_name": "Pat", "role": "patient",
                                                    "time_zone": "UTC"}).status_code == 202
    for address in (newcomer, " Newcomer.H4@example.org", world["patient_a"].email):
        assert client.post("/api/v1/auth/login", json={"email": address, "password": "wrong"}).status_code == 401
    lines = [json.loads(line) for line in log_lines()]
    failures = [line["account"] for line in lines if line["message"] == "login failed"]
    mailed = [line["to"] for line in lines if line["message"] in ("mail written", "mail sent")]
    assert len(failures) == 3 and failures[0] == failures[1] != failures[2]
    assert mailed == [failures[0]]
    text = "\n".join(log_lines())
    for address in (newcomer, world["patient_a"].email):
        assert address not in text
        assert not [d for d in _plain_digests(address) if d in text], "a plain digest of the address is logged"


def test_a_well_formed_request_id_is_echoed_and_the_audit_keeps_its_own(client, world, db):
    patient = world["patient_a"]
    answers = [client.get(f"/api/v1/patients/{patient.id}/pain-entries{RANGE}",
                          headers={**patient.headers, "X-Request-ID": "app-retry-1"}) for _ in range(2)]
    assert [a.headers["X-Request-ID"] for a in answers] == ["app-retry-1", "app-retry-1"]
    # Two requests with one caller id stay two requests in the audit, whose writes are paired by id.
    ids = {e["request_id"] for e in db.audit_events.find({"patient_ids": patient.id, "method": "GET"})}
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


@pytest.mark.parametrize("sent", ["", "has space", "x" * 129, "<script>", "a\nb"])
def test_a_malformed_request_id_is_replaced_by_the_servers_own(client, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent} if "\n" not in sent else {})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert client_request_id(sent) is None


def test_traceparent_trace_id_is_echoed_with_a_span_of_our_own(client):
    response = client.get("/healthz", headers={"traceparent": TRACEPARENT})
    version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert re.fullmatch(r"[0-9a-f]{16}", span_id) and span_id != "00f067aa0ba902b7"


@pytest.mark.parametrize("header", [
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    f"00-{TRACE_ID}-0000000000000000-01",  # all-zero parent
    f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # forbidden version
    f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper case
    f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has nothing after the flags
    "garbage",
])
def test_a_malformed_traceparent_is_ignored(client, header):
    assert parse_traceparent(header) is None
    assert "traceresponse" not in client.get("/healthz", headers={"traceparent": header}).headers


def test_a_later_version_of_traceparent_is_read_for_its_known_fields():
    assert parse_traceparent(f"01-{TRACE_ID}-00f067aa0ba902b7-01-more").trace_id == TRACE_ID


def test_metrics_count_requests_by_route_template(client, world):
    patient = world["patient_a"]
    assert client.get(f"/api/v1/patients/{patient.id}/pain-entries{RANGE}", headers=patient.headers).status_code == 200
    body = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'companion_http_requests_total\{method="GET",route="/api/v1/patients/<patient_id>/pain-entries",'
                     r'status="200"\} [1-9]', body)
    assert "companion_http_request_duration_seconds_bucket" in body
    assert patient.id not in body


def test_metrics_need_the_scrapers_token_when_one_is_set(settings_overrides):
    from companion import create_app

    app = create_app({**settings_overrides, "metrics_token": "scrape-" + "s" * 24})
    client = app.test_client()
    try:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-" + "s" * 24})
        assert ok.status_code == 200 and "companion_http_requests_total" in ok.get_data(as_text=True)
    finally:
        app.extensions["companion"].client.close()


def test_ingested_records_and_dead_letters_are_counted(client, world):
    def sample(name, labels=""):
        return _sample(client.get("/metrics").get_data(as_text=True), name, labels)

    before = {"records": sample("companion_dead_letters_total", 'kind="session_record"'),
              "gateway": sample("companion_dead_letters_total", 'kind="gateway_item"'),
              "held": sample("companion_session_records_held_total")}
    good, odd = session_record(world.a_device, 1), session_record(world.a_device, 2, duration_s=-5)
    nameless = {k: v for k, v in session_record(world.a_device, 3).items() if k != "device_serial"}
    response = client.post("/api/v1/gateway/session-records", headers=world["gateway_a"].headers,
                           json={"records": [good, odd, nameless]})
    assert response.status_code == 200, response.json
    assert {r["record_id"]: r["status"] for r in response.json["results"]} == {
        good["record_id"]: "created", odd["record_id"]: "created", nameless["record_id"]: "rejected"}
    reported = client.post("/api/v1/gateway/dead-letters", headers=world["gateway_a"].headers, json={"items": [
        {"id": 1, "device_serial": world.a_device, "reason": "bad checksum", "source": "unit", "payload": "00ff",
         "dead_at": "2026-01-01T00:00:00Z"}]})
    assert reported.status_code == 200, reported.json
    assert sample("companion_session_records_total", 'result="created"') >= 2
    assert sample("companion_session_records_held_total") == before["held"] + 1  # stored, kept out of figures
    assert sample("companion_dead_letters_total", 'kind="session_record"') == before["records"] + 1
    assert sample("companion_dead_letters_total", 'kind="gateway_item"') == before["gateway"] + 1


def _sample(body: str, name: str, labels: str) -> float:
    selector = rf"\{{{labels}\}}" if labels else ""
    match = re.search(rf"^{name}{selector} (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_the_root_points_to_the_docs_and_the_dashboard(client):
    answer = client.get("/")
    assert answer.status_code == 200 and answer.json["docs"] == "/docs" and answer.json["dashboard"] == "/clinician"
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.mimetype == "text/html" and 'href="/docs"' in page.get_data(as_text=True)
    assert 'href="/clinician"' in page.get_data(as_text=True)


def test_the_root_links_everything_the_readme_says_it_links(app, client):
    """README: "`GET /` links everything below", /metrics among them; it did not link the metrics."""
    readme = (ROOT / "README.md").read_text()
    said = re.search(r"^- `GET /` links everything below\..*?(?=^- )", readme, re.MULTILINE | re.DOTALL).group(0)
    paths = set(re.findall(r"`(/[a-z.]+)`", said)) | set(re.findall(r"127\.0\.0\.1:5000(/[a-z.]+)", said))
    assert {"/docs", "/openapi.json", "/healthz", "/readyz", "/metrics"} <= paths
    answer, page = client.get("/").json, client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert paths <= set(answer.values()), paths - set(answer.values())
    assert all(f'href="{path}"' in page for path in paths)


def test_every_route_the_readme_names_as_declared_is_one_the_app_declares(app):
    """The log example named /api/v1/patients/<patient_id>/diary, a route that does not exist."""
    declared = {rule.rule for rule in app.url_map.iter_rules()}
    named = set()
    for place in (ROOT / "README.md", ROOT / "companion" / "metrics.py"):
        named |= set(re.findall(r"(/api/v1/[A-Za-z0-9_/<>-]*<[a-z_]+>[A-Za-z0-9_/<>-]*)", place.read_text()))
    assert named and named - declared == set()


def test_metrics_add_up_across_gunicorn_workers_and_gunicorn_logs_json(mongo_uri, db_name, tmp_path):
    server = Gunicorn({"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "COMPANION_SECRET_KEY": "m" * 48},
                      workers=3, log_dir=tmp_path)
    server.start(wait_s=120)
    try:
        for _ in range(60):  # a connection each, so that the requests spread over the workers
            assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        # Whichever worker answers the scrape counts every worker's requests.
        for _ in range(3):
            body = httpx.get(f"{server.url}/metrics", timeout=30).text
            assert _sample(body, "companion_http_requests_total", 'method="GET",route="/healthz",status="200"') == 60
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    assert sum("Booting worker" in line["message"] for line in lines) == 3
