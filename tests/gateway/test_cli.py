"""The device-gateway command: pair, status, simulate, and run as a real process (SIGTERM, SIGKILL)."""

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from device_gateway.buffer import RecordBuffer
from device_gateway.cli import main
from device_gateway.config import GatewayConfig, load_config
from tests.support.gateway_processes import last_stored_seqs, spawn_module, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def isolated_bus_env(monkeypatch):
    """``simulate`` points this process at its private bus; restore the variable afterwards."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")


def paired_config(state_dir: Path, api_url: str, serials: list[str]) -> GatewayConfig:
    config = GatewayConfig(
        state_dir=str(state_dir), api_url=api_url, gateway_id="gw-1", gateway_secret="s3cret",
        device_serials=serials, paired_at="2026-01-01T00:00:00+00:00",
    )
    config.save()
    return config


def test_pair_stores_credentials_in_a_private_config_file(tmp_path, stub):
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url, "--name", "hall"]) == 0
    config = load_config(str(tmp_path), environ={})
    assert (config.gateway_id, config.device_serials, config.api_url) == ("gw-1", ["CT-000001"], stub.url)
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600


def test_environment_overrides_the_config_file(tmp_path):
    paired_config(tmp_path, "http://file", ["CT-1"])
    config = load_config(str(tmp_path), environ={"COMPANION_API_URL": "http://env", "COMPANION_GATEWAY_ID": "gw-env"})
    assert (config.api_url, config.gateway_id) == ("http://env", "gw-env")


def test_status_shows_the_queue_but_never_the_secret(tmp_path, stub, capsys):
    paired_config(tmp_path, stub.url, ["CT-000001"])
    assert main(["--state-dir", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "gw-1" in out and "pending:        0 record(s)" in out
    assert "s3cret" not in out


def test_simulate_without_pairing_keeps_records_in_the_buffer(tmp_path, isolated_bus_env):
    assert main(["--state-dir", str(tmp_path), "simulate", "--units", "2", "--records", "5"]) == 0
    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert buffer.status().units == {"CT-SIM-0001": 5, "CT-SIM-0002": 5}
    buffer.close()


def test_simulate_when_paired_uploads_every_record_and_reports_units(tmp_path, stub, isolated_bus_env, capsys):
    stub.devices = ["CT-000001", "CT-000002"]
    paired_config(tmp_path, stub.url, stub.devices)

    assert main(["--state-dir", str(tmp_path), "simulate", "--units", "2", "--records", "6", "--drop-after", "2"]) == 0

    assert sorted(stub.stored) == sorted(f"{s}:{n}" for s in stub.devices for n in range(1, 7))
    assert {d["serial"] for d in stub.statuses[-1]} == set(stub.devices)
    assert "uploaded 12/12" in capsys.readouterr().err


@pytest.fixture
def radio(system_bus):
    """A fake radio process with one unit of 300 records, on the test's private bus."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = spawn_module(
        ["device_gateway.simulator.radio_process", "--serials", "CT-000001", "--records", "300",
         "--notify-interval-ms", "4"],
        env, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    yield env
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    proc.stdout.close()


def _gateway(state_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(state_dir / "gateway.log", "a") as log:
        return spawn_module(
            ["device_gateway.cli", "--state-dir", str(state_dir), "run", "--interval", "0.5"],
            env, stderr=log,
        )


def test_run_uploads_everything_and_stops_cleanly_on_sigterm(tmp_path, stub, radio):
    paired_config(tmp_path, stub.url, ["CT-000001"])
    gateway = _gateway(tmp_path, radio)

    delivered = wait_for(lambda: len(stub.stored) == 300, timeout_s=45)
    gateway.send_signal(signal.SIGTERM)

    assert gateway.wait(timeout=20) == 0
    assert delivered
    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert (buffer.pending_count(), buffer.last_stored_seq("CT-000001")) == (0, 300)
    buffer.close()


def _last_stored_seq(state_dir: Path) -> int:
    return last_stored_seqs(state_dir).get("CT-000001", 0)


def test_gateway_killed_with_sigkill_and_restarted_delivers_every_record_exactly_once(tmp_path, stub, radio):
    paired_config(tmp_path, stub.url, ["CT-000001"])
    kill_points = [
        lambda: _last_stored_seq(tmp_path) >= 40,
        lambda: _last_stored_seq(tmp_path) >= 150,
        lambda: len(stub.stored) >= 160,
    ]
    for reached in kill_points:
        gateway = _gateway(tmp_path, radio)
        wait_for(reached, timeout_s=30)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
    gateway = _gateway(tmp_path, radio)

    delivered = wait_for(lambda: len(stub.stored) == 300, timeout_s=45)
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=20)

    missing = sorted(set(range(1, 301)) - {record["device_seq"] for record in stub.stored.values()})
    assert delivered, f"{len(missing)} record(s) never reached the API, from {missing[:5]}"
    assert sorted(stub.stored) == sorted(f"CT-000001:{n}" for n in range(1, 301))
    assert {record["device_seq"] for record in stub.stored.values()} == set(range(1, 301))
