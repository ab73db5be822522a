"""Bad input gets a 4xx problem-details answer and changes nothing in the database."""

from __future__ import annotations

import logging

import pytest

from tests.support.problems import assert_problem
from tests.support.world import PASSWORD


def snapshot(db):
    return {name: sorted(map(str, db[name].find({}, {"_id": 1}))) for name in db.list_collection_names()
            if name not in ("audit_events", "rate_counters")}


VALID_SIGNUP = {"email": "new@example.org", "password": PASSWORD, "display_name": "New", "time_zone": "UTC"}

BAD_SIGNUPS = {
    "unknown field": {**VALID_SIGNUP, "is_admin": True},
    "server-owned field": {**VALID_SIGNUP, "_id": "chosen"},
    "wrong type": {**VALID_SIGNUP, "display_name": 12},
    "operator in value": {**VALID_SIGNUP, "email": {"$ne": None}},
    "operator key": {**VALID_SIGNUP, "$where": "1"},
    "dotted key": {**VALID_SIGNUP, "a.b": 1},
    "unknown zone": {**VALID_SIGNUP, "time_zone": "Mars/Olympus"},
    "the server's own zone": {**VALID_SIGNUP, "time_zone": "localtime"},
    "a leap-second zone": {**VALID_SIGNUP, "time_zone": "right/Europe/London"},
    "too long": {**VALID_SIGNUP, "display_name": "x" * 101},
    "role escalation": {**VALID_SIGNUP, "role": "admin"},
}


@pytest.mark.parametrize("case", sorted(BAD_SIGNUPS))
def test_bad_signup_is_refused_and_stores_nothing(client, db, case):
    before = snapshot(db)
    assert_problem(client.post("/api/v1/auth/signup", json=BAD_SIGNUPS[case]), 422)
    assert snapshot(db) == before


def test_malformed_json_is_a_400_problem(client, db):
    before = snapshot(db)
    response = client.post("/api/v1/auth/signup", data='{"email": ', content_type="application/json")
    assert_problem(response, 400)
    assert snapshot(db) == before


def test_a_body_over_one_mebibyte_is_a_413_problem(client, db):
    before = snapshot(db)
    huge = '{"email": "' + "a" * (1024 * 1024 + 10) + '"}'
    assert_problem(client.post("/api/v1/auth/signup", data=huge, content_type="application/json"), 413)
    assert snapshot(db) == before


def test_unknown_route_and_wrong_method_are_problems(client):
    assert_problem(client.get("/api/v1/no-such-thing"), 404)
    assert_problem(client.delete("/healthz"), 405)


def test_operator_injection_in_login_does_not_log_in(client, world):
    response = client.post("/api/v1/auth/login", json={"email": "patient_a@example.org", "password": {"$ne": None}})
    assert_problem(response, 422)
    response = client.post("/api/v1/auth/login", json={"email": {"$gt": ""}, "password": "x"})
    assert_problem(response, 422)


def test_operator_injection_in_query_string_is_refused_and_changes_nothing(client, world, db):
    patient = world["patient_a"]
    before = snapshot(db)
    injected = client.get(f"/api/v1/patients/{patient.id}?_id[$ne]=x&patient_id[$gt]=", headers=patient.headers)
    assert_problem(injected, 422)
    assert set(injected.json["errors"]["query"]) == {"_id[$ne]", "patient_id[$gt]"}
    assert "display_name" not in injected.json
    assert snapshot(db) == before


def test_unknown_query_parameters_are_refused_not_ignored(client, world):
    patient, stranger = world["patient_a"], world["patient_b"]
    # A route with no query parameters at all: a misspelt one is named, not ignored.
    today = client.get(f"/api/v1/patients/{patient.id}/today?form=2026-01-01", headers=patient.headers)
    assert_problem(today, 422)
    assert today.json["errors"] == {"query": {"form": ["Unknown field."]}}
    # A route with a query schema: the parameters it does not name are refused beside the ones it does.
    week = client.get(f"/api/v1/patients/{patient.id}/progress/week?date=2026-03-02&dates=x", headers=patient.headers)
    assert_problem(week, 422)
    assert week.json["errors"] == {"query": {"dates": ["Unknown field."]}}
    assert client.get(f"/api/v1/patients/{patient.id}/progress/week?date=2026-03-02",
                      headers=patient.headers).status_code == 200
    # Who may not see the patient learns nothing from the query: the same 404 as without one.
    assert_problem(client.get(f"/api/v1/patients/{patient.id}/today?form=x", headers=stranger.headers), 404)
    # Signed out, the credentials come first.
    assert_problem(client.get(f"/api/v1/patients/{patient.id}/today?form=x"), 401)


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
def test_a_health_probe_with_a_cache_buster_is_answered_as_without_one(client, probe):
    """A load balancer's health check may add a query string it cannot be told to drop: a 422 to it would mark a
    healthy instance down. The probes ignore any, and say so."""
    plain = client.get(probe)
    assert plain.status_code == 200
    busted = client.get(f"{probe}?nocache=1733220000&x")
    assert busted.status_code == 200, busted.json
    assert busted.json["status"] == plain.json["status"]
    assert "query string is ignored" in client.get("/openapi.json").json["paths"][probe]["get"]["description"]


