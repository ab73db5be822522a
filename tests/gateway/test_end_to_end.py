"""End to end: fake units → real bleak → device-gateway (a real process) → the real API → FerretDB.

Along the way the links drop mid-transfer, the API is down for a while, and the gateway is killed
with SIGKILL and restarted. Every record must arrive exactly once, with device, gateway and server times.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from device_gateway.cli import main as gateway_main
from tests.support.gateway_processes import last_stored_seqs, spawn_module, wait_for
from tests.support.world import make_user

REPO_ROOT = Path(__file__).resolve().parents[2]
SERIALS = ["CTU-E0001", "CTU-E0002"]


@pytest.fixture
def patient_with_units(client, services):
    patient = make_user(client, services, key="patient_e2e", role="patient", time_zone="Europe/London")
    for serial in SERIALS:
        response = client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": serial}, headers=patient.headers)
        assert response.status_code == 201
    return patient


@pytest.mark.parametrize(
    "records_per_unit", [150, pytest.param(2500, marks=pytest.mark.slow, id="5000-records")]
)
def test_records_arrive_exactly_once_through_link_loss_api_outage_and_sigkill(
    tmp_path, client, db, api_server, patient_with_units, system_bus, records_per_unit
):
    total = records_per_unit * len(SERIALS)
    state_dir = tmp_path / "gateway"
    code = client.post(f"/api/v1/patients/{patient_with_units.id}/pairing-codes",
                       headers=patient_with_units.headers).json["code"]
    assert gateway_main(["--state-dir", str(state_dir), "pair", code, "--api", api_server.url]) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    radio = spawn_module(
        ["device_gateway.simulator.radio_process", "--serials", ",".join(SERIALS),
         "--records", str(records_per_unit), "--drop-after", "40", "--notify-interval-ms", "1"],
        env, stdout=subprocess.PIPE, text=True,
    )
    assert radio.stdout is not None and radio.stdout.readline().strip() == "READY"
    log = open(tmp_path / "gateway.log", "a")  # noqa: SIM115 - shared by the gateway processes
    gateway_args = ["device_gateway.cli", "--state-dir", str(state_dir), "run", "--interval", "0.5"]
    try:
        api_server.stop()
        gateway = spawn_module(gateway_args, env, stderr=log)
        kill_at = records_per_unit // 3
        assert wait_for(lambda: min(last_stored_seqs(state_dir).values() or [0]) >= kill_at, timeout_s=60)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()

        gateway = spawn_module(gateway_args, env, stderr=log)
        time.sleep(1.0)
        api_server.start()
        # Generous: each batch of a unit's first-contact backlog places the whole backlog again (see
        # companion.services.session_times), so 5,000 records a unit take minutes on a busy machine.
        arrived = wait_for(lambda: db.session_records.count_documents({}) >= total
                           and db.devices.count_documents({"status.firmware": {"$exists": True}}) == len(SERIALS),
                           timeout_s=600)
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=20) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()
        radio.send_signal(signal.SIGTERM)
        radio.wait(timeout=10)
        radio.stdout.close()
        log.close()

    assert arrived
    docs = list(db.session_records.find({}))
    assert len(docs) == total
    assert sorted(d["_id"] for d in docs) == sorted(f"{s}:{n}" for s in SERIALS for n in range(1, records_per_unit + 1))
    assert {d["patient_id"] for d in docs} == {patient_with_units.id}
    assert all(d["device_started_at"] and d["gateway_received_at"] and d["server_received_at"] for d in docs)
    devices = {d["_id"]: d for d in db.devices.find({})}
    assert {devices[s]["status"]["firmware"] for s in SERIALS} == {"1.4.2"}


def test_local_demo_pairs_as_the_demo_patient_and_keeps_records_flowing(tmp_path, db, services, api_server, system_bus):
    from companion.demo import seed

    seed(services, days=2, progress=False)
    serial = "CTU-M0001"
    seeded = db.session_records.count_documents({"device_serial": serial})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "demo.log", "w") as log:
        demo = spawn_module(
            ["device_gateway.demo", "--api", api_server.url, "--state-dir", str(tmp_path / "gateway"),
             "--backlog", "3", "--session-every", "0.3", "--interval", "0.3"],
            env, stderr=log,
        )
        try:
            wait_for(lambda: demo.poll() is not None
                     or db.session_records.count_documents({"device_serial": serial}) >= seeded + 5, 90)
            flowing = wait_for(lambda: db.session_records.count_documents({"device_serial": serial}) >= seeded + 5, 10)
        finally:
            demo.send_signal(signal.SIGTERM)
            exit_code = demo.wait(timeout=20)

    assert flowing and exit_code == 0
    new = list(db.session_records.find({"device_serial": serial, "gateway_id": {"$ne": None}}))
    assert min(d["device_seq"] for d in new) == seeded + 1
