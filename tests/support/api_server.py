"""The real Flask app served over loopback in a thread (plain HTTP or TLS), and a gateway paired to it."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

from werkzeug.serving import make_server

from tests.support.ferretdb import free_port
from tests.support.world import make_user


class ApiServer:
    """The real Flask app served in a thread; can be stopped and started again on the same port."""

    def __init__(self, app, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.port = free_port()
        self.ssl_context = ssl_context
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True, ssl_context=self.ssl_context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass(frozen=True)
class PairedGateway:
    patient_id: str
    gateway_id: str
    gateway_secret: str
    serials: list[str]


def paired_gateway(client, services, serials: list[str], key: str = "patient_gw") -> PairedGateway:
    """A patient with ``serials`` bound, and a gateway paired to that patient (through the real API)."""
    patient = make_user(client, services, key=key, role="patient", time_zone="Europe/London")
    for serial in serials:
        response = client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": serial}, headers=patient.headers)
        assert response.status_code == 201, response.json
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": key}).json
    return PairedGateway(patient.id, paired["gateway_id"], paired["gateway_secret"], list(serials))
