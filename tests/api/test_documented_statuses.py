"""Each status a route answers is declared by its operation in /openapi.json (not only as `default`, which has
no Retry-After and tells a generated client nothing): an app team codes against the declared ones. Each test
provokes the status, then finds it declared."""

import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from companion import create_app
from companion.http.security import PUBLIC, WEB_ENDPOINTS, declared_roles
from tests.support.matrix_params import PROVIDERS
from tests.support.problems import assert_problem
from tests.support.records import session_record
from tests.support.world import build_world, make_user


def _declared(client, path, method):
    return set(client.get("/openapi.json").json["paths"][path][method]["responses"])


def test_recording_another_outcome_is_a_409_its_operation_declares(client, world, services):
    patient = world["patient_a"]
    occurrence = PROVIDERS["occurrence_id"](client, world, services)
    url = f"/api/v1/patients/{patient.id}/occurrences/{occurrence}"
    assert client.patch(url, headers=patient.headers, json={"status": "done"}).status_code == 200
    again = client.patch(url, headers=patient.headers, json={"status": "skipped", "skip_reason": "felt unwell"})
    assert again.status_code == 409
    assert "409" in _declared(client, "/api/v1/patients/{patient_id}/occurrences/{occurrence_id}", "patch")


def test_snoozing_a_recorded_occurrence_is_a_409_its_operation_declares(client, world, services):
    patient = world["patient_a"]
    occurrence = PROVIDERS["occurrence_id"](client, world, services)
    base = f"/api/v1/patients/{patient.id}/occurrences/{occurrence}"
    assert client.patch(base, headers=patient.headers, json={"status": "done"}).status_code == 200
    snoozed = client.post(f"{base}/snooze", headers=patient.headers, json={"minutes": 10})
    assert snoozed.status_code == 409
    assert "409" in _declared(client, "/api/v1/patients/{patient_id}/occurrences/{occurrence_id}/snooze", "post")


def test_a_stale_based_on_version_is_a_409_the_plan_put_does_not_declare(client, world):
    patient, clinician = world["patient_a"], world["clinician_team"]
    plan = {"tens": {"sessions_per_day": 2, "minutes_per_session": 30, "intensity_min_ma": 10,
                     "intensity_max_ma": 20, "start_date": "2026-01-01"}, "based_on_version": 7}
    answer = client.put(f"/api/v1/patients/{patient.id}/therapy-plan", headers=clinician.headers, json=plan)
    assert answer.status_code == 409, answer.json
    assert "409" in _declared(client, "/api/v1/patients/{patient_id}/therapy-plan", "put")


def test_an_admin_deactivating_themselves_is_a_409_its_operation_declares(client, world):
    admin = world["admin"]
    answer = client.post(f"/api/v1/admin/users/{admin.id}/deactivation", headers=admin.headers,
                         json={"reason": "testing"})
    assert answer.status_code == 409, answer.json
    assert "409" in _declared(client, "/api/v1/admin/users/{user_id}/deactivation", "post")


def test_creating_a_staff_account_with_an_email_in_use_is_a_409_its_operation_declares(client, world):
    answer = client.post("/api/v1/admin/users", headers=world["admin"].headers, json={
        "email": "clinician_team@example.org", "password": "a long enough password", "display_name": "Dup",
        "role": "clinician"})
    assert answer.status_code == 409 and "Retry-After" not in answer.headers, answer.json
    documented = _documented_409(client, "/api/v1/admin/users", "post")
    assert "email already exists" in documented["description"] and "not retry" in documented["description"]


