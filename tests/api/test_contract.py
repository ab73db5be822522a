"""The HTTP contract an app team relies on: names, open answers, paging, Location, dates, CORS, 401s, titles."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from companion import create_app

METHODS = ("get", "post", "put", "patch", "delete")
HTTP_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}")


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").json


def _operations(spec):
    return [(method, path, op) for path, item in spec["paths"].items() for method, op in item.items()
            if method in METHODS]


def _reachable(spec, start) -> set[str]:
    schemas, found, todo = spec["components"]["schemas"], set(), [start]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            if ref.startswith("#/components/schemas/") and name not in found:
                found.add(name)
                todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def test_every_operation_has_a_unique_snake_case_operation_id_and_a_tag(spec):
    ids = [op.get("operationId") for _, _, op in _operations(spec)]
    assert all(i and re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    assert all(op.get("tags") for _, _, op in _operations(spec))


def test_answers_accept_new_fields_and_requests_refuse_unknown_ones(spec):
    schemas = spec["components"]["schemas"]
    answers = _reachable(spec, [op.get("responses", {}) for _, _, op in _operations(spec)])
    requests = _reachable(spec, [op.get("requestBody", {}) for _, _, op in _operations(spec)])
    assert answers and requests and not answers & requests
    assert [n for n in answers if schemas[n].get("additionalProperties") is False] == []
    assert [n for n in requests if schemas[n].get("additionalProperties") is not False] == []


def test_every_201_documents_its_location(spec):
    created = [(m, p) for m, p, op in _operations(spec) if "201" in op["responses"]]
    assert created
    assert [(m, p) for m, p in created
            if "Location" not in spec["paths"][p][m]["responses"]["201"].get("headers", {})] == []


# The POSTs answering 201 that take no Idempotency-Key, and why a retry of each is safe without one.
CREATED_WITHOUT_A_KEY = {
    # Its own retry key is in the body: the same client_entry_id with the same content answers as the first time.
    "/api/v1/patients/{patient_id}/pain-entries",
    # Public: no caller to keep a key for. Asking again replaces the pending sign-up's code (the latest mail's
    # is the one that works); the code is single-use, so a retry of the confirmation cannot make a second account.
    "/api/v1/auth/signup",
    "/api/v1/auth/signup/confirm",
    # Answered with a secret (a gateway's), kept only as a hash: a kept answer would hold it in clear for a day.
    # The code is single-use, so a retry cannot pair a second gateway.
    "/api/v1/gateways/pair",
    # Answered with a code kept only as a hash. A retry makes another short-lived, single-use code (or replaces
    # the account's reset code): the one whose answer was lost is never used and nothing else is made.
    "/api/v1/patients/{patient_id}/pairing-codes",
    "/api/v1/admin/users/{user_id}/password-reset",
}


def test_every_post_that_creates_something_takes_an_idempotency_key(spec):
    """The API description promises it: a retry after a lost answer must not store the object twice."""
    creating = [(p, op) for m, p, op in _operations(spec) if m == "post" and {"201", "202"} & set(op["responses"])]
    without = {p for p, op in creating if "Idempotency-Key" not in {q.get("name") for q in op["parameters"]}}
    assert without == CREATED_WITHOUT_A_KEY


def test_idempotency_and_conditional_headers_are_documented(spec):
    reminders = spec["paths"]["/api/v1/patients/{patient_id}/reminders/{reminder_id}"]
    assert "If-Match" in {p.get("name") for p in reminders["patch"]["parameters"]}
    create = spec["paths"]["/api/v1/patients/{patient_id}/reminders"]["post"]
    assert "Idempotency-Key" in {p.get("name") for p in create["parameters"]}


def test_a_created_object_is_answered_with_its_location(client, world):
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "location-1", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 4})
    assert created.status_code == 201
    assert created.headers["Location"] == f"/api/v1/patients/{patient.id}/pain-entries/{created.json['id']}"
    assert client.get(created.headers["Location"], headers=patient.headers).status_code == 200


def test_a_list_cut_at_its_limit_says_so_and_links_the_rest(client, world):
    patient = world["patient_a"]
    now = datetime.now(UTC)
    for n in range(5):
        assert client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
            "client_entry_id": f"page-entry-{n}", "recorded_at": (now - timedelta(minutes=n)).isoformat(),
            "nrs": n}).status_code == 201
    query = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat(),
             "limit": 2}
    seen, page = [], client.get(f"/api/v1/patients/{patient.id}/pain-entries", query_string=query,
                                headers=patient.headers)
    while True:
        assert page.status_code == 200
        seen += [e["client_entry_id"] for e in page.json["items"]]
        if page.json["next"] is None:
            assert "Link" not in page.headers
            break
        assert page.headers["Link"] == f'<{page.json["next"]}>; rel="next"'
        page = client.get(page.json["next"], headers=patient.headers)
    assert sorted(seen) == [f"page-entry-{n}" for n in range(5)]


def test_a_change_feed_links_its_next_page_while_it_has_more(client, world):
    patient = world["patient_a"]
    for n in range(3):
        client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
            "client_entry_id": f"feed-entry-{n}", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 1})
    first = client.get(f"/api/v1/patients/{patient.id}/pain-entries/changes?limit=2", headers=patient.headers).json
    assert first["has_more"] and first["next"].endswith(f"cursor={first['next_cursor']}")
    last = client.get(first["next"], headers=patient.headers).json
    assert not last["has_more"] and last["next"] is None and last["next_cursor"]


def test_a_range_from_a_moment_to_the_same_moment_is_an_empty_range(client, world):
    patient = world["patient_a"]
    moment = datetime.now(UTC).isoformat()
    answer = client.get(f"/api/v1/patients/{patient.id}/sessions", query_string={"from": moment, "to": moment},
                        headers=patient.headers)
    assert answer.status_code == 200 and answer.json == {"items": [], "next": None}


def test_a_patch_without_a_body_is_refused(client, world):
    patient = world["patient_a"]
    answer = client.patch(f"/api/v1/patients/{patient.id}", headers=patient.headers)
    assert answer.status_code == 422 and answer.json["title"] == "Unprocessable content"


def test_every_status_has_one_title(client, world):
    patient = world["patient_a"]
    by_webargs = client.get(f"/api/v1/patients/{patient.id}/sessions?limit=0", headers=patient.headers)
    by_a_rule = client.post(f"/api/v1/patients/{patient.id}/practice", headers={
        **patient.headers, "Idempotency-Key": "no"}, json={"item_slug": "x"})
    assert by_webargs.status_code == by_a_rule.status_code == 422
    assert by_webargs.json["title"] == by_a_rule.json["title"]


def test_401_tells_the_client_how_to_authenticate(client):
    missing = client.get("/api/v1/auth/me")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="companion"'
    bad = client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-token"})
    assert bad.headers["WWW-Authenticate"] == 'Bearer realm="companion", error="invalid_token"'


def test_no_answer_writes_a_date_as_an_http_date(client, world):
    patient = world["patient_a"]
    client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": "CTU-DATE1"}, headers=patient.headers)
    for path in ("auth/me", f"patients/{patient.id}", f"patients/{patient.id}/gateways",
                 f"patients/{patient.id}/devices", f"patients/{patient.id}/today", f"patients/{patient.id}/caregivers",
                 f"patients/{patient.id}/reminders", f"patients/{patient.id}/progress/streak"):
        answer = client.get(f"/api/v1/{path}", headers=patient.headers)
        assert answer.status_code == 200, path
        assert not HTTP_DATE.search(answer.get_data(as_text=True)), path


def test_options_answers_the_allowed_methods_without_cors_by_default(client):
    answer = client.options("/api/v1/auth/me", headers={"Origin": "https://app.example.org",
                                                        "Access-Control-Request-Method": "GET"})
    assert answer.status_code == 204
    assert "GET" in answer.headers["Allow"]
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_cors_answers_only_the_configured_origins(settings_overrides):
    app = create_app({**settings_overrides, "cors_origins": ("https://app.example.org",)})
    try:
        client = app.test_client()
        preflight = client.options("/api/v1/auth/me", headers={"Origin": "https://app.example.org",
                                                               "Access-Control-Request-Method": "GET"})
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        listed = client.get("/api/v1/auth/me", headers={"Origin": "https://app.example.org"})
        assert listed.status_code == 401
        assert listed.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
        assert "ETag" in listed.headers["Access-Control-Expose-Headers"]
        other = client.get("/api/v1/auth/me", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        assert "Origin" in other.headers["Vary"]
    finally:
        app.extensions["companion"].client.close()


def _strict_schemas():
    from companion.http.schemas import StrictSchema

    found, todo = set(), [StrictSchema]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_rule_across_fields_is_documented(spec):
    ruled = [s for s in _strict_schemas()  # StrictSchema's own check of each date's years is no rule across fields
             if {hook[0] for hook in s._hooks.get("validates_schema", ())} - {"refuse_dates_out_of_time"}]
    assert len(ruled) >= 10
    assert [s.__name__ for s in ruled if not getattr(getattr(s, "Meta", None), "rules", None)] == []
    text = str(spec)
    missing = [s.__name__ for s in ruled if s.Meta.rules not in text]
    assert missing == [], "a rule across fields is not in the OpenAPI document"


def test_every_header_the_kernel_reads_or_writes_is_documented(spec):
    components = spec["components"]
    assert {"X-Request-ID", "X-Server-Time", "traceresponse", "Cache-Control"} <= set(components["headers"])
    assert components["responses"]["SIGN_IN_REQUIRED"]["headers"]["WWW-Authenticate"]
    assert components["responses"]["DATABASE_UNAVAILABLE"]["headers"]["Retry-After"]
    for method, path, op in _operations(spec):
        names = {p.get("name") or p.get("$ref", "").rsplit("/", 1)[-1] for p in op.get("parameters", [])}
        assert {"XRequestId", "Traceparent"} <= names, (method, path)
        for status, answer in op["responses"].items():
            if "$ref" not in answer:
                assert "X-Request-ID" in answer["headers"], (method, path, status)
            if status in ("429", "503") and "$ref" not in answer:
                assert "Retry-After" in answer["headers"], (method, path, status)
        if "Idempotency-Key" in names:  # its 409 answered while the key is in use tells when to come back
            assert "Retry-After" in op["responses"]["409"]["headers"], (method, path)
        if op.get("security") != []:
            assert op["responses"]["401"] == {"$ref": "#/components/responses/SIGN_IN_REQUIRED"}, (method, path)
    create = spec["paths"]["/api/v1/patients/{patient_id}/reminders"]["post"]
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    login = spec["paths"]["/api/v1/auth/login"]["post"]
    assert login["responses"]["429"] == {"$ref": "#/components/responses/WAIT_AND_RETRY"}


def test_answers_carry_the_documented_headers(client, world):
    answer = client.get("/api/v1/auth/me", headers={**world["patient_a"].headers, "X-Request-ID": "app-42",
                                                    "traceparent": f"00-{'a' * 32}-{'b' * 16}-01"})
    assert answer.headers["X-Request-ID"] == "app-42"
    assert answer.headers["traceresponse"].startswith(f"00-{'a' * 32}-")
    assert datetime.fromisoformat(answer.headers["X-Server-Time"].replace("Z", "+00:00"))


def test_every_nullable_nested_object_accepts_null_and_the_object_under_a_strict_oas30_validator(spec):
    """OAS 3.0.3: `nullable` only adds null to a `type` in its own Schema Object, and an `allOf` of a non-nullable
    object refuses null whatever sits beside it; strict validators read the document so."""
    from openapi_schema_validator import OAS30Validator

    checked = set()
    for name, schema in spec["components"]["schemas"].items():
        for field, prop in (schema.get("properties") or {}).items():
            branches = [b for key in ("allOf", "anyOf", "oneOf") for b in prop.get(key, [])]
            refs = [b["$ref"] for b in branches if "$ref" in b]
            if refs and "nullable" in str(prop):
                validator = OAS30Validator({**prop, "components": spec["components"]})
                assert validator.is_valid(None), (name, field, prop)
                assert not validator.is_valid({}) or not spec["components"]["schemas"][refs[0].rsplit("/", 1)[-1]].get(
                    "required"), (name, field, "accepts an object without the referenced schema's required fields")
                checked.add(field)
    assert {"resolution", "bpi", "flare"} <= checked


def test_every_example_in_the_document_matches_its_schema(spec):
    from openapi_schema_validator import OAS30Validator

    checked = []
    for method, path, op in _operations(spec):
        bodies = [("request", op.get("requestBody", {}).get("content", {}))]
        bodies += [(status, answer.get("content", {})) for status, answer in op["responses"].items()
                   if isinstance(answer, dict)]
        for where, content in bodies:
            for media in content.values():
                if "example" in media:
                    schema = {**media["schema"], "components": spec["components"]}
                    errors = list(OAS30Validator(schema).iter_errors(media["example"]))
                    assert errors == [], (method, path, where, [e.message for e in errors])
                    checked.append((method, path, where))
    assert len(checked) >= 10 and ("get", "/api/v1/patients/{patient_id}/sessions", "200") in checked


def test_the_cors_headers_are_described(spec):
    from companion.http.cors import ALLOWED_HEADERS, EXPOSED_HEADERS

    description = spec["info"]["description"]
    assert [h for h in ALLOWED_HEADERS + EXPOSED_HEADERS if f"`{h}`" not in description] == []


def test_the_document_written_on_first_use_is_the_one_flask_smorest_writes_at_registration(
        settings_overrides, monkeypatch):
    from companion.http.problems import ProblemApi

    lazy = create_app(settings_overrides)
    served = lazy.test_client().get("/openapi.json").json
    monkeypatch.setattr(ProblemApi, "DOCUMENT_ON_FIRST_USE", False)
    eager = create_app(settings_overrides)
    assert eager.test_client().get("/openapi.json").json == served
    assert len(served["paths"]) > 50 and "get_index" in str(served["paths"]["/"])
    for app in (lazy, eager):
        app.extensions["companion"].client.close()
