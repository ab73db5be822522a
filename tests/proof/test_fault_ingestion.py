"""Faults during ingestion: the gateway's real uploader and buffer against the real API under gunicorn.

The database server is SIGKILLed and restarted mid-upload; the API is stopped and started again
mid-upload. Either way every record the server acknowledged is stored exactly once, nothing is
dead-lettered, and the gateway's queue drains once the fault heals.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.profiles.companion_tens import EndReason, SessionRecord, encode_record
from device_gateway.uploader import Uploader
from tests.support.gunicorn import Gunicorn
from tests.support.world import make_user

SERIAL = "CTU-F0001"
RECORDS = 2_000
FAULT_AFTER = 600  # records acknowledged before the fault is injected
DRAIN_TIMEOUT_S = 120


class AcknowledgementLog(RecordBuffer):
    """The real buffer, also remembering every record the server acknowledged."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.acknowledged: list[str] = []

    def mark_sent(self, record_ids) -> int:
        ids = list(record_ids)
        self.acknowledged.extend(ids)
        return super().mark_sent(ids)


def paired_gateway(local_app) -> tuple[str, str]:
    client, services = local_app.test_client(), local_app.extensions["companion"]
    patient = make_user(client, services, key="fault_patient", role="patient")
    assert client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": SERIAL},
                       headers=patient.headers).status_code == 201
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": "fault gateway"}).json
    return paired["gateway_id"], paired["gateway_secret"]


def filled_buffer(path) -> AcknowledgementLog:
    buffer = AcknowledgementLog(path)
    now = datetime.now(UTC)
    start = int((now - timedelta(days=3)).timestamp())
    records = []
    for seq in range(1, RECORDS + 1):
        record = SessionRecord(seq=seq, device_started_at=start + seq * 90, duration_s=1200, programme=2,
                               frequency_hz=80, pulse_width_us=200, intensity_mean_dma=180,
                               intensity_peak_dma=230, end_reason=EndReason(0), battery_pct=70)
        records.append(capture(SERIAL, record, encode_record(record), 0.0, now))
    for index in range(0, RECORDS, 500):
        buffer.store(SERIAL, records[index:index + 500])
    assert buffer.pending_count() == RECORDS
    return buffer


def drain_with_fault(buffer, api_url: str, gateway: tuple[str, str], inject) -> None:
    """Upload everything; `inject` runs once, on the uploader's thread, after FAULT_AFTER acknowledgements."""
    injected = threading.Event()

    def progress(state) -> None:
        if not injected.is_set() and state.sent >= FAULT_AFTER:
            injected.set()
            inject()

    api = ApiClient(api_url, *gateway, timeout_s=10)
    uploader = Uploader(buffer, api, sleep=lambda delay: time.sleep(min(delay, 0.25)), progress=progress)
    stop = threading.Event()
    worker = threading.Thread(target=uploader.drain, kwargs={"stop": stop})
    worker.start()
    worker.join(DRAIN_TIMEOUT_S)
    stop.set()
    worker.join(10)
    api.close()
    assert injected.is_set(), "the fault was never injected"
    assert uploader.progress.retries > 0, "the fault went unnoticed: nothing was retried"


def assert_every_acknowledged_record_stored_once(buffer, db) -> None:
    expected = {f"{SERIAL}:{seq}" for seq in range(1, RECORDS + 1)}
    assert buffer.pending_count() == 0
    assert buffer.dead_letters() == []
    assert set(buffer.acknowledged) == expected
    stored = [doc["_id"] for doc in db.session_records.find({}, {"_id": 1})]
    assert len(stored) == len(set(stored)) == RECORDS
    assert set(stored) == expected
    serial_seq = {(d["device_serial"], d["device_seq"]) for d in db.session_records.find({}, {"device_serial": 1,
                                                                                           "device_seq": 1})}
    assert len(serial_seq) == RECORDS


@pytest.mark.slow
def test_database_killed_mid_upload_loses_and_duplicates_nothing(own_ferretdb, api_server, local_app, tmp_path):
    gateway = paired_gateway(local_app)
    buffer = filled_buffer(tmp_path / "buffer.sqlite")

    def kill_database_then_restart_it() -> None:
        own_ferretdb.kill()
        threading.Timer(2.0, own_ferretdb.start).start()

    drain_with_fault(buffer, api_server.url, gateway, kill_database_then_restart_it)
    assert_every_acknowledged_record_stored_once(buffer, local_app.extensions["companion"].db)


@pytest.mark.slow
def test_api_stopped_mid_upload_loses_and_duplicates_nothing(api_env, api_server, local_app, tmp_path):
    gateway = paired_gateway(local_app)
    buffer = filled_buffer(tmp_path / "buffer.sqlite")
    replacement = Gunicorn(api_env, workers=2, log_dir=tmp_path)
    replacement.port = api_server.port

    def stop_api_then_start_it_again() -> None:
        api_server.stop()
        threading.Timer(1.5, replacement.start).start()

    try:
        drain_with_fault(buffer, api_server.url, gateway, stop_api_then_start_it_again)
    finally:
        replacement.stop()
    assert_every_acknowledged_record_stored_once(buffer, local_app.extensions["companion"].db)