def test_profile_update_rejects_unknown_fields_and_changes_nothing(client, world, db):
    patient = world["patient_a"]
    before = db.users.find_one({"_id": patient.id})
    response = client.patch(f"/api/v1/patients/{patient.id}", json={"role": "admin", "display_name": "Hacked"},
                            headers=patient.headers)
    assert_problem(response, 422)
    assert db.users.find_one({"_id": patient.id}) == before


def test_response_guard_catches_a_leaked_password_hash():
    from tests.support.response_guard import forbidden_keys

    assert forbidden_keys({"items": [{"id": "1", "password_hash": "$argon2id$..."}]}) == {"password_hash"}
    assert forbidden_keys({"items": [{"id": "1", "display_name": "A"}]}) == set()


@pytest.mark.parametrize("query", [
    "pain-entries?from=0001-01-01T00:00:00%2B14:00&to=0001-01-02T00:00:00%2B00:00",
    "pain-entries?from=9999-12-31T00:00:00-14:00&to=9999-12-31T23:59:59-14:00",
    "progress/week?date=9999-12-31",
    "progress/week?date=0001-01-01",
    "adherence/summary?as_of=0001-01-01",
])
def test_a_date_at_the_ends_of_the_calendar_is_a_422_naming_it_not_a_500(client, world, query, caplog):
    patient = world["patient_a"]
    with caplog.at_level(logging.ERROR):
        answer = client.get(f"/api/v1/patients/{patient.id}/{query}", headers=patient.headers)
        problem = assert_problem(answer, 422)
    named = query.split("?")[1].split("=")[0]
    assert named in problem["errors"]["query"], problem
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_bad_cursor_and_a_bad_idempotency_key_are_named_by_their_location(client, world):
    patient = world["patient_a"]
    bad_cursor = client.get(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, query_string={
        "from": "2026-11-01T00:00:00+00:00", "to": "2026-11-02T00:00:00+00:00", "cursor": "not-a-cursor"})
    assert list(assert_problem(bad_cursor, 422)["errors"]["query"]) == ["cursor"]
    feed = f"/api/v1/patients/{patient.id}/pain-entries/changes"
    assert client.get(feed, headers=patient.headers, query_string={"cursor": "0"}).status_code == 200
    assert_problem(client.get(feed, headers=patient.headers, query_string={"cursor": "0\n"}), 410)
    bad_key = client.post(f"/api/v1/patients/{patient.id}/reminders",
                          headers={**patient.headers, "Idempotency-Key": "short"}, json={})
    assert list(assert_problem(bad_key, 422)["errors"]["headers"]) == ["Idempotency-Key"]


def test_a_json_body_sent_as_text_plain_is_a_415_not_every_field_missing(client, world):
    patient = world["patient_a"]
    answer = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers,
                         data='{"client_entry_id": "plain-1", "recorded_at": "2026-11-30T08:00:00+00:00", "nrs": 4}',
                         content_type="text/plain")
    assert "application/json" in assert_problem(answer, 415)["detail"]
    login = client.post("/api/v1/auth/login", data="email=a@b.example&password=x",
                        content_type="application/x-www-form-urlencoded")
    assert_problem(login, 415)


