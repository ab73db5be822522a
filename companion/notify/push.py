"""Sending pushes through the real ``firebase_admin.messaging`` and sorting out what FCM answered.

:class:`PushSender` builds one ``messaging.Message`` per outbox item from the fixed templates, sends
them with ``send_each`` in chunks of at most 500, and classifies each answer:

- ``sent``: FCM accepted it (the result carries FCM's message name);
- ``token_dead``: UNREGISTERED, or INVALID_ARGUMENT about the token; the caller removes the token and never
  retries (not SENDER_ID_MISMATCH: every token answers that when the server runs with another project's
  credentials, and pruning then would forget every phone; it is ``failed``, and logged as a likely setup error);
- ``retry``: 429, 500, 502, 503, 504 (or no answer at all); the result carries the earliest retry time;
- ``expired``: the message's validity ended before it could go (out, or out again);
- ``failed``: anything else, or retries used up; the result carries FCM's error code.

Two private corners of firebase-admin 7.7 are used, both pinned by tests against the emulator:
``messaging._MessagingService.FCM_URL`` (the only way to point the SDK at another FCM address; it is
read once, when an app's messaging service is created) and that service's HTTP session, on which a
transport-retry adapter of our own is mounted (see :class:`TransportRetry`).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import firebase_admin
from firebase_admin import credentials, exceptions, messaging
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from companion.clock import now
from companion.domain.notifications import (
    UnknownNotificationKind,
    Visibility,
    data_for,
    template_for,
    texts_for,
)
from companion.i18n import Reader
from companion.notify.retry_policy import RetryPolicy

logger = logging.getLogger(__name__)

SEND_EACH_LIMIT = 500
MAX_PAYLOAD_BYTES = 4096
_FCM_URL_LOCK = threading.Lock()
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class Outcome(Enum):
    """What became of one push."""

    SENT = "sent"
    TOKEN_DEAD = "token_dead"  # noqa: S105 - an outcome name, not a secret
    RETRY = "retry"
    EXPIRED = "expired"
    FAILED = "failed"


class Address(Enum):
    """How the phone is addressed: an FCM registration token, or (later) a Firebase installation id."""

    TOKEN = "token"  # noqa: S105 - an address kind, not a secret
    FID = "fid"


@dataclass(frozen=True)
class PushItem:
    """One outbox message to one phone.

    ``expires_at`` is the end of the message's validity (its completion window); the TTL FCM gets is
    what remains of it at sending time, so a retried reminder never outlives its window. ``attempt``
    is the app-level attempt this send is (1 for the first).
    """

    outbox_id: str
    token: str
    kind: str
    expires_at: datetime
    collapse_key: str
    attempt: int = 1
    address: Address = Address.TOKEN
    locales: tuple[str | None, ...] = ()  # the account's chosen language, then the phone's (BCP 47)
    zone: str = "UTC"  # the recipient's IANA zone, for the time a text names
    planned_at: datetime | None = None  # a reminder's due time, the one argument a text may name
    tag: str | None = None  # its tag in the tray (tray_tag_for); None: the collapse key


@dataclass(frozen=True)
class PushResult:
    """The outcome of one :class:`PushItem`."""

    outbox_id: str
    outcome: Outcome
    message_name: str | None = None
    error_code: str | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True)
class TransportRetry:
    """firebase-admin's own per-request retries, inside one ``send_each`` entry.

    firebase-admin 7.7 retries 500/503 up to 4 times with urllib3 backoff ``0.5 * 2**(n-1)`` s (about
    7 s in all), and also retries 429/503 that carry Retry-After, sleeping the full Retry-After in the
    sending thread each time. We keep its 500/503 retries (same count and factor by default) but turn
    off the Retry-After sleeps: a 429 comes straight back and :class:`RetryPolicy` schedules it.
    Tests shrink ``backoff_factor`` to stay fast.
    """

    retries: int = 4
    backoff_factor: float = 0.5

    def as_urllib3(self) -> Retry:
        """The urllib3 ``Retry`` mounted on the messaging session for the FCM address."""
        return Retry(total=None, connect=1, read=1, status=self.retries, status_forcelist=[500, 502, 503, 504],
                     backoff_factor=self.backoff_factor, respect_retry_after_header=False,
                     raise_on_status=False, allowed_methods=None)


class PayloadTooLarge(ValueError):
    """A built message exceeds FCM's 4096-byte payload limit (a template bug, never data)."""


