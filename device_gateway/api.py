"""The gateway's HTTP client for the Companion API (pairing, token, bound units, records, unit status, and
whether a unit's record was delivered).

Token renewal (every 15 minutes) can fail in three ways, told apart because they call for different
answers: the API refusing the credentials (ApiAuthError; after refusals repeated over at least a minute,
CredentialsRevoked, which no amount of waiting fixes), the API not answering usefully (ApiUnavailable: a 5xx
during a deploy or a database outage, a 429, a body that is not a token; retry later), and the network
(httpx.TransportError; retry later).
"""

import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

from device_gateway.clock import GatewayClock, ServerClock, parse_server_time
from device_gateway.errors import ConfigError, GatewayError

logger = logging.getLogger(__name__)

PAIR_PATH = "/api/v1/gateways/pair"
GATEWAY_AUTH_PATH = "/api/v1/auth/gateway-token"
DEVICES_PATH = "/api/v1/gateway/devices"
RECORDS_PATH = "/api/v1/gateway/session-records"
STATUS_PATH = "/api/v1/gateway/device-status"
DEAD_LETTERS_PATH = "/api/v1/gateway/dead-letters"
DELIVERED_RECORD_PATH = "/api/v1/gateway/devices/{serial}/records/{seq}"
SERVER_TIME_HEADER = "X-Server-Time"
# A refusal can be a blip (a deploy, a replica behind); refusals repeated over this long are not.
REVOKED_AFTER_REFUSALS = 3
REVOKED_AFTER_S = 60.0


def tls_verification(ca_file: str | None) -> ssl.SSLContext:
    """How the gateway checks the API's certificate: the system's trust store, or only ``ca_file``'s CAs.

    Verification is never turned off; a private CA (self-hosted API, tests) is configured instead.
    """
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


def checked_api_url(url: str) -> str:
    """``url`` if the gateway may talk to it; ConfigError otherwise. Pairing codes, the gateway's secret and its
    tokens, and session records travel over it, so it must be ``https://``; plain ``http://`` only to this host
    itself (``localhost``, 127.0.0.0/8, ``::1``: `make run`, the demo, tests), where nothing crosses a network."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
    except ValueError:
        raise ConfigError(f"the API URL {url!r} is not a URL: give https://host[:port]") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and _is_loopback(host):
        return url
    if parts.scheme == "http" and host:
        raise ConfigError(f"the API URL {url} is plain http:// to another host: pairing codes, the gateway secret "
                          "and health data would cross the network unencrypted. Set COMPANION_API_URL=https://... "
                          "(no new pairing needed; a TLS-terminating proxy in front of the API gives it an https:// "
                          "address), or point it at a proxy on this host's loopback that forwards over TLS "
                          "(http://127.0.0.1:PORT): plain http:// is for this host only")
    raise ConfigError(f"the API URL {url!r} must be https://host[:port] (plain http:// only for localhost)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiAuthError(GatewayError):
    """The API refused this gateway's credentials (even after getting a new token)."""


class CredentialsRevoked(ApiAuthError):
    """The API has refused this gateway's credentials at every token renewal for a while: the gateway was
    unpaired or its secret is wrong. Waiting will not help; a person must pair it again."""


class ApiUnavailable(GatewayError):
    """Token renewal got neither a token nor a refusal (5xx, 429, a malformed answer): retry later.

    ``retry_after`` is the answer's ``Retry-After`` header, if any.
    """

    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class DeliveredRecord:
    """What the server holds of a unit's record: whether a gateway of the patient's delivered it, and the content
    hash sent with it (None when none was delivered, or when the server has no gateway's hash of it)."""

    delivered: bool
    content_hash: str | None


@dataclass(frozen=True, slots=True)
class Pairing:
    """What the API returns when a pairing code is exchanged."""

    gateway_id: str
    gateway_secret: str
    patient_ref: str
    device_serials: list[str]


def pair(
    base_url: str,
    code: str,
    name: str,
    timeout_s: float = 15.0,
    transport: httpx.BaseTransport | None = None,
    ca_file: str | None = None,
    nonce: str | None = None,
) -> Pairing:
    """Exchange a short-lived pairing code for this gateway's credentials (ConfigError, nothing sent, for an API URL
    that is not https:// to another host: :func:`checked_api_url`).

    ``nonce`` is this gateway's own random value for the pairing (:meth:`GatewayConfig.pairing_nonce`, kept before
    the first request): sent again with the same code after an answer that was lost, it is answered again, with
    the same gateway and a new secret; without it (or with another) a used code is refused."""
    verify = tls_verification(ca_file)
    body = {"code": code, "name": name} | ({"nonce": nonce} if nonce else {})
    with httpx.Client(base_url=checked_api_url(base_url), timeout=timeout_s, transport=transport, verify=verify) as http:
        response = http.post(PAIR_PATH, json=body)
    response.raise_for_status()
    body = response.json()
    return Pairing(body["gateway_id"], body["gateway_secret"], body["patient_ref"], list(body["device_serials"]))


