"""The OpenAPI document is valid and describes exactly the API the app serves."""

from __future__ import annotations

import re

import flask_smorest
from openapi_spec_validator import validate

_FRAMEWORK = ("api-docs.", "static", "swagger_ui_bundle")
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _is_web_page(app, rule) -> bool:
    """Pages for browsers: plain Flask blueprints outside /api/, which the API document does not list."""
    blueprint = app.blueprints.get(rule.endpoint.partition(".")[0]) if "." in rule.endpoint else None
    return (blueprint is not None and not isinstance(blueprint, flask_smorest.Blueprint)
            and not rule.rule.startswith("/api/"))


def served_operations(app) -> set[str]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(_FRAMEWORK) or _is_web_page(app, rule):
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", rule.rule)
        operations |= {f"{method} {path}" for method in rule.methods & _METHODS}
    return operations


def documented_operations(document: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, item in document["paths"].items()
            for method in item if method.upper() in _METHODS}


def test_the_openapi_document_is_valid_openapi(client):
    validate(client.get("/openapi.json").json)


def test_every_route_is_documented_and_every_documented_operation_is_served(app, client):
    document = client.get("/openapi.json").json
    served, documented = served_operations(app), documented_operations(document)
    assert served - documented == set(), "routes missing from /openapi.json"
    assert documented - served == set(), "documented operations that no route serves"
    assert len(documented) == len(served)


def test_error_responses_are_documented_as_problem_details(client):
    document = client.get("/openapi.json").json
    default_error = document["components"]["responses"]["DEFAULT_ERROR"]["content"]
    assert list(default_error) == ["application/problem+json"]
    assert default_error["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