def test_enrolling_or_confirming_an_enrolled_authenticator_is_a_409_each_operation_declares(client, services):
    make_user(client, services, key="doc", role="clinician")
    user_id = services.accounts.by_email("doc@example.org").id
    mfa_token = services.tokens.mfa_token(user_id, "clinician", password_checked_at=datetime.now(UTC))
    secret = client.post("/api/v1/auth/mfa/enrol", json={"mfa_token": mfa_token}).json["secret"]
    code = pyotp.TOTP(secret).now()
    assert client.post("/api/v1/auth/mfa/confirm", json={"mfa_token": mfa_token, "code": code}).status_code == 200
    for path, body in (("/api/v1/auth/mfa/enrol", {"mfa_token": mfa_token}),
                       ("/api/v1/auth/mfa/confirm", {"mfa_token": mfa_token, "code": code})):
        again = client.post(path, json=body)
        assert again.status_code == 409, (path, again.json)
        assert "authenticator already" in _documented_409(client, path, "post")["description"]


def _documented_409(client, path, method) -> dict:
    return client.get("/openapi.json").json["paths"][path][method]["responses"]["409"]


def test_binding_a_unit_bound_to_someone_else_is_a_409_without_retry_after_documented_as_no_use_retrying(
        client, world):
    patient_b = world["patient_b"]
    answer = client.post(f"/api/v1/patients/{patient_b.id}/devices", headers=patient_b.headers,
                         json={"serial": world.a_device})  # patient A's unit
    assert answer.status_code == 409 and "Retry-After" not in answer.headers, answer.json
    documented = _documented_409(client, "/api/v1/patients/{patient_id}/devices", "post")
    assert "bound to someone else" in documented["description"] and "not retry" in documented["description"]
    assert "Idempotency-Key" in documented["headers"]["Retry-After"]["description"]  # only that 409 carries it


def test_completing_a_completed_practice_otherwise_is_a_409_without_retry_after_documented_as_no_use_retrying(
        client, world, services):
    services.library.load()
    patient = world["patient_a"]
    base = f"/api/v1/patients/{patient.id}/practice"
    started = client.post(base, headers=patient.headers, json={
        "item_slug": "three-breath-reset", "started_at": (datetime.now(UTC) - timedelta(minutes=2)).isoformat()}).json
    assert client.post(f"{base}/{started['id']}/complete", headers=patient.headers, json={}).status_code == 200
    answer = client.post(f"{base}/{started['id']}/complete", headers=patient.headers, json={"minutes": 0.5})
    assert answer.status_code == 409 and "Retry-After" not in answer.headers, answer.json
    documented = _documented_409(client, "/api/v1/patients/{patient_id}/practice/{practice_id}/complete", "post")
    assert "completed already" in documented["description"] and "not retry" in documented["description"]


def test_a_409_that_never_carries_retry_after_does_not_document_it(client):
    pain_entries = _documented_409(client, "/api/v1/patients/{patient_id}/pain-entries", "post")
    assert "Retry-After" not in pain_entries["headers"]


def test_a_query_parameter_on_an_operation_without_any_is_a_422_its_operation_declares(client, world):
    patient = world["patient_a"]
    answer = client.get(f"/api/v1/patients/{patient.id}?fields=id", headers=patient.headers)
    assert answer.status_code == 422 and answer.json["errors"] == {"query": {"fields": ["Unknown field."]}}
    assert "422" in _declared(client, "/api/v1/patients/{patient_id}", "get")


CALLER_FOR = {"patient": "patient_a", "caregiver": "caregiver_linked", "clinician": "clinician_team",
              "gateway": "gateway_a", "admin": "admin"}
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def test_an_unknown_query_parameter_is_answered_with_a_status_every_operation_declares(app, client, world, services):
    """Every route, called by a caller it admits with a query parameter no operation takes: refused with a 422
    its operation declares (nothing runs), or, on the routes that ignore a query string (the probes, ``/``,
    ``/metrics``), answered as without it."""
    spec = client.get("/openapi.json").json
    values = {"patient_id": world["patient_a"].id,
              **{name: provide(client, world, services) for name, provide in PROVIDERS.items()}}
    wrong = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("api-docs.", "static", "swagger_ui_bundle", WEB_ENDPOINTS)):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = spec["paths"][_PARAM.sub(lambda m: "{" + m.group(1) + "}", rule.rule)][method.lower()]
            roles = declared_roles(app, rule.endpoint, method)
            caller = next((world[CALLER_FOR[r]] for r in sorted(roles) if r in CALLER_FOR), None)
            headers = caller.headers if caller is not None and PUBLIC not in roles else {}
            answer = client.open(_PARAM.sub(lambda m: values[m.group(1)], rule.rule) + "?not_a_parameter=1",
                                 method=method, headers=headers, json={})
            ignored = "query string is ignored" in operation.get("description", "")
            if str(answer.status_code) not in operation["responses"] or (answer.status_code != 422) != ignored:
                wrong.append(f"{method} {rule.rule}: {answer.status_code}")
    assert wrong == []