def _newline_cases(world):
    patient, url = world["patient_a"], f"/api/v1/patients/{world['patient_a'].id}"
    entry = {"client_entry_id": "entry-000001", "recorded_at": "2026-11-30T08:00:00+00:00", "nrs": 4}
    return {
        "an install id in the URL": ("PUT", "/api/v1/me/push-tokens/phone-1%0A",
                                     {"token": "fcm-token-1", "platform": "android"}),
        "a device serial": ("POST", f"{url}/devices", {"serial": "CTU-1234\n"}),
        "a diary entry's own id": ("POST", f"{url}/pain-entries", {**entry, "client_entry_id": "entry-000001\n"}),
        "a rating's session record id": ("POST", f"{url}/pain-entries", {**entry, "phase": "after",
                                                                         "session_record_id": "CTU-A0001:7\n"}),
        "a quiet hour": ("PATCH", url, {"quiet_hours": {"start": "22:00\n", "end": "07:00"}}),
        "a language": ("PATCH", url, {"locale": "de-AT\n"}),
        "a library item": ("POST", f"{url}/practice", {"item_slug": "body-scan\n",
                                                       "started_at": "2026-11-30T08:00:00+00:00"}),
    }, patient


def test_a_value_with_a_trailing_newline_is_refused_and_stores_nothing(client, world, db):
    """``$`` matches before a final newline, so a pattern checked with re.match let "CTU-1234\\n" through and
    stored it: every pattern is now matched against the whole value."""
    cases, patient = _newline_cases(world)
    before = snapshot(db)
    answers = {what: client.open(url, method=method, json=body, headers=patient.headers)
               for what, (method, url, body) in cases.items()}
    assert {what: a.status_code for what, a in answers.items() if a.status_code != 422} == {}
    for answer in answers.values():
        assert_problem(answer, 422)
    assert snapshot(db) == before
    assert db.users.find_one({"_id": patient.id}).get("locale") is None
    # The same values without the newline are taken.
    assert client.put("/api/v1/me/push-tokens/phone-1", json={"token": "fcm-token-1", "platform": "android"},
                      headers=patient.headers).status_code == 200
    assert client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": "CTU-1234"},
                       headers=patient.headers).status_code == 201


def test_every_pattern_a_schema_checks_matches_the_whole_value():
    """marshmallow's own Regexp matches only the start of a value; a guard that no schema uses it."""
    import importlib
    import pkgutil

    from marshmallow import Schema, fields, validate

    import companion.api
    from companion.http.schemas import Pattern

    for module in pkgutil.iter_modules(companion.api.__path__):
        importlib.import_module(f"companion.api.{module.name}")

    def schemas(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from schemas(sub)

    def validators(field):
        yield from field.validators
        if isinstance(field, fields.List):
            yield from validators(field.inner)

    found, bare = 0, []
    for schema in schemas(Schema):
        if not schema.__module__.startswith("companion."):
            continue  # a test's own schema
        for name, field in schema._declared_fields.items():
            for check in validators(field):
                if isinstance(check, validate.Regexp):
                    found += 1
                    if type(check) is not Pattern:
                        bare.append(f"{schema.__module__}.{schema.__name__}.{name}")
    assert found >= 10
    assert bare == []


def test_a_nul_character_in_a_persons_text_is_a_422_naming_the_field_and_stores_nothing(client, world, db):
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}"
    cases = {
        ("POST", f"{url}/pain-entries", ("context", "note")): {
            "client_entry_id": "nul-000001", "recorded_at": "2026-11-30T08:00:00+00:00", "nrs": 4,
            "context": {"note": "knee\u0000pain"}},
        ("POST", f"{url}/reminders", ("title",)): {
            "kind": "custom", "title": "stretch\u0000", "schedule": {"type": "weekly", "times": ["09:00"]}},
        ("PATCH", url, ("display_name",)): {"display_name": "Ana\u0000"},
        ("POST", "/api/v1/auth/signup", ("display_name",)): {**VALID_SIGNUP, "display_name": "\u0000"},
    }
    before, name = snapshot(db), db.users.find_one({"_id": patient.id})["display_name"]
    for (method, route, field), body in cases.items():
        problem = assert_problem(client.open(route, method=method, json=body, headers=patient.headers), 422)
        errors = problem["errors"]["json"]
        for key in field:
            errors = errors[key]
        assert errors == ["may not hold a NUL character (\\u0000)"], (route, problem)
    assert_problem(client.get("/api/v1/library", query_string={"q": "body\u0000"}, headers=patient.headers), 422)
    # A phone's FCM token is printable ASCII: one holding a NUL (or a space, or a newline) is no token.
    for token in ("fcm\u0000token", "fcm token", "fcm-token\n", "fcm-tökén"):
        answer = client.put("/api/v1/me/push-tokens/phone-1", json={"token": token, "platform": "android"},
                            headers=patient.headers)
        assert list(assert_problem(answer, 422)["errors"]["json"]) == ["token"], token
    assert snapshot(db) == before
    assert db.users.find_one({"_id": patient.id})["display_name"] == name