def build_message(item: PushItem, now: datetime) -> messaging.Message:
    """The ``messaging.Message`` for ``item`` at ``now``: the kind's lines in the recipient's language (and
    their localisation keys, for apps that localise on the device), opaque data, TTL, collapse key (which of
    the messages FCM holds for an offline phone it keeps) and tag in the tray, priority and interruption level,
    analytics label.

    Raises :class:`PayloadTooLarge` if the encoded message passes 4096 bytes.
    """
    template = template_for(item.kind)
    delivery = template.delivery
    ttl = timedelta(seconds=int((item.expires_at - now).total_seconds()))
    reader = Reader(*item.locales, zone=_zone(item.zone))
    title, body = texts_for(item.kind, item.planned_at is not None)
    args = [reader.time(item.planned_at)] if body.arguments and item.planned_at is not None else []
    title_text = reader.gettext(title.message)
    body_text = reader.render(body.message, **dict(zip(body.arguments, args, strict=True)))
    message = messaging.Message(
        notification=messaging.Notification(title=title_text, body=body_text),
        data=data_for(item.kind, item.outbox_id),
        android=messaging.AndroidConfig(
            collapse_key=item.collapse_key,
            priority=delivery.android_priority,
            ttl=ttl,
            notification=messaging.AndroidNotification(
                visibility=template.visibility.value, tag=item.tag or item.collapse_key,
                channel_id=template.channel_id,
                title_loc_key=title.loc_key, body_loc_key=body.loc_key, body_loc_args=args or None),
        ),
        apns=messaging.APNSConfig(
            headers={
                "apns-expiration": str(int(item.expires_at.timestamp())),
                "apns-collapse-id": item.tag or item.collapse_key,  # (iOS shows one notification per id)
                "apns-priority": delivery.apns_priority,
                "apns-push-type": "alert",
            },
            # iOS has no per-message lock-screen visibility; the app registers these categories with
            # hidden previews, so the PRIVATE/SECRET choice travels as the category.
            payload=messaging.APNSPayload(aps=messaging.Aps(
                alert=messaging.ApsAlert(title=title_text, body=body_text, title_loc_key=title.loc_key,
                                         loc_key=body.loc_key, loc_args=args or None),
                category=_apns_category(template.visibility),
                custom_data={"interruption-level": delivery.interruption_level})),
        ),
        fcm_options=messaging.FCMOptions(analytics_label=template.analytics_label),
    )
    # Message(token=...) warns "deprecated, use fid" in 7.7, but phones register FCM registration
    # tokens, which are not installation ids, and the v1 API still takes them as `token`. Setting the
    # attribute after construction avoids the warning without a process-wide warnings filter
    # (catch_warnings is not thread-safe, and dispatchers send from several threads).
    if item.address is Address.FID:
        message.fid = item.token
    else:
        message.token = item.token
    size = len(str(message).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"{item.kind} message is {size} bytes")
    return message


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _apns_category(visibility: Visibility) -> str:
    return f"companion.{visibility.value}"


