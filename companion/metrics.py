"""Prometheus metrics (prometheus-client): what each process counts, and how it is scraped.

- **web** (gunicorn, several worker processes): prometheus-client's multiprocess mode. gunicorn.conf.py
  points ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker starts, each worker writes
  its samples there, and ``GET /metrics`` on any worker answers for all of them (a dead worker's live
  gauges are dropped by gunicorn's ``child_exit`` hook). Scrape the web service's ``/metrics`` on each
  host (or container) once.
- **worker** (the scheduler): one process, scraped on its own port (``COMPANION_WORKER_METRICS_PORT``,
  9101 by default, ``0`` to turn it off), on the address ``COMPANION_BIND`` names (127.0.0.1 when unset: a
  container whose metrics another one scrapes sets 0.0.0.0, as compose.yaml does), and with
  ``COMPANION_METRICS_TOKEN`` set only for a scraper sending it as a bearer token (401 otherwise), as the web's.

Labels are routes as declared (``/api/v1/patients/<patient_id>/review/diary``), job ids and outcome words, never
ids of people, so the number of series stays bounded and no metric reveals anyone.

The services do not import this module: they report what happened through
:class:`companion.services.telemetry.Telemetry`, and :class:`PrometheusTelemetry` is the implementation
the composition root gives them.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    multiprocess,
)

log = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# -- web --
HTTP_REQUESTS = Counter("companion_http_requests", "HTTP requests answered, by route, method and status",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("companion_http_request_duration_seconds", "Time to answer an HTTP request",
                          ["method", "route"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SESSION_RECORDS = Counter("companion_session_records", "TENS session records received from gateways, by result "
                          "(created, duplicate, rejected)", ["result"])
SESSION_RECORDS_HELD = Counter("companion_session_records_held", "TENS session records stored but held back from "
                               "the figures until resolved (a time or content finding)")
GATEWAY_UPLOADS_TURNED_AWAY = Counter("companion_gateway_uploads_turned_away", "Gateway requests answered 503 "
                                      "because the process's gateway budget was in use (companion.http.admission)")
DB_BREAKER_OPENED = Counter("companion_db_breaker_opened", "Times the database breaker opened: requests answered "
                            "503 at once until a probe reaches the database (companion.http.admission)")
# -- worker --
JOB_RUNS = Counter("companion_job_runs", "Scheduled job runs, by job and outcome (ok, error, skipped: not the "
                   "leader, missed: later than its grace time)", ["job", "outcome"])
JOB_DURATION = Histogram("companion_job_duration_seconds", "Time a job run took", ["job"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
JOB_LAG = Gauge("companion_job_lag_seconds", "How late the latest run of a job started after its scheduled time",
                ["job"], multiprocess_mode="max")
JOB_LAST_SUCCESS = Gauge("companion_job_last_success_timestamp_seconds", "When a job last finished without error "
                         "(Unix time)", ["job"], multiprocess_mode="max")
WORKER_LEADER = Gauge("companion_worker_leader", "1 while this worker holds the leader lease",
                      multiprocess_mode="max")
WORKER_HEARTBEAT = Gauge("companion_worker_heartbeat_timestamp_seconds", "When this worker last wrote its "
                         "heartbeat (Unix time)", multiprocess_mode="max")
OUTBOX_DEPTH = Gauge("companion_outbox_depth", "Notifications in the outbox waiting to be sent (due or retrying)",
                     multiprocess_mode="max")
NOTIFICATIONS_SETTLED = Counter("companion_notifications_settled", "Notifications settled after a round of sends, "
                                "by state (sent: counted once, in the round a phone first got it; scheduled: to "
                                "be retried; expired, failed, withdrawn)", ["state"])
# -- both: what was given up on for good --
DEAD_LETTERS = Counter("companion_dead_letters", "Items given up on for good: notifications that failed or "
                       "expired undelivered, session records rejected, items a gateway could not decode",
                       ["kind"])


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request and its duration."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


def exposition() -> bytes:
    """This process's metrics in the Prometheus text format; under gunicorn, every worker's."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        """Scrapes are not logged (one every 15 s)."""


def _bearer_only(app, token: str):
    """``app`` for a caller sending ``Authorization: Bearer <token>``; 401 for any other."""
    expected = token.encode()

    def guarded(environ, start_response):
        scheme, _, sent = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"the metrics need the scraper's token (COMPANION_METRICS_TOKEN)\n"]
        return app(environ, start_response)

    return guarded


def serve(port: int, addr: str = "127.0.0.1", token: str | None = None) -> int | None:
    """Serve this process's metrics on ``addr``:``port`` (the worker), only to a scraper sending ``token`` as a
    bearer token when one is given; the port served (``port`` 0: any free one), or None, with a warning, when it
    cannot be."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    app = make_wsgi_app(registry)
    if token:
        app = _bearer_only(app, token)

    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    try:
        server = make_server(addr, port, app, server_class=Server, handler_class=_QuietHandler)
    except OSError as exc:
        log.warning("metrics not served: %s:%d: %s", addr, port, exc.strerror or exc)
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    served = server.server_address[1]
    log.info("metrics served", extra={"address": addr, "port": served, "token_required": bool(token)})
    return served


def mark_process_dead(pid: int) -> None:
    """Drop a dead gunicorn worker's live gauges (gunicorn.conf.py's child_exit)."""
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(pid)


class PrometheusTelemetry:
    """What the services report, as Prometheus metrics (see companion.services.telemetry)."""

    def records_received(self, result: str, count: int) -> None:
        if count:
            SESSION_RECORDS.labels(result).inc(count)
            if result == "rejected":
                DEAD_LETTERS.labels("session_record").inc(count)

    def records_held(self, count: int) -> None:
        if count:
            SESSION_RECORDS_HELD.inc(count)

    def gateway_dead_letters(self, count: int) -> None:
        if count:
            DEAD_LETTERS.labels("gateway_item").inc(count)

    def notifications_settled(self, state: str, count: int) -> None:
        if count:
            NOTIFICATIONS_SETTLED.labels(state).inc(count)
            if state in ("failed", "expired"):
                DEAD_LETTERS.labels("notification").inc(count)

    def outbox_depth(self, depth: int) -> None:
        OUTBOX_DEPTH.set(depth)
