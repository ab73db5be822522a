"""A loopback stand-in for Firebase Cloud Messaging, so the real firebase-admin runs end to end.

It speaks the two things firebase-admin talks to:

- the FCM HTTP v1 send API, ``POST /v1/projects/{project}/messages:send``, answering
  ``{"name": "projects/{project}/messages/{id}"}``;
- the OAuth token endpoint named as ``token_uri`` in a service-account file, ``POST /token``.

It records every message it accepts (the full request body) and can be scripted to answer with FCM's
real error bodies, for one device token or for every request, for the next N requests or always.
``GET /deliveries`` lists what arrived as JSON and ``GET /`` as a small page, newest first, so a newcomer
can watch pushes arrive.

Run it with ``python -m companion.notify.fcm_emulator --port 9099``. Tests use :class:`FcmEmulator`.
"""

from __future__ import annotations

import argparse
import errno
import html
import itertools
import json
import os
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


@dataclass(frozen=True)
class FcmFault:
    """One of FCM's error answers: HTTP status, google.rpc status, message and FCM error code."""

    http_status: int
    status: str
    message: str
    error_code: str | None = None
    field_violation: str | None = None

    def body(self) -> dict[str, Any]:
        """The error body exactly as FCM's HTTP v1 API shapes it."""
        details: list[dict[str, Any]] = []
        if self.error_code:
            details.append({"@type": FCM_ERROR_TYPE, "errorCode": self.error_code})
        if self.field_violation:
            details.append({
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": self.field_violation, "description": self.message}],
            })
        return {"error": {"code": self.http_status, "message": self.message, "status": self.status,
                          "details": details}}