class PushSender:
    """Sends outbox items through a named firebase-admin app and classifies every answer."""

    def __init__(self, service_account_file: str | Path, *, fcm_url: str | None = None,
                 app_name: str = "companion-push", transport_retry: TransportRetry | None = None,
                 retry_policy: RetryPolicy | None = None, clock: Callable[[], datetime] = now,
                 rng: random.Random | None = None, http_timeout: float = 30) -> None:
        """Initialise the firebase app ``app_name`` from ``service_account_file``.

        ``fcm_url`` (``.../v1/projects/{project_id}/messages:send``, or ``{0}`` as firebase-admin writes
        it) points the SDK at another FCM, e.g. the emulator; it applies to this app only and is
        installed before its messaging service exists.
        """
        if fcm_url is not None:
            fcm_url = fcm_url.replace("{project_id}", "{0}")
        self._app = firebase_admin.initialize_app(
            credentials.Certificate(str(service_account_file)), {"httpTimeout": http_timeout}, name=app_name)
        self._retry_policy = retry_policy or RetryPolicy()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        service = self._create_messaging_service(fcm_url)
        origin = urlsplit((fcm_url or messaging._MessagingService.FCM_URL).format(self._app.project_id))
        adapter = HTTPAdapter(pool_connections=10, pool_maxsize=100,
                              max_retries=(transport_retry or TransportRetry()).as_urllib3())
        service._client.session.mount(f"{origin.scheme}://{origin.netloc}", adapter)

    def _create_messaging_service(self, fcm_url: str | None) -> messaging._MessagingService:
        with _FCM_URL_LOCK:
            default = messaging._MessagingService.FCM_URL
            if fcm_url is not None:
                messaging._MessagingService.FCM_URL = fcm_url
            try:
                return messaging._get_messaging_service(self._app)
            finally:
                messaging._MessagingService.FCM_URL = default

    def close(self) -> None:
        """Delete the firebase app (and its HTTP sessions)."""
        firebase_admin.delete_app(self._app)

    def send(self, items: Sequence[PushItem]) -> list[PushResult]:
        """Send ``items`` in chunks of at most 500 and return one result per item, in order."""
        results: list[PushResult] = []
        for start in range(0, len(items), SEND_EACH_LIMIT):
            results.extend(self._send_chunk(items[start:start + SEND_EACH_LIMIT]))
        counts = {o.value: sum(1 for r in results if r.outcome is o) for o in Outcome}
        logger.info("push batch done: %s", counts)
        return results

    def _send_chunk(self, chunk: Sequence[PushItem]) -> list[PushResult]:
        now = self._clock()
        messages: dict[int, messaging.Message] = {}
        unsendable: dict[int, PushResult] = {}
        for n, item in enumerate(chunk):
            if item.expires_at - now < timedelta(seconds=1):
                continue
            try:
                messages[n] = build_message(item, now)
            except (PayloadTooLarge, UnknownNotificationKind) as exc:
                # One message that cannot be built (a template bug, an unknown stored kind) fails alone.
                logger.error("push %s cannot be built: %s", item.outbox_id, type(exc).__name__)
                unsendable[n] = PushResult(item.outbox_id, Outcome.FAILED, error_code="UNSENDABLE")
        responses: dict[int, messaging.SendResponse] = {}
        if messages:
            batch = messaging.send_each(list(messages.values()), app=self._app)
            responses = dict(zip(messages, batch.responses, strict=True))
        answered_at = self._clock()
        return [
            self._classify(item, responses[n], answered_at) if n in responses
            else unsendable.get(n) or PushResult(item.outbox_id, Outcome.EXPIRED)
            for n, item in enumerate(chunk)
        ]

    def _classify(self, item: PushItem, response: messaging.SendResponse, now: datetime) -> PushResult:
        if response.success:
            return PushResult(item.outbox_id, Outcome.SENT, message_name=response.message_id)
        error = response.exception
        code = fcm_error_code(error)
        if _token_is_dead(error):
            return PushResult(item.outbox_id, Outcome.TOKEN_DEAD, error_code=code)
        if isinstance(error, messaging.SenderIdMismatchError):
            logger.error("FCM answered SENDER_ID_MISMATCH for notification %s: the token belongs to another Firebase "
                      "project than these credentials (check the service account if every push answers this)",
                      item.outbox_id)
        if not _retryable(error):
            return PushResult(item.outbox_id, Outcome.FAILED, error_code=code)
        # A reminder is tried again while its window is open, whatever the count; other kinds for a number of
        # attempts too (companion.notify.retry_policy). Only the validity makes a retry ``expired``.
        retry_at = self._retry_policy.earliest_retry(now, item.attempt, _retry_after(error), self._rng,
                                                     in_window=template_for(item.kind).windowed)
        if retry_at is None:
            return PushResult(item.outbox_id, Outcome.FAILED, error_code=code)
        if retry_at >= item.expires_at:
            return PushResult(item.outbox_id, Outcome.EXPIRED, error_code=code)
        return PushResult(item.outbox_id, Outcome.RETRY, error_code=code, retry_at=retry_at)


# 429 (QuotaExceededError is a ResourceExhaustedError), 500, 503 and transport failures (no answer or
# a timeout, which firebase-admin reports as Unavailable/DeadlineExceeded). Never 400/401/403/404.
_RETRYABLE = (exceptions.ResourceExhaustedError, exceptions.InternalError, exceptions.UnavailableError,
              exceptions.DeadlineExceededError)
_GATEWAY_ERRORS = (502, 504)  # Google's front end: firebase-admin calls them UnknownError


def _retryable(error: exceptions.FirebaseError) -> bool:
    response = error.http_response
    return isinstance(error, _RETRYABLE) or (response is not None and response.status_code in _GATEWAY_ERRORS)


def _error_body(error: exceptions.FirebaseError) -> dict:
    response = error.http_response
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body.get("error", {}) if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}


def fcm_error_code(error: exceptions.FirebaseError) -> str:
    """FCM's own error code (``UNREGISTERED``, ``QUOTA_EXCEEDED``...) or, lacking one, the RPC status."""
    for detail in _error_body(error).get("details", []):
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.code)


def _token_is_dead(error: exceptions.FirebaseError) -> bool:
    if isinstance(error, messaging.UnregisteredError):
        return True
    if not isinstance(error, exceptions.InvalidArgumentError):
        return False
    # INVALID_ARGUMENT also covers payload mistakes; only a complaint about the address kills a token.
    body = _error_body(error)
    for detail in body.get("details", []):
        for violation in detail.get("fieldViolations", []) if isinstance(detail, dict) else []:
            if violation.get("field") in ("message.token", "message.fid"):
                return True
    return "registration token" in str(body.get("message", "")).lower()


def _retry_after(error: exceptions.FirebaseError) -> timedelta | None:
    response = error.http_response
    header = response.headers.get("Retry-After") if response is not None else None
    # FCM sends delta-seconds; an HTTP-date (or garbage) falls back to the policy's 10 s floor.
    if header is None or not header.strip().isdigit():
        return None
    return timedelta(seconds=int(header))

