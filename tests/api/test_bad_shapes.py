"""Bad input of any shape answers a 4xx problem, on every route, signed in or not (issue 15, finding 7): JSON
nested a thousand levels deep and integers of 5,000 digits used to answer 500 with a traceback in the log."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.matrix_params import PROVIDERS
from tests.support.problems import assert_problem

DEEP = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
HUGE = "1" + "0" * 4999
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
CALLERS = (None, "patient_a", "caregiver_linked", "clinician_team", "admin", "gateway_a")


def test_the_login_refuses_a_deeply_nested_body_with_a_problem(client, caplog):
    with caplog.at_level(logging.ERROR):
        for body in (DEEP, DEEP_OBJECT, '{"email": ' + DEEP + ', "password": "x"}'):
            problem = assert_problem(client.post("/api/v1/auth/login", data=body, content_type="application/json"),
                                     400)
            assert "nested" in problem["detail"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_an_id_holding_two_slashes_is_no_route_not_a_redirect(client, world):
    """Found by schemathesis: an id such as "mongodb+srv://" put "//" in the path, which the router merged into one
    and answered with an HTML 308 to another path."""
    clinician = world["clinician_team"]
    for path in ("/api/v1/patients/mongodb%2Bsrv%3A%2F%2F/review/summary", "/api/v1/patients/a//review/summary",
                 "/api/v1//clinician/panel"):
        assert_problem(client.get(path, headers=clinician.headers), 404)


def test_a_five_thousand_digit_integer_is_a_problem_not_a_crash(client, world, caplog):
    patient = world["patient_a"]
    with caplog.at_level(logging.ERROR):
        login = client.post("/api/v1/auth/login", data='{"email": "a@b.c", "password": ' + HUGE + "}",
                            content_type="application/json")
        assert "number" in assert_problem(login, 400)["detail"]
        diary = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers,
                            data='{"client_entry_id": "e-000001", "recorded_at": "2026-01-01T00:00:00Z", "nrs": '
                                 + HUGE + "}", content_type="application/json")
        assert_problem(diary, 400)
        listed = client.get(f"/api/v1/patients/{patient.id}/alerts?limit={HUGE}", headers=patient.headers)
        assert_problem(listed, 422)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_half_a_character_in_a_text_is_a_422_naming_the_field_and_whole_ones_are_stored(client, world, caplog):
    """An app that cuts a note in the middle of an emoji sends a lone surrogate (JSON.stringify escapes it):
    no database stores it, so it is refused, naming the field, instead of a 500 the app would retry for ever."""
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/pain-entries"
    entry = '{"client_entry_id": "surrogate-%d", "recorded_at": "2026-11-30T08:00:00+00:00", "nrs": 6, ' \
            '"context": {"note": "%s"}}'
    with caplog.at_level(logging.ERROR):
        half = assert_problem(client.post(url, headers=patient.headers, data=entry % (1, "knee pain \\ud83d"),
                                          content_type="application/json"), 422)
        assert list(half["errors"]["json"]["context"]) == ["note"]
        sign_up = client.post("/api/v1/auth/signup", content_type="application/json", data=(
            '{"email": "new.person@example.org", "password": "a long enough password", "display_name": '
            '"Ana \\udc00", "time_zone": "UTC"}'))
        assert list(assert_problem(sign_up, 422)["errors"]["json"]) == ["display_name"]
        batch = client.post(f"{url}/batch", headers=patient.headers, content_type="application/json",
                            data='{"entries": [' + entry % (2, "fine") + ", " + entry % (3, "\\ud83d end") + "]}")
        assert assert_problem(batch, 422)["errors"]["json"]["entries"]["1"]["context"] == {"note": [
            "holds half of a character (a lone UTF-16 surrogate): send the whole character"]}
        whole = client.post(url, headers=patient.headers, data=entry % (4, "knee pain \\ud83d\\ude23"),
                            content_type="application/json")
        assert whole.status_code == 201 and whole.json["context"]["note"] == "knee pain \U0001f623"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_shape_check_is_linear_and_ignores_brackets_and_digits_inside_strings():
    from companion.http.bodies import MAX_DEPTH, shape_problem

    assert shape_problem(b'{"note": "' + b"[" * 5000 + b"0" * 5000 + b'"}') is None
    assert shape_problem(b'{"a": "\\"[[["}') is None
    assert shape_problem(b'{"a": "\\\n' + b"[" * (MAX_DEPTH + 1) + b'"}') is None  # any byte may be escaped
    assert shape_problem(("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()) is None
    assert "nested" in shape_problem(("[" * (MAX_DEPTH + 1)).encode())
    assert "number" in shape_problem(b"[" + b"9" * 41 + b"]")


def _scan_byte_by_byte(body: bytes) -> str | None:
    """The shape check as first written, one byte at a time: the reference the fast check is held to."""
    from companion.http.bodies import MAX_DEPTH, MAX_NUMBER_CHARS

    depth, in_string, escaped, run = 0, False, False, 0
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
            continue
        if byte in b"0123456789+-.eE":
            run += 1
            if run > MAX_NUMBER_CHARS:
                return "number"
            continue
        run = 0
        if byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return "nested"
        elif byte in b"]}":
            depth -= 1
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"\\", b",", b":", b" ", b"e",
                                           b"true", b"-", b".", b"\n"]),
                          st.binary(max_size=3), st.just(b"9" * 20), st.just(b"[" * 20)), max_size=120))
def test_the_fast_shape_check_finds_what_the_byte_by_byte_scan_finds(parts):
    from companion.http.bodies import shape_problem

    body = b"".join(parts)
    found, expected = shape_problem(body), _scan_byte_by_byte(body)
    assert (found is None) == (expected is None), (body, found, expected)
    if expected is not None and not (_scan_byte_by_byte(body.replace(b"[", b" ").replace(b"{", b" "))
                                     and _scan_byte_by_byte(body.translate(None, b"0123456789"))):
        assert expected in found, (body, found, expected)  # only one of the two problems: the same one


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("api-docs.", "static", "swagger_ui_bundle")):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


@pytest.mark.slow
def test_every_route_answers_bad_shapes_with_a_4xx(app, client, world, services, caplog):
    """Every rule and method, as nobody and as each kind of caller: a bad body is refused with a 4xx problem
    (before the view, so nothing changes), and a 5,000-digit query parameter never costs a 5xx."""
    values = {"patient_id": world["patient_a"].id}
    values.update({name: provide(client, world, services) for name, provide in PROVIDERS.items()})
    cells = sorted(_routes(app), key=lambda cell: (cell[1] == "DELETE", cell[0].rule))
    failures, checked = [], 0
    with caplog.at_level(logging.ERROR):
        for rule, method in cells:
            url = _PARAM.sub(lambda m: values[m.group(1)], rule.rule)
            for caller in CALLERS:
                headers = world[caller].headers if caller else {}
                sent = [("deep", {"data": DEEP_OBJECT}), ("huge", {"data": '{"n": ' + HUGE + "}"})]
                if method == "GET":
                    sent.append(("huge query", {"query_string": {k: HUGE for k in ("limit", "days", "offset",
                                                                                     "minutes", "since")}}))
                for what, kwargs in sent:
                    response = client.open(url, method=method, headers=headers, content_type="application/json",
                                           **kwargs)
                    checked += 1
                    status = response.status_code
                    cell = f"{method} {rule.rule} as {caller or 'anonymous'} with {what}: {status}"
                    if status >= 500:
                        failures.append(cell)
                    elif what != "huge query" and not 400 <= status < 500:
                        failures.append(cell + " (a bad body was not refused)")
                    elif status >= 400 and not rule.rule.startswith("/clinician") \
                            and response.mimetype != "application/problem+json":
                        failures.append(cell + " (not a problem)")
    assert checked > 600
    assert failures == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
