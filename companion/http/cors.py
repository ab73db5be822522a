"""CORS for the web pages of an allow-list of origins (``COMPANION_CORS_ORIGINS``); none by default.

Native apps need no CORS; a web app (a PWA registering a web push token, say) does. Credentials travel in
the ``Authorization`` header, never in cookies, so no ``Access-Control-Allow-Credentials``: a page of another
origin can only use a token it already holds. An origin outside the list gets no CORS header at all and the
browser refuses the answer; the server's answer to the request itself does not change.

``OPTIONS`` on any route answers 204 with ``Allow`` (the route's methods), and for a listed origin the
preflight headers: the methods, the request headers this API reads, and how long a browser may cache them.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "If-Match", "If-None-Match",
                   "X-Request-ID", "traceparent")
EXPOSED_HEADERS = ("ETag", "Location", "Link", "Retry-After", "Idempotent-Replayed", "X-Request-ID",
                   "traceresponse", "WWW-Authenticate", "X-Server-Time")
PREFLIGHT_MAX_AGE_S = 600


def _route_methods(app: Flask) -> list[str]:
    return sorted(app.url_map.bind_to_environ(request.environ).allowed_methods())


def install(app: Flask, origins: tuple[str, ...]) -> None:
    allowed = frozenset(origins)

    @app.before_request
    def answer_options():
        if request.method != "OPTIONS" or request.routing_exception is not None:
            return None
        methods = _route_methods(app)
        response = Response(status=204)
        response.headers["Allow"] = ", ".join(methods)
        origin = request.headers.get("Origin")
        if origin in allowed and request.headers.get("Access-Control-Request-Method"):
            response.headers["Access-Control-Allow-Methods"] = ", ".join(m for m in methods if m != "OPTIONS")
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        return response

    @app.after_request
    def allow_listed_origin(response):
        origin = request.headers.get("Origin")
        if allowed:
            response.vary.add("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        return response
