"""Every route × every kind of caller, generated from the app's URL map.

Clinician pages (outside /api) sign in with a session cookie instead of a bearer token and are held to
the same rules. Callers: patient A and B, a caregiver linked to A and one linked to nobody, a clinician on A's team
and one on another team, a gateway bound to A and one bound to B, an admin. Objects in the URL belong
to patient A. Unrelated callers must get 404 (no existence oracle) and nothing of A's; callers whose
role the route does not declare get 403; related callers are never refused as if A did not exist. Every status
an API route answers is one its operation declares (not only as `default`).
"""

from __future__ import annotations

import re

import pytest

from companion import create_app
from companion.clock import now
from companion.http.security import PUBLIC, WEB_ENDPOINTS, declared_roles
from companion.store.web_sessions import WebSessions
from tests.conftest import FAST_PASSWORDS
from tests.support.matrix_params import PROVIDERS
from tests.support.world import build_world

RELATED = {"patient_a", "caregiver_linked", "clinician_team", "gateway_a"}
UNRELATED = {"patient_b", "caregiver_unlinked", "clinician_other", "gateway_b"}
CALLERS = sorted(RELATED | UNRELATED | {"admin"})
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_FRAMEWORK = ("api-docs.", "static", "swagger_ui_bundle")


@pytest.fixture(scope="module")
def matrix_app(mongo_uri, mongo_client):
    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": "authz_matrix", "secret_key": "m" * 48,
                      **FAST_PASSWORDS})
    yield app
    app.extensions["companion"].client.close()
    mongo_client.drop_database("authz_matrix")


@pytest.fixture(scope="module")
def matrix_world(matrix_app):
    client = matrix_app.test_client()
    return client, build_world(client, matrix_app.extensions["companion"])


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(_FRAMEWORK):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_declares_roles(matrix_app):
    undeclared = [f"{m} {r.rule}" for r, m in routes(matrix_app) if not declared_roles(matrix_app, r.endpoint, m)]
    assert undeclared == []


def test_every_path_parameter_has_a_provider(matrix_app):
    missing = {arg for rule, _ in routes(matrix_app) for arg in rule.arguments} - set(PROVIDERS) - {"patient_id"}
    assert missing == set(), "add providers to tests/support/matrix_params.py"


def _url(rule, values):
    return _PARAM.sub(lambda m: values[m.group(1)], rule.rule)


def _declared(spec, rule, method) -> set[str]:
    """The statuses the operation serving ``method`` on ``rule`` declares in the OpenAPI document."""
    operation = spec["paths"][_PARAM.sub(lambda m: "{" + m.group(1) + "}", rule.rule)][method.lower()]
    return set(operation["responses"]) - {"default"}


def _open_page(app, services, person, url, method):
    """Call a clinician page as this person: a signed-in web session (cookie) and the form's CSRF token,
    so that only the authorization rules decide the answer."""
    token, session = WebSessions(services.db).start(person.id, person.role, stage="full", at=now())
    page_client = app.test_client()
    page_client.set_cookie("companion_web", token)
    return page_client.open(url, method=method, data={"csrf_token": session["csrf_token"]})


def _order(cell):
    (rule, method), caller = cell
    if rule.endpoint == "auth.Logout":
        return (4, rule.rule, caller)  # ends the caller's session: last of all
    # Reads first, then writes by callers who must be refused, then the related callers' writes,
    # deletions last, so that no cell changes what a later one sees.
    if method == "GET":
        return (0, rule.rule, caller)
    if caller not in RELATED:
        return (1, rule.rule, caller)
    return (3 if method == "DELETE" else 2, rule.rule, caller)


def test_authorization_matrix(matrix_app, matrix_world):
    client, world = matrix_world
    services = matrix_app.extensions["companion"]
    values = {"patient_id": world["patient_a"].id}
    for name, provider in PROVIDERS.items():
        values[name] = provider(client, world, services)
    secrets_of_a = [world["patient_a"].email, "Patient A"]
    spec = client.get("/openapi.json").json
    failures, checked = [], 0
    cells = [((rule, method), caller) for rule, method in routes(matrix_app) for caller in CALLERS]
    for (rule, method), caller in sorted(cells, key=_order):
        roles = declared_roles(matrix_app, rule.endpoint, method)
        if PUBLIC in roles:
            continue
        person = world[caller]
        if rule.endpoint.startswith(WEB_ENDPOINTS):
            response = _open_page(matrix_app, services, person, _url(rule, values), method)
        else:
            response = client.open(_url(rule, values), method=method, headers=person.headers, json={})
        status, body = response.status_code, response.get_data(as_text=True)
        checked += 1
        cell = f"{method} {rule.rule} as {caller}: {status}"
        if not rule.endpoint.startswith(WEB_ENDPOINTS) and str(status) not in _declared(spec, rule, method):
            failures.append(cell + " (a status the operation does not declare)")
        if status >= 500:
            failures.append(cell + " (server error)")
        elif person.role == "gateway" and rule.endpoint.startswith(WEB_ENDPOINTS):
            # A gateway has no account, so a page session in its name is no session: sign in first.
            if status != (302 if method == "GET" else 401):
                failures.append(cell + " (a gateway's page session: expected the way to sign in)")
        elif person.role not in roles:
            if status != 403:
                failures.append(cell + " (role not declared: expected 403)")
        elif caller in UNRELATED and "patient_id" in rule.arguments:
            if status != 404:
                failures.append(cell + " (unrelated: expected 404)")
        elif caller in RELATED and status == 404 and method != "DELETE":
            failures.append(cell + " (related caller told the object does not exist)")
        if caller in UNRELATED and any(s in body for s in secrets_of_a):
            failures.append(cell + " (response carries patient A's data)")
    assert checked > 50
    assert failures == []


def test_denied_cross_patient_reads_are_audited(client, world, db):
    a = world["patient_a"].id
    before = db.audit_events.count_documents({"patient_ids": a, "outcome": "denied"})
    response = client.get(f"/api/v1/patients/{a}", headers=world["caregiver_unlinked"].headers)
    assert response.status_code == 404
    denied = list(db.audit_events.find({"patient_ids": a, "outcome": "denied"}))
    assert len(denied) == before + 1
    assert denied[-1]["actor_id"] == world["caregiver_unlinked"].id
