"""A small stdlib HTTP stub of the gateway's API contract, for uploader tests only.

The real API is tested against FerretDB elsewhere; this stub lets a test script per-request answers
(mixed per-item results, 503, 429 with Retry-After, 401, bodies that are not JSON) for record batches and
for token renewal, and records what the gateway sent (records, syncs, clock readings, dead letters). Every
answer carries ``X-Server-Time`` (the real clock, moved by ``server_time_offset``).
"""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ContractStub:
    """Default behaviour: every record is created the first time and a duplicate afterwards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, dict] = {}
        self.batches: list[list[str]] = []
        self.statuses: list[list[dict]] = []
        self.scripted: list = []  # callables (records) -> (status, headers, body) or None for the default
        self.answer_hook = None  # a callable like those in scripted, consulted for every batch once scripted is empty
        self.tokens_issued = 0
        self.token_requests = 0
        self.pair_scripted: list = []  # (status, headers, body) answers to the next pairing requests
        self.token_scripted: list = []  # (status, headers, body) answers to the next token requests
        self.dead_letters_scripted: list = []  # (status, headers, body) answers to the next dead-letter reports
        self.refuse_tokens = False  # answer every token request 401, as the API does for a revoked gateway
        self.valid_token = "token-1"
        self.issued_token = "token-1"
        self.reject: dict[str, str] = {}
        self.omit: set[str] = set()
        self.poison: set[str] = set()
        self.poison_syncs: set[str] = set()  # a batch carrying one of these syncs is refused whole (403)
        self.devices = ["CT-000001"]
        self.profiles: dict[str, str] = {}  # serial -> profile, for units not of the default profile
        self.syncs: dict[str, dict] = {}
        self.clock_readings: list[dict] = []
        self.dead_letters: dict[int, dict] = {}
        self.server_time_offset = timedelta(0)
        self.take_dead_letters = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "ContractStub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer_records(self, records: list[dict]) -> tuple[int, dict, object]:
        ids = [r["record_id"] for r in records]
        if self.poison & set(ids):
            return 422, {}, {"title": "Unprocessable", "detail": "batch contains an invalid record"}
        results = []
        for record in records:
            rid = record["record_id"]
            if rid in self.omit:
                continue
            if rid in self.reject:
                results.append({"record_id": rid, "status": "rejected", "reason": self.reject[rid]})
            elif rid in self.stored:
                results.append({"record_id": rid, "status": "duplicate", "reason": None})
            else:
                self.stored[rid] = record
                results.append({"record_id": rid, "status": "created", "reason": None})
        return 200, {}, {"results": results}

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return None

            def _reply(self, status: int, headers: dict, body: object) -> None:
                # bytes go out as they are: a malformed answer for the gateway to cope with
                raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                server_now = datetime.now(UTC) + stub.server_time_offset
                self.send_header("X-Server-Time", server_now.isoformat(timespec="milliseconds"))
                if "Content-Type" not in headers:  # the API answers every error in problem details
                    self.send_header("Content-Type", "application/problem+json" if status >= 400 and
                                     isinstance(body, dict) else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if self.path == "/api/v1/gateway/devices":
                    self._reply(200, {}, {"devices": [
                        {"serial": s, "profile": stub.profiles.get(s, "companion-tens")} for s in stub.devices
                    ]})
                else:
                    self._reply(404, {}, {"title": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub.lock:
                    if self.path == "/api/v1/gateways/pair":
                        if stub.pair_scripted:
                            self._reply(*stub.pair_scripted.pop(0))
                            return
                        self._reply(201, {}, {
                            "gateway_id": "gw-1", "gateway_secret": "s3cret", "patient_ref": "p-1",
                            "device_serials": ["CT-000001"],
                        })
                        return
                    if self.path == "/api/v1/auth/gateway-token":
                        stub.token_requests += 1
                        if stub.token_scripted:
                            self._reply(*stub.token_scripted.pop(0))
                        elif stub.refuse_tokens:
                            self._reply(401, {}, {"title": "Unauthorized", "detail": "unknown or revoked gateway"})
                        else:
                            stub.tokens_issued += 1
                            self._reply(200, {}, {"access_token": stub.issued_token, "expires_in": 900})
                        return
                    if self.headers.get("Authorization") != f"Bearer {stub.valid_token}":
                        self._reply(401, {}, {"title": "Unauthorized"})
                        return
                    if self.path == "/api/v1/gateway/device-status":
                        stub.statuses.append(body["devices"])
                        self._reply(204, {}, None)
                        return
                    if self.path == "/api/v1/gateway/dead-letters":
                        if stub.dead_letters_scripted:
                            self._reply(*stub.dead_letters_scripted.pop(0))
                            return
                        if not stub.take_dead_letters:
                            self._reply(404, {}, {"title": "Not Found"})
                            return
                        for item in body["items"]:
                            stub.dead_letters[item["id"]] = item
                        self._reply(200, {}, {"received": len(body["items"]), "new": len(body["items"])})
                        return
                    records = body.get("records", [])
                    syncs = body.get("syncs", [])
                    if body.get("gateway_clock"):
                        stub.clock_readings.append(body["gateway_clock"])
                    if records:
                        stub.batches.append([r["record_id"] for r in records])
                    scripted = stub.scripted.pop(0) if stub.scripted and records else None
                    hook = scripted or stub.answer_hook
                    answer = hook(records) if hook and records else None
                    if stub.poison_syncs & {s["sync_id"] for s in syncs}:
                        answer = (403, {}, {"title": "Forbidden", "detail": "a unit in this batch is not yours"})
                    status, headers, answer_body = answer or stub.answer_records(records)
                    if status == 200 and isinstance(answer_body, dict):
                        for sync in syncs:
                            stub.syncs.setdefault(sync["sync_id"], sync)
                        answer_body = {**answer_body, "syncs": [{"sync_id": s["sync_id"], "status": "created"}
                                                                for s in syncs]}
                    self._reply(status, headers, answer_body)

        return Handler
