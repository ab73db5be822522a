"""Response headers every answer of the API carries, and the client's address behind trusted proxies.

- ``X-Content-Type-Options: nosniff`` on everything: a browser never guesses a type (a JSON error read
  as HTML, a CSV as script).
- ``Cache-Control: no-store`` on every answer that is not a static asset: nearly all of them carry
  health data or credentials, and no browser, proxy or phone cache may keep them. A view that sets its
  own Cache-Control keeps it.
- No ``Content-Type`` on a 204: it has no content (a client that parses by the type would try to read JSON).
- ``Location`` on every 201: the view names the new object's URL where the API has one; otherwise it is the
  URL the request created it at (the collection, or the object itself for a PUT).
- The API description's page (``/docs``, Swagger UI) gets a Content-Security-Policy allowing only its own
  scripts: the bundle served from ``/docs-assets/`` and the page's one inline script, by its hash.

The clinician pages (companion.web) set their own, stricter headers.

The client's address: with ``COMPANION_TRUSTED_PROXIES=n`` (n > 0), Werkzeug's ProxyFix takes the address
from the n-th ``X-Forwarded-For`` entry from the right (the one the nearest trusted proxy saw) and the
scheme from ``X-Forwarded-Proto``; with 0 (the default) forwarded headers are ignored and the address is the
socket's. Throttling and the audit trail both use it (:func:`companion.http.security.client_address`).
"""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

STATIC_ENDPOINTS = ("swagger_ui_bundle", "web.static_file")
DOCS_ENDPOINT = "api-docs.openapi_swagger_ui"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def docs_policy(page: bytes) -> str:
    """The Content-Security-Policy of the API description's page: its own files and its inline scripts."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
                      for script in _INLINE_SCRIPT.findall(page))
    return ("default-src 'none'; script-src 'self' " + hashes + "; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")


def trust_proxies(app: Flask, count: int) -> None:
    """Read the client's address and scheme from ``count`` trusted proxies' forwarded headers (0: none)."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=0, x_port=0, x_prefix=0)


def install(app: Flask) -> None:
    @app.after_request
    def protective_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.endpoint not in STATIC_ENDPOINTS and "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        if response.status_code == 201:
            response.headers.setdefault("Location", request.path)
        if response.status_code == 204:
            response.headers.pop("Content-Type", None)
        if request.endpoint == DOCS_ENDPOINT and response.status_code == 200:
            response.headers["Content-Security-Policy"] = docs_policy(response.get_data())
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Referrer-Policy"] = "no-referrer"
        return response
