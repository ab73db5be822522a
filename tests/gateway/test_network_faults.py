"""E2: exactly-once effect under network faults: buffer → uploader → fault proxy → the real API → FerretDB.

The proxy closes connections after the server committed, resets them mid-response, adds latency,
blackholes everything for a few seconds and duplicates requests, in turn, then heals. The server must
hold every record exactly once and the gateway's queue must drain to zero.

Backoff waits are shortened to at most 50 ms here (the real envelope, 1 s to 5 min, is pinned by
test_uploader.py's injected-clock test); the blackhole is 3 s rather than minutes, with a 1.5 s client timeout.
"""

import threading
import time

import pytest

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.uploader import Uploader
from tests.support.api_server import paired_gateway
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.records import captured_records

SERIALS = ["CTU-F0001", "CTU-F0002"]
FAULT_ROUND = [
    Fault.CLOSE_AFTER_FORWARD, Fault.PASS, Fault.RESET_MID_RESPONSE, Fault.PASS, Fault.LATENCY,
    Fault.DUPLICATE, Fault.PASS, Fault.CLOSE_AFTER_FORWARD, Fault.DUPLICATE, Fault.RESET_MID_RESPONSE,
]


@pytest.fixture
def settings_overrides(settings_overrides):
    # Retries and duplicated requests count against the per-gateway upload limit; this test is not about it.
    return {**settings_overrides, "gateway_uploads_per_min": 100_000}


@pytest.fixture
def proxy(api_server):
    fault_proxy = FaultProxy(api_server.port, latency_s=0.5, blackhole_s=3.0).start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.mark.parametrize(
    ("per_unit", "batch_size"), [(1000, 100), pytest.param(5000, 250, marks=pytest.mark.slow, id="10000-records")]
)
def test_every_record_is_stored_exactly_once_through_every_network_fault(
    tmp_path, client, services, db, proxy, per_unit, batch_size
):
    gateway = paired_gateway(client, services, SERIALS)
    buffer = RecordBuffer(tmp_path / "buffer.db")
    for serial in SERIALS:
        buffer.store(serial, captured_records(serial, per_unit))
    total = per_unit * len(SERIALS)
    proxy.script = FAULT_ROUND + [Fault.BLACKHOLE] + FAULT_ROUND
    api = ApiClient(proxy.url, gateway.gateway_id, gateway.gateway_secret, timeout_s=1.5)
    uploader = Uploader(buffer, api, batch_size=batch_size, sleep=lambda delay: time.sleep(min(delay, 0.05)))
    give_up = threading.Timer(90, (stop := threading.Event()).set)
    give_up.start()
    try:
        uploader.drain(stop=stop)
    finally:
        give_up.cancel()
        api.close()

    assert proxy.script == [] and set(proxy.applied) == set(Fault)
    assert buffer.pending_count() == 0 and buffer.dead_letters() == []
    buffer.close()
    ids = [doc["_id"] for doc in db.session_records.find({}, {"_id": 1})]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {f"{serial}:{seq}" for serial in SERIALS for seq in range(1, per_unit + 1)}
    missing_a_time = db.session_records.count_documents({"$or": [
        {field: {"$exists": False}} for field in ("device_started_at", "gateway_received_at", "server_received_at")
    ]})
    assert missing_a_time == 0
    assert uploader.progress.retries >= 6
    assert any(b'"duplicate"' in answer for answer in proxy.answers), "resent records were answered as duplicates"


def test_a_deactivated_patients_gateway_keeps_its_records_and_uploads_them_once_the_patient_is_reactivated(
    tmp_path, client, services, db, api_server
):
    """A deactivation is reversible: the gateway is told to wait (503 with a Retry-After), not that its
    credentials are revoked (which would make it exit 77 and never come back by itself)."""
    gateway = paired_gateway(client, services, SERIALS[:1], key="patient_paused")
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store(SERIALS[0], captured_records(SERIALS[0], 3))
    services.lifecycle.deactivate(gateway.patient_id, by="admin-1", reason="paused by the clinic")
    monotonic = iter(range(0, 10_000, 30))  # 30 s between the gateway's readings of its clock
    api = ApiClient(api_server.url, gateway.gateway_id, gateway.gateway_secret, clock=lambda: next(monotonic))
    waits: list[float] = []
    uploader = Uploader(buffer, api, sleep=waits.append)
    try:
        uploader.drain(max_failures=6)  # minutes of refusals: no CredentialsRevoked
        assert buffer.pending_count() == 3 and db.session_records.count_documents({}) == 0
        assert len(waits) == 5 and min(waits) >= 600, waits  # the server's Retry-After, not a fast retry
        services.lifecycle.reactivate(gateway.patient_id)
        uploader.drain(max_failures=1)
    finally:
        api.close()
    assert buffer.pending_count() == 0 and buffer.dead_letters() == []
    buffer.close()
    assert sorted(doc["_id"] for doc in db.session_records.find({}, {"_id": 1})) == [
        f"{SERIALS[0]}:{seq}" for seq in (1, 2, 3)]
