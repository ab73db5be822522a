"""Request ids, trace context, one log line and the HTTP metrics per request.

Every request gets the server's own ``request_id``, unique per request: the audit pairs a write's
intent with its outcome by it, and problem details carry it. What the caller sends is honoured beside it:

- ``X-Request-ID`` (1-128 characters of letters, digits and ``-_.:/+=@``): echoed unchanged in the
  answer's ``X-Request-ID`` and carried in every log line of the request as ``client_request_id``. It
  is not the audit's key, because a client that retries with the same id would make two requests one.
  Without it (or when it is malformed) the answer's ``X-Request-ID`` is the server's ``request_id``.
- ``traceparent`` (W3C Trace Context): its trace id is carried in every log line as ``trace_id``, with
  ``span_id``, a new id for this server's part of the trace, and echoed in ``traceresponse``
  (``00-<trace id>-<span id>-<flags>``, Trace Context level 2). A malformed one is ignored.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from flask import Flask, g, request

from companion import logs, metrics

log = logging.getLogger("companion.http")

CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9\-_.:/+=@]{1,128}$")
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
# Probes and scrapes come every few seconds: their lines are DEBUG, not INFO.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class TraceParent:
    trace_id: str
    parent_id: str
    flags: str


def parse_traceparent(header: str | None) -> TraceParent | None:
    """The trace context of a W3C ``traceparent`` header, or None when it is absent or malformed."""
    match = TRACEPARENT.fullmatch((header or "").strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    return TraceParent(trace_id, parent_id, flags)


def client_request_id(header: str | None) -> str | None:
    """The caller's X-Request-ID when it is well-formed, else None."""
    value = (header or "").strip()
    return value if CLIENT_REQUEST_ID.fullmatch(value) else None


@dataclass(frozen=True)
class Correlation:
    """The ids of one request."""

    request_id: str
    client_request_id: str | None
    trace: TraceParent | None
    span_id: str

    def log_fields(self) -> dict[str, str | None]:
        return {"request_id": self.request_id, "client_request_id": self.client_request_id,
                "trace_id": self.trace.trace_id if self.trace else None,
                "span_id": self.span_id if self.trace else None}


def _begin() -> Correlation:
    correlation = Correlation(uuid.uuid4().hex, client_request_id(request.headers.get("X-Request-ID")),
                              parse_traceparent(request.headers.get("traceparent")), secrets.token_hex(8))
    g.correlation = correlation
    g.log_context_token = logs.set_context(**correlation.log_fields())
    return correlation


def request_id() -> str:
    """This request's own id (set when the request began)."""
    correlation = g.get("correlation") or _begin()
    return correlation.request_id


def install(app: Flask) -> None:
    """Give every request its ids, echo them, log one line and count it. Install before anything else
    that adds after-request hooks, so that this one runs last and sees the final answer."""

    @app.before_request
    def begin_request():
        g.started_at = time.perf_counter()
        _begin()

    @app.after_request
    def finish_request(response):
        correlation: Correlation | None = g.get("correlation")
        if correlation is None:
            return response
        response.headers["X-Request-ID"] = correlation.client_request_id or correlation.request_id
        if correlation.trace is not None:
            trace = correlation.trace
            response.headers["traceresponse"] = f"00-{trace.trace_id}-{correlation.span_id}-{trace.flags}"
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        elapsed = time.perf_counter() - g.get("started_at", time.perf_counter())
        metrics.observe_request(request.method, route, response.status_code, elapsed)
        log.log(logging.DEBUG if route in QUIET_ROUTES else logging.INFO, "request", extra={
            "method": request.method, "route": route, "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 1)})
        return response

    @app.teardown_request
    def end_request(exc):
        token = g.pop("log_context_token", None)
        if token is not None:
            logs.reset_context(token)