def test_making_pairing_codes_is_throttled_with_a_429_its_operation_declares(client, world):
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/pairing-codes"
    statuses = [client.post(url, headers=patient.headers).status_code for _ in range(15)]
    assert 429 in statuses, statuses
    assert "429" in _declared(client, "/api/v1/patients/{patient_id}/pairing-codes", "post")


def test_a_gateway_over_its_upload_rate_gets_a_429_its_operation_declares(settings_overrides):
    app = create_app({**settings_overrides, "gateway_uploads_per_min": 1})
    try:
        client = app.test_client()
        world = build_world(client, app.extensions["companion"])
        gateway = world["gateway_a"]
        body = {"records": [session_record(world.a_device, 1)]}
        statuses = [client.post("/api/v1/gateway/session-records", headers=gateway.headers, json=body).status_code
                    for _ in range(3)]
        assert 429 in statuses, statuses
        assert "429" in _declared(client, "/api/v1/gateway/session-records", "post")
        assert "429" in _declared(client, "/api/v1/gateway/dead-letters", "post")
    finally:
        app.extensions["companion"].client.close()


def test_a_body_over_the_limit_is_a_413_problem_every_operation_taking_a_body_declares(client, world):
    gateway, patient = world["gateway_a"], world["patient_a"]
    huge = '{"records": [], "pad": "' + "a" * (1024 * 1024 + 10) + '"}'
    for path, person, method in (("/api/v1/gateway/session-records", gateway, "post"),
                                 (f"/api/v1/patients/{patient.id}", patient, "patch")):
        answer = client.open(path, method=method, headers=person.headers, data=huge, content_type="application/json")
        assert_problem(answer, 413)
    paths = client.get("/openapi.json").json["paths"]
    taking_a_body = [(path, method) for path, item in paths.items() for method, operation in item.items()
                     if isinstance(operation, dict) and "requestBody" in operation]
    assert ("/api/v1/gateway/session-records", "post") in taking_a_body
    assert [(path, method) for path, method in taking_a_body if "413" not in paths[path][method]["responses"]] == []


DOWNLOADS = [
    ("/api/v1/patients/{patient_id}/data-export", "patient_a", "application/json"),
    ("/api/v1/patients/{patient_id}/exports/fhir", "clinician_team", "application/fhir+json"),
    ("/api/v1/patients/{patient_id}/exports/csv", "clinician_team", "text/csv"),
    ("/api/v1/patients/{patient_id}/exports/events", "clinician_team", "text/csv"),
    ("/api/v1/clinician/panel/export", "clinician_team", "text/csv"),
]


@pytest.mark.parametrize(("path", "caller", "media"), DOWNLOADS)
def test_a_download_documents_the_media_type_and_headers_it_answers(client, world, path, caller, media):
    answer = client.get(path.format(patient_id=world["patient_a"].id), headers=world[caller].headers)
    assert answer.status_code == 200 and answer.mimetype == media
    assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    documented = client.get("/openapi.json").json["paths"][path]["get"]["responses"]["200"]
    assert media in documented["content"], documented.get("content")
    assert "Content-Disposition" in documented["headers"]


