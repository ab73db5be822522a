"""The routes for people and programs that arrive without the docs: ``GET /`` (where everything is) and
``GET /metrics`` (Prometheus). Plain Flask routes (not the app's API, no blueprint), described in the OpenAPI
document by :func:`document` so that an operator finds them there too."""

from __future__ import annotations

import hmac

from flask import Flask, Response, jsonify, render_template_string, request

from companion import metrics
from companion.domain.errors import Unauthorized
from companion.http import services
from companion.http.openapi import QUERY_IGNORED
from companion.http.security import public

LINKS = {
    "docs": "/docs",
    "openapi": "/openapi.json",
    "dashboard": "/clinician",
    "health": "/healthz",
    "ready": "/readyz",
    "metrics": "/metrics",
}
INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Companion</title></head>
<body><main><h1>Companion</h1>
<p>The API for people living with chronic pain who use a wearable TENS unit.</p>
<ul>
<li><a href="{{ links.docs }}">API documentation</a> (<a href="{{ links.openapi }}">OpenAPI document</a>)</li>
<li><a href="{{ links.dashboard }}">Clinician dashboard</a></li>
<li><a href="{{ links.health }}">Liveness</a> and <a href="{{ links.ready }}">readiness</a></li>
<li><a href="{{ links.metrics }}">Prometheus metrics</a></li>
</ul></main></body></html>
"""


INDEX_ANSWER = {
    "type": "object", "required": ["name", "api", *LINKS],
    "properties": {"name": {"type": "string"}, "api": {"type": "string", "description": "the API's base path"},
                   **{name: {"type": "string", "description": f"where the {name} is"} for name in LINKS}},
}


def document(app: Flask, spec) -> None:
    """Describe ``GET /`` and ``GET /metrics`` in the OpenAPI document (tag ``operations``)."""
    spec.tag({"name": "operations", "description": "Where things are, and the Prometheus metrics"})
    spec.components.security_scheme("metricsToken", {
        "type": "http", "scheme": "bearer", "description": "COMPANION_METRICS_TOKEN, when the operator sets one"})
    spec.path(rule=next(app.url_map.iter_rules("index")), operations={"get": {
        "operationId": "get_index", "tags": ["operations"], "security": [], QUERY_IGNORED: True,
        "summary": "Where the docs and the dashboard are: JSON for a program, a page for a browser (Accept: "
                   "text/html first).",
        "responses": {"200": {"description": "the links", "content": {
            "application/json": {"schema": INDEX_ANSWER, "example": {"name": "Companion API", "api": "/api/v1",
                                                                     **LINKS}},
            "text/html": {"schema": {"type": "string"}}}}},
    }})
    spec.path(rule=next(app.url_map.iter_rules("metrics")), operations={"get": {
        "operationId": "get_metrics", "tags": ["operations"], "security": [{}, {"metricsToken": []}], QUERY_IGNORED: True,
        "summary": "Prometheus metrics of every web worker on this host (Prometheus text exposition format): requests "
                   "and latencies, outbox depth, job runs and lag, ingestion counts, dead letters. With "
                   "COMPANION_METRICS_TOKEN set, only for a scraper sending it as a bearer token (else 401).",
        "responses": {"200": {"description": "the exposition", "content": {
            metrics.CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
    }})


def register(app: Flask) -> None:
    @app.get("/", endpoint="index")
    @public
    def index():
        """Where the docs and the dashboard are: a page for a browser, JSON for a program."""
        # A browser asks for HTML first; curl's */* and an API client get JSON.
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return render_template_string(INDEX_PAGE, links=LINKS)
        return jsonify({"name": "Companion API", "api": "/api/v1", **LINKS})

    @app.get("/metrics", endpoint="metrics")
    @public
    def metrics_exposition():
        """Prometheus metrics of every web worker on this host; with COMPANION_METRICS_TOKEN set, only
        for a scraper that sends it as a bearer token."""
        expected = services().settings.metrics_token
        if expected:
            scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected.encode()):
                raise Unauthorized("the metrics need the scraper's token")
        return Response(metrics.exposition(), mimetype=None, content_type=metrics.CONTENT_TYPE)
