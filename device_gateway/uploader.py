"""Upload buffered session records to the API in batches, exactly once in effect.

Each batch carries the syncs waiting (the link's readings of units' clocks, which the server places sessions
with) and the gateway's clock reading, which the server checks against its own (its answer says whether it
vouches for it; the gateway's measure of the server's time is kept from every answer's ``X-Server-Time``,
see ``device_gateway/clock.py``).

Per item: ``created``, ``duplicate`` or ``discarded`` (recorded while the unit was worn by a patient whose
record has since been deleted) → the record leaves the queue, whatever its flags (a record the server
holds back from the figures is stored all the same: nothing is dead-lettered for its content);
``rejected`` (only a record with no identity to be stored under, a gateway fault) → dead-letter with the
server's reason, never retried. An item the response does not mention stays queued. A batch the API refuses
as a whole (400/403/413/422 in its problem details) is split in halves until the culprit is alone, and the
culprit is dead-lettered with the server's detail; the same statuses without problem details (a proxy, a
firewall, a captive portal in front of the API) are about the request, not a record: retried with backoff.
Dead letters are reported to the server (``/gateway/dead-letters``) once the queue is empty, and marked
reported only on the API's answer that it received them all (2xx JSON, ``received`` the number sent): a
proxy's redirect or page is retried like an outage. They can be listed and put back in the queue with
``device-gateway dead-letters``. 5xx, 429 and network errors keep everything
queued and back off: exponential with full jitter (1 s start, 5 min cap), never sooner than the
server's ``Retry-After``. Sleep is injectable so tests never sleep; by default a wait ends early on ``stop``.

The drain survives any single error the same way (a 5xx or a malformed answer while renewing the token, a
malformed answer to a batch, a full disk while the buffer deletes acknowledged records, a refused token, a
bug): it logs one line, notes the error in the gateway's health, backs off and tries again, so it resumes
by itself once the cause is gone. A record leaves the buffer only after the API acknowledged it, so a retry
can resend a batch but never lose one. Only what waiting cannot fix ends the drain: CredentialsRevoked and
BufferDamaged.
"""

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from device_gateway.api import ApiClient, ApiUnavailable, CredentialsRevoked, from_the_api
from device_gateway.buffer import PendingRecord, RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.errors import GatewayError
from device_gateway.health import UPLOAD, GatewayHealth, describe_error

logger = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_SYNCS = 200
MAX_REPORTS = 100
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 300.0
RETRY_AFTER_CAP_S = 3600.0  # the longest a Retry-After is obeyed for
_BATCH_CLIENT_ERRORS = {400, 403, 413, 422}
_ACKNOWLEDGED = {"created", "duplicate", "discarded"}  # the server needs nothing more of it


class RetryLater(GatewayError):
    """The server or the network is not taking records right now."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass
class UploadProgress:
    """Counts since the uploader started, passed to the progress callback after each batch."""

    sent: int = 0
    dead_lettered: int = 0
    remaining: int = 0
    retries: int = 0
    held: int = 0  # stored by the server but held back from the figures (its findings say why)
    syncs: int = 0
    reported: int = 0  # dead letters reported to the server


def backoff_delay(
    failures: int,
    rng: random.Random,
    retry_after_s: float | None = None,
    start_s: float = BACKOFF_START_S,
    cap_s: float = BACKOFF_CAP_S,
) -> float:
    """Full-jitter exponential backoff after ``failures`` consecutive failures, never below Retry-After (itself
    at most RETRY_AFTER_CAP_S: a date measured on a gateway clock that is years wrong must not park the uploads)."""
    ceiling = min(cap_s, start_s * 2 ** max(failures - 1, 0))
    delay = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def item_results(body: object) -> list[dict]:
    """The per-item results of a 200 answer to a batch; RetryLater if the body is not the contract's shape.

    An item without a string ``record_id`` and ``status`` is left out: its record stays queued.
    """
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise RetryLater("malformed answer from the API (no list of results)")
    return [
        item for item in results
        if isinstance(item, dict) and isinstance(item.get("record_id"), str) and isinstance(item.get("status"), str)
    ]


def check_report_taken(response: httpx.Response, sent: int) -> None:
    """RetryLater unless ``response`` is the API's answer that it took a report of ``sent`` dead letters: a 2xx
    JSON body whose ``received`` is ``sent``. A proxy's redirect (to a sign-in page, say) or its HTML page is
    below 400 too, and says nothing of the report: marked reported on it, the dead letters would never reach
    the server."""
    status = response.status_code
    if not 200 <= status < 300:
        raise RetryLater(f"dead-letter report: HTTP {status} is not the API's answer (something in front of it "
                         "answered)", parse_retry_after(response.headers.get("Retry-After")))
    if response.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
        raise RetryLater(f"dead-letter report: HTTP {status} without JSON is not the API's answer (something in "
                         "front of it answered)")
    try:
        body = response.json()
    except ValueError:
        raise RetryLater("dead-letter report: malformed answer from the API (not JSON)") from None
    received = body.get("received") if isinstance(body, dict) else None
    if type(received) is not int or received != sent:
        raise RetryLater(f"dead-letter report: the answer does not say the {sent} sent were received")


def problem_detail(response: httpx.Response) -> str:
    """The detail of the API's problem answer (or its status)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")
    return f"HTTP {response.status_code}"