def test_a_wrong_current_password_again_and_again_is_a_429_each_step_up_operation_declares(client, world):
    """The operations that ask for the current password share sign-in's throttle: a stolen session guessing it
    gets 429, which each of them declares (found from its body's ``current_password``)."""
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/closure"
    statuses = [client.post(url, headers=patient.headers, json={"current_password": f"wrong-{n}", "confirm": True}).status_code
                for n in range(12)]
    assert 429 in statuses, statuses
    for path in ("/api/v1/patients/{patient_id}/closure", "/api/v1/patients/{patient_id}/caregivers",
                 "/api/v1/caregiver/invitations/{invitation_id}/acceptance",
                 "/api/v1/patients/{patient_id}/invitations/{invitation_id}/acceptance", "/api/v1/auth/password"):
        assert "429" in _declared(client, path, "post"), path


def test_an_edit_that_loses_every_race_is_a_409_with_retry_after_its_operation_documents(client, world, services):
    """Another phone of the patient's saves the same entry between each of this edit's tries (a real write, each
    time): the edit writes nothing and is told to send the same request again, which then succeeds."""
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "contended-entry-1", "recorded_at": datetime.now(UTC).isoformat(),
        "nrs": 5}).json
    entries = services.diary.entries
    real_update = entries.update
    competitor = iter(range(1, 100))

    def another_phone_first(patient_id, entry_id, changes, at, **kwargs):
        turn = next(competitor)  # the other phone's save wins the race for this version (a version of its own)
        real_update(patient_id, entry_id, {"nrs": 7 + turn % 2}, at, seq=kwargs["seq"] + 10_000 + turn,
                    version=kwargs["version"])
        return real_update(patient_id, entry_id, changes, at, **kwargs)

    url = f"/api/v1/patients/{patient.id}/pain-entries/{created['id']}"
    entries.update = another_phone_first
    try:
        lost = client.patch(url, headers=patient.headers, json={"nrs": 3})
    finally:
        entries.update = real_update
    assert lost.status_code == 409, lost.json
    assert int(lost.headers["Retry-After"]) >= 1
    assert client.get(url, headers=patient.headers).json["nrs"] != 3  # nothing of this edit written
    assert client.patch(url, headers=patient.headers, json={"nrs": 3}).json["nrs"] == 3

    documented = _documented_409(client, "/api/v1/patients/{patient_id}/pain-entries/{entry_id}", "patch")
    assert "Retry-After" in documented["headers"] and "send the same request again" in documented["description"]


@pytest.mark.parametrize(("path", "method", "cause"), [
    ("/api/v1/admin/users/{user_id}", "delete", "cannot delete their own account"),
    ("/api/v1/admin/users/{user_id}/mfa", "delete", "cannot clear their own authenticator"),
    ("/api/v1/patients/{patient_id}/occurrences/{occurrence_id}", "patch", "another outcome is recorded"),
    ("/api/v1/patients/{patient_id}/therapy-plan", "put", "based_on_version is no longer the current plan"),
])
def test_a_409_documents_its_own_cause_not_the_bare_status_name(client, path, method, cause):
    documented = _documented_409(client, path, method)
    assert cause in documented["description"], documented


def test_only_the_409s_that_may_say_retry_document_retry_after(client):
    paths = client.get("/openapi.json").json["paths"]
    with_retry = {(path, method) for path, operations in paths.items() for method, operation in operations.items()
                  if method != "parameters" and "Retry-After" in (operation["responses"].get("409") or {}).get("headers", {})}
    assert ("/api/v1/patients/{patient_id}/pain-entries/{entry_id}", "delete") in with_retry
    assert ("/api/v1/patients/{patient_id}", "patch") in with_retry
    assert ("/api/v1/patients/{patient_id}/reminders/{reminder_id}", "patch") in with_retry
    assert ("/api/v1/admin/users/{user_id}/deactivation", "post") not in with_retry


def test_a_versioned_read_documents_its_304_and_the_etag_it_carries(client, world, services):
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/therapy-plan"
    first = client.get(url, headers=patient.headers)
    again = client.get(url, headers={**patient.headers, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.headers["ETag"] == first.headers["ETag"]
    documented = client.get("/openapi.json").json["paths"]["/api/v1/patients/{patient_id}/therapy-plan"]["get"][
        "responses"]["304"]
    assert "If-None-Match" in documented["description"] and "ETag" in documented["headers"]
