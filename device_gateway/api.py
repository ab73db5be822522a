"""The gateway's HTTP client for the Companion API (pairing, token, bound units, records, unit status)."""

import logging
import ssl
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

PAIR_PATH = "/api/v1/gateways/pair"
GATEWAY_AUTH_PATH = "/api/v1/auth/gateway-token"
DEVICES_PATH = "/api/v1/gateway/devices"
RECORDS_PATH = "/api/v1/gateway/session-records"
STATUS_PATH = "/api/v1/gateway/device-status"


def tls_verification(ca_file: str | None) -> ssl.SSLContext:
    """How the gateway checks the API's certificate: the system's trust store, or only ``ca_file``'s CAs.

    Verification is never turned off; a private CA (self-hosted API, tests) is configured instead.
    """
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


class ApiAuthError(RuntimeError):
    """The API refused this gateway's credentials (even after getting a new token)."""


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
) -> Pairing:
    """Exchange a short-lived pairing code for this gateway's credentials."""
    verify = tls_verification(ca_file)
    with httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport, verify=verify) as http:
        response = http.post(PAIR_PATH, json={"code": code, "name": name})
    response.raise_for_status()
    body = response.json()
    return Pairing(body["gateway_id"], body["gateway_secret"], body["patient_ref"], list(body["device_serials"]))


class ApiClient:
    """Authenticated calls as a gateway; a 401 gets a new token once, then raises ApiAuthError."""

    def __init__(
        self,
        base_url: str,
        gateway_id: str,
        gateway_secret: str,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self._secret = gateway_secret
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout_s, transport=transport, verify=tls_verification(ca_file)
        )
        self._token: str | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _fetch_token(self) -> str:
        response = self._http.post(GATEWAY_AUTH_PATH, json={"gateway_id": self.gateway_id, "gateway_secret": self._secret})
        if response.status_code in (400, 401, 403):
            raise ApiAuthError(f"gateway token refused ({response.status_code})")
        response.raise_for_status()
        return response.json()["access_token"]

    def request(self, method: str, path: str, json: object | None = None) -> httpx.Response:
        """Send an authenticated request; returns the response whatever its status (except repeated 401)."""
        for attempt in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            response = self._http.request(method, path, json=json, headers={"Authorization": f"Bearer {self._token}"})
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

    def post_records(self, items: list[dict]) -> httpx.Response:
        """Post one batch of session records; the caller interprets the status and per-item results."""
        return self.request("POST", RECORDS_PATH, json={"records": items})

    def post_device_status(self, devices: list[dict]) -> None:
        """Report battery, firmware, last seen and last error for each unit."""
        self.request("POST", STATUS_PATH, json={"devices": devices}).raise_for_status()