class Uploader:
    """Drains the buffer to the API."""

    def __init__(
        self,
        buffer: RecordBuffer,
        api: ApiClient,
        batch_size: int = MAX_BATCH,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        progress: Callable[[UploadProgress], None] | None = None,
        health: GatewayHealth | None = None,
    ) -> None:
        self.buffer = buffer
        self.api = api
        self.batch_size = min(batch_size, MAX_BATCH)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.progress_callback = progress
        self.progress = UploadProgress()
        self.failures = 0
        self.health = health or GatewayHealth(None)
        self.clock_vouched: bool | None = None  # the server's last verdict on this gateway's clock
        self._reports_refused = False

    def upload_batch(self) -> int:
        """Upload the oldest pending batch (records and syncs); returns how many left the queue (raises
        RetryLater)."""
        syncs = self.buffer.pending_syncs(MAX_SYNCS)
        batch = self.buffer.pending(self.batch_size)
        if not batch and not syncs:
            return 0
        done = self._send(batch, syncs)
        self.progress.remaining = self.buffer.pending_count()
        if self.progress_callback:
            self.progress_callback(self.progress)
        return done

    def _send(self, batch: list[PendingRecord], syncs: list[dict]) -> int:
        try:
            response = self.api.post_records([record.payload for record in batch], syncs)
        except httpx.TransportError as exc:
            raise RetryLater(f"network: {type(exc).__name__}") from None
        except ApiUnavailable as exc:
            raise RetryLater(str(exc), parse_retry_after(exc.retry_after)) from None
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise RetryLater("malformed answer from the API (not JSON)") from None
            results = item_results(body)
            self._note_clock(body)
            return self._apply_syncs(syncs, body) + self._apply_results(batch, results)
        if status in _BATCH_CLIENT_ERRORS:
            if status != 413 and not from_the_api(response):
                # Not the API's answer about these records (every error of the API is problem details): a
                # proxy, firewall or captive portal refusing the request as a whole. Splitting would end with
                # every record dead-lettered; waiting loses nothing.
                raise RetryLater(f"HTTP {status} without the API's problem details (something in front of it "
                                 "refused the request)", parse_retry_after(response.headers.get("Retry-After")))
            return self._split(batch, syncs, status, problem_detail(response))
        raise RetryLater(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))

    def _note_clock(self, body: dict) -> None:
        clock = body.get("clock") if isinstance(body, dict) else None
        if not isinstance(clock, dict) or not isinstance(clock.get("vouched"), bool):
            return
        if clock["vouched"] != self.clock_vouched:
            offset = clock.get("gateway_offset_s")
            if clock["vouched"]:
                logger.info("the server vouches for this gateway's clock (offset %s s)", offset)
            else:
                logger.warning("the server does not vouch for this gateway's clock (offset %s s): units' clocks "
                               "are set only from the server's time as measured", offset)
        self.clock_vouched = clock["vouched"]

    def _apply_syncs(self, syncs: list[dict], body: dict) -> int:
        """Syncs the server has (or refused as malformed, which waiting cannot fix) leave the queue."""
        if not syncs:
            return 0
        answers = body.get("syncs") if isinstance(body.get("syncs"), list) else []
        sent = {s["sync_id"] for s in syncs}
        done = [a["sync_id"] for a in answers if isinstance(a, dict) and a.get("sync_id") in sent
                and a.get("status") in _ACKNOWLEDGED]
        refused = [(a["sync_id"], str(a.get("reason") or "rejected")) for a in answers
                   if isinstance(a, dict) and a.get("sync_id") in sent and a.get("status") == "rejected"]
        settled = self.buffer.mark_syncs_sent(done) + self.buffer.dead_letter_syncs(refused)
        self.progress.syncs += settled
        return settled

    def _apply_results(self, batch: list[PendingRecord], results: list[dict]) -> int:
        in_batch = {record.record_id for record in batch}
        acknowledged = [r["record_id"] for r in results if r.get("status") in _ACKNOWLEDGED and r.get("record_id") in in_batch]
        self.progress.held += sum(1 for r in results if r.get("held") is True and r.get("record_id") in in_batch)
        rejected = [
            (r["record_id"], str(r.get("reason") or "rejected"))
            for r in results
            if r.get("status") == "rejected" and r.get("record_id") in in_batch
        ]
        sent = self.buffer.mark_sent(acknowledged)
        dead = self.buffer.dead_letter(rejected)
        self.progress.sent += sent
        self.progress.dead_lettered += dead
        unanswered = len(batch) - len(acknowledged) - len(rejected)
        if unanswered:
            logger.warning("%d record(s) had no result in the server's answer; they stay queued", unanswered)
        return sent + dead

    def _split(self, batch: list[PendingRecord], syncs: list[dict], status: int, detail: str) -> int:
        """Send the parts of a refused batch on their own (the syncs, then the records; each in halves) until
        the culprit, a record or a sync, is alone: only it is dead-lettered."""
        if len(batch) + len(syncs) == 1:
            dead = self.buffer.dead_letter([(batch[0].record_id, f"HTTP {status}: {detail}")]) if batch else 0
            dead += self.buffer.dead_letter_syncs([(s["sync_id"], f"HTTP {status}: {detail}") for s in syncs])
            self.progress.dead_lettered += dead
            return dead
        logger.warning("server refused a batch of %d record(s) and %d sync(s) (HTTP %d); splitting it",
                       len(batch), len(syncs), status)
        if batch and syncs:
            return self._send([], syncs) + self._send(batch, [])
        if syncs:
            middle = len(syncs) // 2
            return self._send([], syncs[:middle]) + self._send([], syncs[middle:])
        middle = len(batch) // 2
        return self._send(batch[:middle], []) + self._send(batch[middle:], [])

    def report_dead_letters(self) -> int:
        """Report the dead letters the server does not have yet; returns how many were reported. A server that
        does not take reports (an older API) is not asked again by this uploader."""
        if self._reports_refused:
            return 0
        reported = 0
        while True:
            dead = self.buffer.dead_letters(unreported_only=True, limit=MAX_REPORTS)
            if not dead:
                return reported
            items = [{"id": d["id"], "device_serial": d["device_serial"], "record_id": d["record_id"],
                      "reason": d["reason"][:500], "source": d["source"], "dead_at": d["dead_at"],
                      "payload": d["payload"][:8000]} for d in dead]
            try:
                response = self.api.post_dead_letters(items)
            except httpx.TransportError as exc:
                raise RetryLater(f"network: {type(exc).__name__}") from None
            except ApiUnavailable as exc:
                raise RetryLater(str(exc), parse_retry_after(exc.retry_after)) from None
            if response.status_code in (404, 405) and from_the_api(response):  # (a proxy's 404 is an outage)
                logger.warning("the API does not take dead-letter reports (HTTP %d); they stay in the buffer",
                               response.status_code)
                self._reports_refused = True
                return reported
            if response.status_code >= 400:
                raise RetryLater(f"dead-letter report: HTTP {response.status_code}",
                                 parse_retry_after(response.headers.get("Retry-After")))
            check_report_taken(response, len(items))
            reported += self.buffer.mark_dead_letters_reported(d["id"] for d in dead)
            self.progress.reported += len(dead)

    def drain(self, stop: threading.Event | None = None, max_failures: int | None = None) -> UploadProgress:
        """Upload until the queue is empty (or ``stop`` is set, or ``max_failures`` consecutive failures).

        Every error is retried with backoff except CredentialsRevoked and BufferDamaged, which propagate.
        """
        while not (stop and stop.is_set()):
            try:
                empty = self.buffer.pending_count() == 0 and self.buffer.pending_sync_count() == 0
                # An answer that settles nothing would otherwise be re-sent at once, again and again.
                if not empty and self.upload_batch() == 0:
                    raise RetryLater("the API's answer settled none of the batch")
                if empty:
                    self.report_dead_letters()
            except (CredentialsRevoked, BufferDamaged):
                raise
            except Exception as exc:  # the loop must outlive any single error; see the module docstring
                if not self._failed(exc, stop, max_failures):
                    break
                continue
            self.failures = 0
            self.health.succeeded(UPLOAD)
            if empty:
                break
        return self.progress

    def _failed(self, exc: Exception, stop: threading.Event | None, max_failures: int | None) -> bool:
        """Count and report a failure, then wait; False when ``max_failures`` says to give up instead."""
        self.failures += 1
        self.progress.retries += 1
        error = describe_error(exc)
        self.health.failed(UPLOAD, error)
        if max_failures is not None and self.failures >= max_failures:
            return False
        delay = backoff_delay(self.failures, self.rng, exc.retry_after_s if isinstance(exc, RetryLater) else None)
        # Network and server trouble is the weather; anything else is worth an operator's attention.
        log = logger.info if isinstance(exc, RetryLater) else logger.error
        log("upload deferred (%s); retrying in %.1f s", error, delay)
        logger.debug("upload failure", exc_info=exc)
        self._wait(delay, stop)
        return True

    def _wait(self, delay: float, stop: threading.Event | None) -> None:
        if self.sleep is not None:
            self.sleep(delay)
        elif stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)
