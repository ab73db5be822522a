"""Admission: which requests a web process takes on, so that floods and outages do not take everyone down.

Two rules, both answering a request they turn away with 503 problem details and a ``Retry-After`` before
it is authenticated or touches the database:

- **Gateway uploads have a budget of their own.** At most ``gateway_upload_concurrency`` gateway uploads
  (session records, dead letters; not the small unit-status reports) run at once in one web server: all its
  gunicorn worker processes together, which share a directory of lock files (``COMPANION_ADMISSION_DIR``,
  made by gunicorn.conf.py at each start); a server of one process (``flask run``, tests) counts its
  threads. One over that budget is answered at once, with a server-suggested delay drawn at random between
  1 and ``gateway_retry_spread_s`` seconds, so that many gateways reconnecting together (after an outage,
  say) come back spread out instead of together again. The other threads, and most of the database's
  time, stay free for patients, caregivers and clinicians. The gateway's uploader waits at least the
  ``Retry-After`` it is given (device_gateway.uploader.backoff_delay).
- **A database known to be down is not waited for** (each process keeps its own breaker). Every request
  holds a thread for the whole database budget (``db_timeout_ms``) when the database hangs; after
  ``db_breaker_failures`` consecutive requests failed to reach it, a one-second ping decides (a database
  that answers it is overloaded, not down, and requests keep going to it); if it does not answer, the
  breaker opens: requests that need the database are answered at once for a cool-down
  (``db_breaker_cooldown_s``, doubled on each failed probe up to 30 s). Then one request probes the
  database with a short ping (half-open): if it answers, everything flows again; if not, the breaker
  stays open. ``/healthz`` (liveness, no database) and the API documents are never turned away.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app, g, request

from companion import metrics
from companion.domain.errors import ServiceUnavailable

log = logging.getLogger(__name__)

EXTENSION = "companion_admission"
# Where the worker processes of one web server keep their shared gateway slots (set by gunicorn.conf.py).
SHARED_DIR_VARIABLE = "COMPANION_ADMISSION_DIR"
NEVER_TURNED_AWAY = ("api-docs.", "static", "swagger_ui_bundle", "health.Health", "metrics", "index")
# The gateways' bulk uploads; their unit-status reports are small and bounded, and not held back behind them.
GATEWAY_ENDPOINTS = ("ingestion.SessionRecords", "ingestion.DeadLetters")
MAX_COOLDOWN_S = 30.0
PROBE_TIMEOUT_S = 1.0


class DatabaseBreaker:
    """Closed (requests go to the database), open (they are answered at once until ``open_until``), or
    probing (one request pings the database; the others are still answered at once)."""

    def __init__(self, probe: Callable[[float], bool], *, failures: int = 2, cooldown_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.probe = probe
        self.failures_to_open = failures
        self.base_cooldown_s = cooldown_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.failures = 0
        self.open_until: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        return "closed" if self.open_until is None else ("probing" if self.probing else "open")

    def admit(self) -> None:
        """Let a request that needs the database through, or raise ServiceUnavailable while it is known down."""
        with self.lock:
            if self.open_until is None:
                return
            wait = self.open_until - self.clock()
            if wait > 0 or self.probing:
                raise self._turned_away(max(wait, 0.0))
            self.probing = True
        if not self._probe():
            with self.lock:
                self.probing = False
                self._open(longer=True)
                wait = self.cooldown_s
            raise self._turned_away(wait)
        with self.lock:
            self.probing, self.open_until, self.failures, self.cooldown_s = False, None, 0, self.base_cooldown_s
        log.warning("database reachable again: requests flow")

    def failed(self) -> None:
        """A request could not reach the database. At the threshold, a short ping decides: a database that
        answers it is slow (overloaded), not down, and is not turned away from; one that does not is."""
        with self.lock:
            self.failures += 1
            if self.open_until is not None or self.probing or self.failures < self.failures_to_open:
                return
            self.probing = True
        reachable = self._probe()
        with self.lock:
            self.probing = False
            if reachable:
                self.failures = 0
            else:
                self._open(longer=False)

    def _probe(self) -> bool:
        try:
            return self.probe(PROBE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - whatever went wrong, the database was not shown to answer
            log.exception("database probe failed")
            return False

    def succeeded(self) -> None:
        """A request was answered without a database outage."""
        if self.failures and self.open_until is None:
            with self.lock:
                self.failures = 0

    def _open(self, *, longer: bool) -> None:
        if longer:
            self.cooldown_s = min(self.cooldown_s * 2, MAX_COOLDOWN_S)
        self.open_until = self.clock() + self.cooldown_s
        metrics.DB_BREAKER_OPENED.inc()
        log.warning("database unreachable: answering 503 at once for %.0f s, then probing", self.cooldown_s)

    def _turned_away(self, wait: float) -> ServiceUnavailable:
        # Whole seconds (Retry-After), plus up to one more so that clients do not all come back together.
        return ServiceUnavailable("the database is known to be unreachable; try again after the delay given",
                                  retry_after_s=math.ceil(wait) + self.rng.randint(0, 1) or 1)


class ProcessSlots:
    """``limit`` slots for the threads of this process alone (a server of one process: ``flask run``, tests)."""

    def __init__(self, limit: int):
        self.slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> object | None:
        return True if self.slots.acquire(blocking=False) else None

    def release(self, _slot: object) -> None:
        self.slots.release()


class ServerSlots:
    """``limit`` slots shared by every worker process of one web server: slot i is an exclusive ``flock`` on
    the file ``gateway-upload-<i>.lock`` of ``directory`` (gunicorn.conf.py makes one per server start), held
    with a thread lock of this process beside it (a ``flock`` belongs to an open file, which every thread of
    the process shares). A process that dies holding a slot gives it back with its open files: a crash
    never leaks one. The files are opened in each process, after gunicorn's fork, never shared with it."""

    def __init__(self, directory: str | os.PathLike, limit: int, rng: random.Random | None = None):
        self.paths = [Path(directory) / f"gateway-upload-{i}.lock" for i in range(limit)]
        self.held: list[threading.Lock] = []  # made with the files, in each process
        self.rng = rng or random.Random()
        self.opening = threading.Lock()
        self.pid: int | None = None
        self.fds: list[int] = []

    def _files(self) -> list[int]:
        if self.pid != os.getpid():
            with self.opening:
                if self.pid != os.getpid():
                    # Made again if something cleaned it away (a long-lived server's temporary directory).
                    self.paths[0].parent.mkdir(parents=True, exist_ok=True)
                    self.fds = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in self.paths]
                    self.held = [threading.Lock() for _ in self.paths]
                    self.pid = os.getpid()
        return self.fds

    def acquire(self) -> int | None:
        fds = self._files()
        first = self.rng.randrange(len(fds))  # not always slot 0 first: fewer failed tries under load
        for slot in ((first + n) % len(fds) for n in range(len(fds))):
            if not self.held[slot].acquire(blocking=False):
                continue
            try:
                fcntl.flock(fds[slot], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.held[slot].release()
                continue
            return slot
        return None

    def release(self, slot: int) -> None:
        fcntl.flock(self.fds[slot], fcntl.LOCK_UN)
        self.held[slot].release()


class GatewayBudget:
    """At most ``limit`` gateway requests at once in this web server (every worker process of it together,
    when they share ``shared_dir``; this process alone otherwise); over it, a jittered Retry-After."""

    def __init__(self, limit: int, retry_spread_s: int, rng: random.Random | None = None,
                 shared_dir: str | os.PathLike | None = None):
        self.slots = ServerSlots(shared_dir, limit, rng) if shared_dir else ProcessSlots(limit)
        self.retry_spread_s = retry_spread_s
        self.rng = rng or random.Random()

    def take(self) -> object:
        """A slot (give it back with :meth:`give_back`), or ServiceUnavailable with a spread Retry-After."""
        slot = self.slots.acquire()
        if slot is None:
            metrics.GATEWAY_UPLOADS_TURNED_AWAY.inc()
            raise ServiceUnavailable("busy with other gateways' uploads; retry after the delay given",
                                     retry_after_s=self.rng.randint(1, self.retry_spread_s))
        return slot

    def give_back(self, slot: object) -> None:
        self.slots.release(slot)


class Admission:
    def __init__(self, breaker: DatabaseBreaker, gateways: GatewayBudget):
        self.breaker = breaker
        self.gateways = gateways


def admission() -> Admission:
    return current_app.extensions[EXTENSION]


def database_unreachable() -> None:
    """Called by the problem handler when a request could not reach the database."""
    current = current_app.extensions.get(EXTENSION)
    if current is not None:
        current.breaker.failed()


def install(app: Flask, probe: Callable[[float], bool], *, gateway_concurrency: int, gateway_retry_spread_s: int,
            breaker_failures: int, breaker_cooldown_s: float, shared_dir: str | None = None) -> None:
    """Install the rules; before authentication, so that what is turned away costs nothing. ``shared_dir``: the
    directory every worker process of this web server shares for the gateway budget (None: this process's)."""
    app.extensions[EXTENSION] = Admission(
        DatabaseBreaker(probe, failures=breaker_failures, cooldown_s=breaker_cooldown_s),
        GatewayBudget(gateway_concurrency, gateway_retry_spread_s, shared_dir=shared_dir))

    @app.before_request
    def admit():
        endpoint = request.endpoint
        if request.routing_exception is not None or endpoint is None or endpoint.startswith(NEVER_TURNED_AWAY):
            return None
        current = app.extensions[EXTENSION]
        current.breaker.admit()
        if endpoint.startswith(GATEWAY_ENDPOINTS):
            g.gateway_slot = current.gateways.take()
        return None

    @app.after_request
    def note_success(response):
        if response.status_code < 500:
            app.extensions[EXTENSION].breaker.succeeded()
        return response

    @app.teardown_request
    def give_back(_exc):
        slot = g.pop("gateway_slot", None)
        if slot is not None:
            app.extensions[EXTENSION].gateways.give_back(slot)