class ApiClient:
    """Authenticated calls as a gateway; a 401 gets a new token once, then raises ApiAuthError.

    ``clock`` (monotonic seconds) times repeated refusals; tests inject one. Every answer's ``X-Server-Time``
    is measured into ``server_clock`` (with the gateway's clocks, ``gateway_clock``, read around the request).
    """

    def __init__(
        self,
        base_url: str,
        gateway_id: str,
        gateway_secret: str,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        gateway_clock: GatewayClock | None = None,
        server_clock: ServerClock | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.gateway_clock = gateway_clock or GatewayClock()
        self.server_clock = server_clock or ServerClock(self.gateway_clock)
        self._secret = gateway_secret
        self._http = httpx.Client(
            base_url=checked_api_url(base_url), timeout=timeout_s, transport=transport, verify=tls_verification(ca_file)
        )
        self._token: str | None = None
        self._clock = clock
        self._refusals_lock = threading.Lock()
        self._refusals = 0
        self._first_refused_at = 0.0

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One HTTP exchange, measuring the server's clock from its answer."""
        sent = self.gateway_clock.read()
        response = self._http.request(method, path, **kwargs)
        server_time = parse_server_time(response.headers.get(SERVER_TIME_HEADER))
        if server_time is not None:
            self.server_clock.observe(server_time, sent, self.gateway_clock.read())
        return response

    def _fetch_token(self) -> str:
        response = self._send("POST", GATEWAY_AUTH_PATH,
                              json={"gateway_id": self.gateway_id, "gateway_secret": self._secret})
        # Refused by the API itself (problem details): a page from a proxy or a firewall in front of it says
        # nothing of the credentials, and is retried like any outage.
        if response.status_code in (400, 401, 403) and from_the_api(response):
            raise self._refused(response.status_code)
        if response.status_code != 200:
            raise ApiUnavailable(f"token renewal: HTTP {response.status_code}", response.headers.get("Retry-After"))
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ApiUnavailable("token renewal: malformed answer from the API")
        with self._refusals_lock:
            self._refusals = 0
        return token

    def _refused(self, status: int) -> ApiAuthError:
        with self._refusals_lock:
            now = self._clock()
            if self._refusals == 0:
                self._first_refused_at = now
            self._refusals += 1
            refusals, span = self._refusals, now - self._first_refused_at
        what = "malformed gateway id or secret" if status == 400 else "credentials refused"
        message = f"gateway token: {what} (HTTP {status})"
        if refusals >= REVOKED_AFTER_REFUSALS and span >= REVOKED_AFTER_S:
            return CredentialsRevoked(f"{message}, {refusals} times in a row over {span:.0f} s")
        return ApiAuthError(message)

    def request(self, method: str, path: str, json: object | None = None) -> httpx.Response:
        """Send an authenticated request; returns the response whatever its status (except repeated 401)."""
        for attempt in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            response = self._send(method, path, json=json, headers={"Authorization": f"Bearer {self._token}"})
            if response.status_code != 401:
                return response
            self._token = None
            if attempt == 0:
                logger.info("API answered 401; getting a new gateway token")
        raise ApiAuthError(f"{method} {path} refused with 401 after a fresh token")

    def bound_devices(self) -> list[dict]:
        """Units bound to this gateway's patient: ``[{"serial": ..., "profile": ...}]``."""
        response = self.request("GET", DEVICES_PATH)
        response.raise_for_status()
        return list(response.json()["devices"])

    def post_records(self, items: list[dict], syncs: list[dict] | None = None) -> httpx.Response:
        """Post one batch of session records and the syncs that captured them, with the gateway's clock
        reading; the caller interprets the status and per-item results."""
        body = {"records": items, "syncs": syncs or [], "gateway_clock": self.gateway_clock.read().as_api()}
        return self.request("POST", RECORDS_PATH, json=body)

    def post_dead_letters(self, items: list[dict]) -> httpx.Response:
        """Report dead letters (what the gateway could not deliver as records)."""
        return self.request("POST", DEAD_LETTERS_PATH, json={"items": items})

    def post_device_status(self, devices: list[dict]) -> None:
        """Report battery, firmware, last seen and last error for each unit, with the gateway's clock reading (by
        which the server corrects a last contact seen on the gateway's wall clock)."""
        body = {"devices": devices, "gateway_clock": self.gateway_clock.read().as_api()}
        self.request("POST", STATUS_PATH, json=body).raise_for_status()

    def delivered_record(self, serial: str, seq: int) -> DeliveredRecord:
        """Whether a gateway of the patient's delivered the unit's record ``seq``, and with which content hash.
        Raises on anything but a well-formed answer: the caller cannot tell, and asks again later."""
        response = self.request("GET", DELIVERED_RECORD_PATH.format(serial=quote(serial, safe=""), seq=seq))
        response.raise_for_status()
        body = response.json()
        delivered = body.get("delivered") if isinstance(body, dict) else None
        content_hash = body.get("content_hash") if isinstance(body, dict) else None
        if not isinstance(delivered, bool) or not (content_hash is None or isinstance(content_hash, str)):
            raise ValueError("malformed answer to the delivered-record check")
        return DeliveredRecord(delivered, content_hash if delivered else None)


def from_the_api(response: httpx.Response) -> bool:
    """Whether an error answer is the API's own (problem details), not a proxy's or a firewall's page."""
    return response.headers.get("Content-Type", "").split(";")[0].strip() == "application/problem+json"
