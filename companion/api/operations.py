"""The routes for people and programs that arrive without the docs: ``GET /`` (where everything is) and
``GET /metrics`` (Prometheus). Plain Flask routes, outside the OpenAPI document: they are not the app's API."""

from __future__ import annotations

import hmac

from flask import Flask, Response, jsonify, render_template_string, request

from companion import metrics
from companion.domain.errors import Unauthorized
from companion.http import services
from companion.http.security import public

LINKS = {
    "docs": "/docs",
    "openapi": "/openapi.json",
    "dashboard": "/clinician",
    "health": "/healthz",
    "ready": "/readyz",
}
INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Companion</title></head>
<body><main><h1>Companion</h1>
<p>The API for people living with chronic pain who use a wearable TENS unit.</p>
<ul>
<li><a href="{{ links.docs }}">API documentation</a> (<a href="{{ links.openapi }}">OpenAPI document</a>)</li>
<li><a href="{{ links.dashboard }}">Clinician dashboard</a></li>
<li><a href="{{ links.health }}">Liveness</a> and <a href="{{ links.ready }}">readiness</a></li>
</ul></main></body></html>
"""


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