# The bodies follow FCM's documented error responses (firebase.google.com/docs/cloud-messaging/error-codes).
FAULTS: dict[str, FcmFault] = {
    "UNREGISTERED": FcmFault(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
    "SENDER_ID_MISMATCH": FcmFault(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
    "INVALID_TOKEN": FcmFault(400, "INVALID_ARGUMENT",
                              "The registration token is not a valid FCM registration token",
                              "INVALID_ARGUMENT"),
    "INVALID_PAYLOAD": FcmFault(400, "INVALID_ARGUMENT",
                                "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
                                None, "message.data[0].value"),
    "QUOTA_EXCEEDED": FcmFault(429, "RESOURCE_EXHAUSTED",
                               "Quota exceeded for quota metric 'Send requests'", "QUOTA_EXCEEDED"),
    "UNAVAILABLE": FcmFault(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    "INTERNAL": FcmFault(500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    # Google's front end, not FCM itself: no FCM error code (firebase-admin reports them as UnknownError).
    "BAD_GATEWAY": FcmFault(502, "UNKNOWN", "Bad Gateway"),
    "GATEWAY_TIMEOUT": FcmFault(504, "UNKNOWN", "Gateway Timeout"),
}


@dataclass
class _Script:
    fault: FcmFault
    token: str | None
    remaining: int | None  # None: always
    retry_after: int | None


@dataclass
class FcmRequest:
    """One send request as the emulator saw it, whatever it answered."""

    token: str | None
    http_status: int
    received_at: datetime
    body: dict[str, Any] = field(repr=False)


@dataclass
class Delivery:
    """A message the emulator accepted, as FCM would have passed it on to a phone."""

    name: str
    token: str | None
    received_at: datetime
    body: dict[str, Any] = field(repr=False)
    raw_size: int = 0

    def as_json(self) -> dict[str, Any]:
        """The delivery in the shape ``GET /deliveries`` lists it."""
        return {"name": self.name, "token": self.token, "received_at": self.received_at.isoformat(),
                "size": self.raw_size, "body": self.body}


class FcmEmulator:
    """A threaded FCM emulator on 127.0.0.1; start it on port 0 in tests and read ``.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._scripts: list[_Script] = []
        self._issued_tokens: set[str] = set()
        self.deliveries: list[Delivery] = []
        self.requests: list[FcmRequest] = []
        self.token_requests = 0
        self._server = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The emulator's base address, e.g. ``http://127.0.0.1:40123``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def fcm_url(self) -> str:
        """The value for ``messaging._MessagingService.FCM_URL`` (``{0}`` is the project id)."""
        return self.url + "/v1/projects/{0}/messages:send"

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint to name in a service-account file."""
        return self.url + "/token"

    def start(self) -> FcmEmulator:
        """Serve in a daemon thread; returns self so that ``FcmEmulator().start()`` reads well."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fcm-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def script(self, error: str, *, token: str | None = None, times: int | None = None,
               retry_after: int | None = None) -> None:
        """Answer with FCM's ``error`` body: for ``token`` only (or every request), ``times`` (or always).

        ``error`` is a key of :data:`FAULTS`; ``retry_after`` adds a ``Retry-After`` header in seconds.
        The newest script that matches a request wins.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._scripts.append(_Script(FAULTS[error], token, times, retry_after))

    def reset(self) -> None:
        """Forget scripts, deliveries and request counts (tokens issued stay valid)."""
        with self._lock:
            self._scripts.clear()
            self.deliveries.clear()
            self.requests.clear()

    def hits_for(self, token: str) -> int:
        """How many send requests named ``token``, whatever the answer."""
        with self._lock:
            return sum(1 for r in self.requests if r.token == token)

    def delivered_to(self, token: str) -> list[Delivery]:
        """The accepted messages addressed to ``token``."""
        with self._lock:
            return [d for d in self.deliveries if d.token == token]

    # Called from request threads.
    def _issue_token(self) -> str:
        access_token = "emulator-" + secrets.token_urlsafe(24)
        with self._lock:
            self._issued_tokens.add(access_token)
            self.token_requests += 1
        return access_token

    def _is_authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            return header.removeprefix("Bearer ") in self._issued_tokens

    def _answer_send(self, project: str, body: dict[str, Any], raw_size: int) -> tuple[int, dict, dict]:
        message = body.get("message") or {}
        token = message.get("token") or message.get("fid")
        now = datetime.now(UTC)
        with self._lock:
            script = self._matching_script(token)
            if script is not None:
                fault = script.fault
                self.requests.append(FcmRequest(token, fault.http_status, now, body))
                headers = {"Retry-After": str(script.retry_after)} if script.retry_after is not None else {}
                return fault.http_status, fault.body(), headers
            name = f"projects/{project}/messages/{next(self._ids)}"
            self.requests.append(FcmRequest(token, 200, now, body))
            self.deliveries.append(Delivery(name, token, now, body, raw_size))
        return 200, {"name": name}, {}

    def _matching_script(self, token: str | None) -> _Script | None:
        for script in reversed(self._scripts):
            if script.token is not None and script.token != token:
                continue
            if script.remaining is not None:
                script.remaining -= 1
                if script.remaining == 0:
                    self._scripts.remove(script)
            return script
        return None

    def _deliveries_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d.as_json() for d in reversed(self.deliveries)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # send_each opens up to 500 connections at once; the default backlog of 5 would stall them.
    request_queue_size = 1024


def _handler_for(emulator: FcmEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Stay quiet: tests and the demo read deliveries, not access logs."""

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/token":
                self._send_json(200, {"access_token": emulator._issue_token(), "expires_in": 3600,
                                      "token_type": "Bearer"})
                return
            match = SEND_PATH.match(self.path)
            if match is None:
                self._send_json(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
                return
            if not emulator._is_authorized(self.headers.get("Authorization")):
                self._send_json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                "message": "Request had invalid authentication credentials."}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send_json(400, FAULTS["INVALID_PAYLOAD"].body())
                return
            status, answer, headers = emulator._answer_send(match["project"], body, len(raw))
            self._send_json(status, answer, headers)

        def do_GET(self) -> None:
            if self.path == "/deliveries":
                self._send_json(200, {"deliveries": emulator._deliveries_json()})
            elif self.path == "/":
                self._send(200, "text/html; charset=utf-8", _page(emulator._deliveries_json()).encode())
            else:
                self._send_json(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})

        def _send_json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            self._send(status, "application/json; charset=UTF-8", json.dumps(body).encode(), headers)

        def _send(self, status: int, content_type: str, payload: bytes,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _page(deliveries: list[dict[str, Any]], shown: int = 200) -> str:
    rows = []
    for d in deliveries[:shown]:
        message = d["body"].get("message", {})
        notification = message.get("notification", {})
        cells = [d["received_at"], (d["token"] or "")[:16], notification.get("title", ""),
                 notification.get("body", ""), json.dumps(message.get("data", {}))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
        "<title>FCM emulator</title></head><body>"
        f"<h1>FCM emulator: {len(deliveries)} messages delivered</h1>"
        "<table border='1' cellpadding='4'><tr><th>received (UTC)</th><th>token</th><th>title</th>"
        "<th>body</th><th>data</th></tr>" + "".join(rows) + "</table></body></html>"
    )


def write_service_account(path: Path | str, token_uri: str, project_id: str = "companion-local") -> Path:
    """Write a service-account JSON file with a fresh RSA key whose ``token_uri`` is ``token_uri``.

    firebase-admin reads the project id and the token endpoint from this file, so pointing it at the
    emulator's ``/token`` lets the real OAuth flow run on loopback. The key is generated here and
    never leaves the machine.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"companion-push@{project_id}.iam.gserviceaccount.com"
    document = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so that a script waiting for the file never reads half of it.
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.chmod(0o600)
    os.replace(partial, target)
    return target


# What the emulator says when it cannot listen (scripts/await-fcm.sh shows that line and stops `make run`).
REFUSAL_PREFIX = "companion fcm-emulator: "
EXIT_PORT_UNAVAILABLE = 69  # EX_UNAVAILABLE


def main(argv: list[str] | None = None) -> None:
    """Run the emulator in the foreground and print the settings that point Companion at it; a port it cannot
    listen on is one line on stderr and exit 69, before any service-account file is written."""
    parser = argparse.ArgumentParser(description="Loopback FCM HTTP v1 emulator for local runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--write-service-account", type=Path, default=Path("var/fcm-service-account.json"),
                        help="where to write a generated service-account file naming this emulator")
    parser.add_argument("--project", default="companion-local")
    args = parser.parse_args(argv)
    try:
        emulator = FcmEmulator(args.host, args.port)
    except OSError as exc:  # before the service-account file is written: nobody is pointed at a dead emulator
        busy = exc.errno == errno.EADDRINUSE
        print(f"{REFUSAL_PREFIX}{args.host}:{args.port} "
              + ("is in use by another program" if busy else f"cannot be listened on ({exc.strerror or exc})")
              + ": stop it or choose another port (--port; make run: COMPANION_FCM_PORT=9199 make run)",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_PORT_UNAVAILABLE)
    write_service_account(args.write_service_account, emulator.token_uri, args.project)
    print(f"FCM emulator on {emulator.url} (deliveries: {emulator.url}/)")
    print(f"FCM_SERVICE_ACCOUNT={args.write_service_account}")
    print(f"FCM_URL={emulator.url}/v1/projects/{{project_id}}/messages:send", flush=True)
    try:
        emulator._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator._server.server_close()


if __name__ == "__main__":
    main()
