"""The device-gateway command: pair, status, simulate, buffer-recover, options before or after the command,
one-line errors with distinct exit statuses, and run as a real process (SIGTERM, SIGKILL)."""

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_gateway import api, buffer_recovery
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_recovery import recover_buffer
from device_gateway.capture import capture
from device_gateway.cli import (
    EXIT_BLUETOOTH_UNAVAILABLE,
    EXIT_BUFFER_DAMAGED,
    EXIT_CONFIG,
    EXIT_CREDENTIALS_REVOKED,
    EXIT_NEEDS_ATTENTION,
    main,
)
from device_gateway.config import GatewayConfig, load_config
from device_gateway.health import RADIO, UPLOAD, GatewayHealth
from device_gateway.link import GatewayLink
from device_gateway.profiles.companion_tens import ControlOp, encode_record
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.sessions import simulated_session
from device_gateway.simulator.unit import FakeTensUnit
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


def test_a_refused_pairing_says_why_and_when_to_try_again(tmp_path, stub, capsys):
    stub.pair_scripted = [(429, {"Retry-After": "60", "Content-Type": "application/problem+json"},
                           {"title": "Too many requests", "status": 429, "detail": "too many pairing attempts"}),
                          (404, {"Content-Type": "application/problem+json"},
                           {"title": "Not found", "status": 404, "detail": "no such pairing code, or it expired"})]
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 1
    assert capsys.readouterr().err.strip() == ("pairing refused: HTTP 429: too many pairing attempts "
                                               "(try again in 60 s)")
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 1
    assert capsys.readouterr().err.strip() == "pairing refused: HTTP 404: no such pairing code, or it expired"


def test_pairing_for_another_patient_is_refused_while_the_previous_patients_records_wait(tmp_path, stub, capsys):
    config = paired_config(tmp_path, stub.url, [SERIAL])
    config.patient_ref = "p-0"
    config.save()
    _buffer_that_held(tmp_path, 2)  # two records of the previous patient's, not yet uploaded
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 1
    err = capsys.readouterr().err
    assert "another patient" in err and "2 record(s)" in err and "revoke it" in err
    assert load_config(str(tmp_path), environ={}).patient_ref == "p-0"  # the old pairing stands
    # Once they are uploaded (or for the same patient), pairing again keeps the buffer, as before.
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.mark_sent([p.record_id for p in buffer.pending(10)])
    buffer.close()
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 0
    assert load_config(str(tmp_path), environ={}).patient_ref == "p-1"


def test_pairing_for_another_patient_is_refused_after_the_config_naming_the_previous_one_was_lost(
        tmp_path, stub, capsys):
    config = paired_config(tmp_path, stub.url, [SERIAL])
    config.patient_ref = "p-0"
    config.save()
    _buffer_that_held(tmp_path, 2)  # two records of p-0's, not yet uploaded
    config.open_buffer().close()  # (the gateway ran paired for p-0: the buffer notes whose records it holds)
    (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text()[:40])  # cut short: exit 78
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 1
    err = capsys.readouterr().err
    assert "another patient" in err and "2 record(s)" in err
    assert RecordBuffer(tmp_path / "buffer.db").pending_count() == 2
    # Pairing again for the patient whose records they are is what the config's loss asks for: it goes ahead.
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.note_patient("p-1")
    buffer.close()
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 0
    assert load_config(str(tmp_path), environ={}).patient_ref == "p-1"


def test_with_no_record_of_the_previous_patient_a_pairing_takes_only_what_its_own_units_left_waiting(
        tmp_path, stub, capsys):
    paired_config(tmp_path, stub.url, [SERIAL])
    _buffer_that_held(tmp_path, 2)  # a buffer from before it noted whose records it holds
    (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text()[:40])
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store_sync("CT-OTHER1", {"sync_id": "s-1", "serial": "CT-OTHER1"})  # a unit the new pairing lacks
    buffer.close()
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 1
    assert "1 sync(s)" in capsys.readouterr().err
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.mark_syncs_sent(["s-1"])
    buffer.close()
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 0  # its unit's records


def test_environment_overrides_the_config_file(tmp_path):
    paired_config(tmp_path, "https://file.example.org", ["CT-1"])
    config = load_config(str(tmp_path), environ={"COMPANION_API_URL": "https://env.example.org",
                                                 "COMPANION_GATEWAY_ID": "gw-env"})
    assert (config.api_url, config.gateway_id) == ("https://env.example.org", "gw-env")


def _command(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device_gateway.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, timeout=60)


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("COMPANION_GATEWAY_MAX_BUFFER_BYTES", "1GiB", "COMPANION_GATEWAY_MAX_BUFFER_BYTES must be"),
    ("COMPANION_GATEWAY_MAX_BUFFER_BYTES", "0", "COMPANION_GATEWAY_MAX_BUFFER_BYTES must be"),
    ("COMPANION_GATEWAY_CA_FILE", "/nonexistent/ca.pem", "the CA file /nonexistent/ca.pem"),
])
def test_a_setting_that_cannot_be_used_ends_the_command_with_one_line(tmp_path, setting, value, said):
    paired_config(tmp_path, "http://127.0.0.1:9", ["CT-1"])
    done = _command("status", "--state-dir", str(tmp_path), **{setting: value})
    assert done.returncode == EXIT_CONFIG and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and said in done.stderr


LAN_API = "http://192.168.1.20:8080"  # stored by a gateway paired before plain http:// to another host was refused


def test_a_gateway_with_a_stored_lan_http_url_still_answers_the_commands_that_send_nothing(tmp_path, monkeypatch):
    """Upgraded, such a gateway refused even status, dead-letters and buffer-recover with exit 78: the URL was
    checked when the config was read, not where it is used to talk to the API."""
    monkeypatch.delenv("COMPANION_API_URL", raising=False)
    paired_config(tmp_path, LAN_API, [SERIAL])
    _buffer_that_held(tmp_path, 2)
    status = _command("status", "--state-dir", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert f"api:            {LAN_API} (NOT USABLE: the API URL {LAN_API} is plain http://" in status.stdout
    assert "pending:        2 record(s)" in status.stdout
    dead = _command("dead-letters", "--state-dir", str(tmp_path))
    assert (dead.returncode, dead.stdout.strip()) == (0, "0 dead letter(s)"), dead.stderr
    recover = _command("buffer-recover", "--state-dir", str(tmp_path))
    assert recover.returncode == 0 and "is intact" in recover.stdout, recover.stderr


def test_a_command_that_talks_to_the_api_over_a_stored_lan_http_url_says_the_way_out_in_one_line(
        tmp_path, stub, isolated_bus_env, monkeypatch, capsys):
    monkeypatch.delenv("COMPANION_API_URL", raising=False)
    stub.devices = ["CT-000001"]
    paired_config(tmp_path, LAN_API, stub.devices)
    for command in (["run"], ["simulate", "--units", "1"]):
        assert main(["--state-dir", str(tmp_path), *command]) == EXIT_CONFIG
        [said] = capsys.readouterr().err.strip().splitlines()
        assert said.startswith(f"device-gateway: the API URL {LAN_API} is plain http:// to another host")
        assert "Set COMPANION_API_URL=https://... (no new pairing needed" in said
        assert "TLS-terminating proxy" in said and "loopback" in said
    assert stub.stored == {} and not (tmp_path / "buffer.db").exists()  # nothing sent, nothing opened
    # The way out it gives: the environment's URL (here the stub on loopback) with the pairing it has.
    monkeypatch.setenv("COMPANION_API_URL", stub.url)
    assert main(["--state-dir", str(tmp_path), "simulate", "--units", "1", "--records", "3"]) == 0
    assert sorted(stub.stored) == [f"CT-000001:{n}" for n in range(1, 4)]
    assert load_config(str(tmp_path), environ={}).api_url == LAN_API  # the stored pairing is as it was


def test_a_config_file_cut_short_says_so_in_one_line_and_pairing_again_replaces_it(tmp_path, stub):
    paired_config(tmp_path, stub.url, ["CT-1"])
    config = tmp_path / "config.json"
    config.write_text(config.read_text()[:40])  # a power cut while an older gateway wrote it in place
    done = _command("status", "--state-dir", str(tmp_path))
    assert done.returncode == EXIT_CONFIG and len(done.stderr.splitlines()) == 1
    assert "config.json cannot be read" in done.stderr and "pair" in done.stderr
    assert main(["--state-dir", str(tmp_path), "pair", "ABC-123", "--api", stub.url]) == 0
    assert load_config(str(tmp_path), environ={}).gateway_id == "gw-1"
    assert not (tmp_path / "config.json.tmp").exists()  # written beside, then renamed over


def test_status_shows_the_queue_but_never_the_secret(tmp_path, stub, capsys):
    paired_config(tmp_path, stub.url, ["CT-000001"]).open_buffer().close()
    assert main(["--state-dir", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "gw-1" in out and "pending:        0 record(s)" in out
    assert "s3cret" not in out


def test_options_may_come_after_the_command(tmp_path, capsys):
    (tmp_path / "after").mkdir()
    (tmp_path / "before").mkdir()
    assert main(["status", "--state-dir", str(tmp_path / "after"), "-v"]) == 0
    assert main(["--state-dir", str(tmp_path / "before"), "status"]) == 0
    out = capsys.readouterr().out
    assert f"state dir:      {tmp_path / 'after'}" in out and f"state dir:      {tmp_path / 'before'}" in out


def test_status_creates_neither_a_buffer_nor_the_state_dir(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    assert main(["status", "--state-dir", str(state)]) == 0
    assert "buffer:         none yet" in capsys.readouterr().out
    assert list(state.iterdir()) == []
    # A mistyped --state-dir is not a gateway "not paired yet": it fails, names the directory, creates nothing.
    typo = tmp_path / "stat"
    assert main(["status", "--state-dir", str(typo)]) == 66
    captured = capsys.readouterr()
    assert captured.out == "" and f"no state directory at {typo}" in captured.err
    assert not typo.exists()


def test_status_shows_each_loops_last_error_and_since_when_and_says_a_failing_one_needs_attention(tmp_path, capsys):
    health = GatewayHealth(tmp_path / "health.json")
    health.failed(UPLOAD, "RetryLater: token renewal: HTTP 503")
    health.failed(RADIO, "BluetoothUnavailable: BlueZ (org.bluez) is not running")
    health.succeeded(RADIO)

    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_NEEDS_ATTENTION

    out = capsys.readouterr().out
    upload = health.loops[UPLOAD]
    assert f"upload loop:    FAILING since {upload.failing_since} (1 attempt(s)): RetryLater: token renewal: HTTP 503" in out
    assert "radio loop:     ok since " in out and "BluetoothUnavailable: BlueZ (org.bluez) is not running" in out

    health.succeeded(UPLOAD)  # what was wrong is still shown, but nothing fails now
    assert main(["status", "--state-dir", str(tmp_path)]) == 0


def test_status_says_a_full_disk_needs_attention_whatever_health_json_last_said(tmp_path, capsys, monkeypatch):
    """The buffer cannot store a record on a full disk, and health.json (beside it) may not have been rewritten to
    say so: ``status`` looks at the free space itself. (The one stand-in here: a real full filesystem needs a mount.)"""
    GatewayHealth(tmp_path / "health.json")  # nothing failing, as the gateway last wrote
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "MiB free" in capsys.readouterr().out

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=12 * 1024))

    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_NEEDS_ATTENTION
    assert ("disk:           FULL: 12 KiB free in the state directory: new records cannot be stored, so units are "
            "not collected") in capsys.readouterr().out


def test_status_says_a_health_file_it_cannot_parse_needs_attention(tmp_path, capsys):
    """A power cut while health.json was rewritten in place (on a full disk) can leave it part old, part new: what
    it held about failing units is unknown, which is not "nothing failing"."""
    (tmp_path / "health.json").write_text('{"updated_at": "2026-03-01T08:00:00+00:00", "units": {"CT-0')

    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_NEEDS_ATTENTION
    assert f"health:         UNREADABLE: {tmp_path / 'health.json'} does not parse" in capsys.readouterr().out


SERIAL = "CT-000001"


def _damage(state_dir: Path, how: str) -> None:
    db = state_dir / "buffer.db"
    if how == "truncated":
        db.write_bytes(b"")
    elif how == "deleted":
        for side in ("", "-wal", "-shm"):
            Path(f"{db}{side}").unlink(missing_ok=True)
    else:
        db.write_bytes(os.urandom(16384))


def _buffer_that_held(state_dir: Path, last_seq: int, first_seq: int = 1) -> None:
    buffer = RecordBuffer(state_dir / "buffer.db")
    records = [simulated_session(seq, 1_760_000_000 + seq * 3600) for seq in range(first_seq, last_seq + 1)]
    buffer.store(SERIAL, [capture(SERIAL, r, encode_record(r), 0.0, datetime(2026, 1, 1, tzinfo=UTC)) for r in records])
    buffer.close()


DAMAGE = ["truncated", "deleted", "garbage"]
EXPECTED_PROBLEM = {
    "truncated": "is empty, but its ledger", "deleted": "is missing, but its ledger", "garbage": "is damaged: file is not",
}


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("command", ["status", "run", "simulate"])
def test_damaged_or_lost_buffer_ends_the_command_with_one_line_naming_the_file_and_the_recovery(
    tmp_path, stub, capsys, how, command
):
    paired_config(tmp_path, stub.url, [SERIAL])
    _buffer_that_held(tmp_path, 3)
    _damage(tmp_path, how)

    assert main([command, "--state-dir", str(tmp_path)]) == EXIT_BUFFER_DAMAGED

    err_lines = capsys.readouterr().err.splitlines()
    assert len(err_lines) == 1, err_lines
    assert err_lines[0].startswith(f"device-gateway: buffer {tmp_path / 'buffer.db'} {EXPECTED_PROBLEM[how]}")
    assert err_lines[0].endswith(f"To recover: device-gateway buffer-recover --state-dir {tmp_path}")
    if how == "deleted":
        assert not (tmp_path / "buffer.db").exists()


def test_partly_corrupted_buffer_ends_the_real_process_with_one_line_and_no_traceback(tmp_path):
    _buffer_that_held(tmp_path, 300)
    db = tmp_path / "buffer.db"
    raw = bytearray(db.read_bytes())
    raw[4096 * 3 : 4096 * 4] = os.urandom(4096)
    db.write_bytes(bytes(raw))

    done = subprocess.run([sys.executable, "-m", "device_gateway.cli", "status", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)

    assert done.returncode == EXIT_BUFFER_DAMAGED
    assert done.stderr.splitlines() == [
        f"device-gateway: buffer {db} fails SQLite's integrity check (*** in database main *** Page 4: "
        f"btreeInitPage() returns error code 11). To recover: device-gateway buffer-recover --state-dir {tmp_path}"
    ]


def _pull(state_dir: Path, unit: FakeTensUnit) -> None:
    """Pull the unit into the gateway's buffer with the real link over the fake BlueZ."""
    config = load_config(str(state_dir), environ={})

    async def pull():
        fake = await FakeBluez().start()
        buffer = config.open_buffer()
        try:
            fake.add_unit(unit)
            await GatewayLink(buffer, [unit.serial]).run_once(scan_timeout_s=5)
        finally:
            buffer.close()
            await fake.stop()

    asyncio.run(pull())


@pytest.mark.parametrize("how", DAMAGE)
def test_buffer_recover_sets_the_damage_aside_and_the_link_resumes_after_what_the_unit_was_acknowledged(
    tmp_path, stub, system_bus, capsys, how
):
    paired_config(tmp_path, stub.url, [SERIAL])
    unit = FakeTensUnit.with_history(SERIAL, "C0:FF:EE:00:00:01", count=5)
    _pull(tmp_path, unit)
    assert unit.acked_up_to == 5
    _damage(tmp_path, how)

    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_BUFFER_DAMAGED
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"units resume: {SERIAL} after 5" in out
    if how != "deleted":
        assert "moved aside: " in out and list(tmp_path.glob("buffer-damaged-*.db"))
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert f"{SERIAL}: last stored sequence 5" in capsys.readouterr().out

    unit.record_sessions(4)
    unit.records = unit.records[2:]  # the unit's memory wrapped: it no longer holds 6 and 7
    _pull(tmp_path, unit)

    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert [p.payload["device_seq"] for p in buffer.pending(10)] == [8, 9]
    replaced, missing = buffer.dead_letters()
    assert (missing["reason"], missing["payload"]) == (
        "unit no longer holds these records", '{"missing_from_seq": 6, "missing_to_seq": 7}'
    ), "resumed after 5: the gap is noted, where a first contact would have started silently at 8"
    # The server is told the buffer was replaced: what it held unsent (here, the five pulled) may be lost.
    assert replaced["reason"].startswith("the gateway's buffer was replaced") and replaced["source"] == "unit"
    assert json.loads(replaced["payload"])["resumes_after_seq"] == 5
    # Asked from the record after the position; the unit sent 8 first, so 6 and 7 it does not hold.
    assert [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM] == [1, 6]
    # The server keeps one report per gateway and dead-letter id: the new buffer's ids are above any the lost
    # one used (it numbered from 1), so its reports are never taken for ones the server already has.
    assert buffer.dead_letters()[0]["id"] > 10**12
    buffer.close()


def _image_of_the_buffer(state_dir: Path) -> Path:
    """A copy of the buffer's files as they are now (an SD card image), in ``state_dir/backup``."""
    backup = state_dir / "backup"
    backup.mkdir()
    for side in ("", "-wal", "-shm"):
        if Path(f"{state_dir / 'buffer.db'}{side}").exists():
            shutil.copy(f"{state_dir / 'buffer.db'}{side}", backup)
    return backup


def _restore_image(backup: Path, state_dir: Path) -> None:
    """The buffer's files replaced by the image's."""
    for side in ("", "-wal", "-shm"):
        Path(f"{state_dir / 'buffer.db'}{side}").unlink(missing_ok=True)
        if Path(f"{backup / 'buffer.db'}{side}").exists():
            shutil.copy(f"{backup / 'buffer.db'}{side}", state_dir)


def test_buffer_recover_carries_over_what_an_older_copy_still_holds_and_tells_the_server(
        tmp_path, stub, system_bus, capsys):
    paired_config(tmp_path, stub.url, [SERIAL])
    unit = FakeTensUnit.with_history(SERIAL, "C0:FF:EE:00:00:01", count=5)
    _pull(tmp_path, unit)  # 1..5 stored and acknowledged (freed by the unit), not uploaded yet
    backup = _image_of_the_buffer(tmp_path)
    unit.record_sessions(5)
    _pull(tmp_path, unit)  # 6..10 stored and acknowledged
    _restore_image(backup, tmp_path)  # the SD card is restored from last night's image: an older buffer
    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_BUFFER_DAMAGED
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0
    assert "carried over: 5 record(s)" in capsys.readouterr().out

    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert [p.payload["device_seq"] for p in buffer.pending(100)] == [1, 2, 3, 4, 5]  # queued again, readable
    [replaced] = buffer.dead_letters()
    assert json.loads(replaced["payload"])["queued_records_carried_over"] == 5  # 6..10 are lost: said so
    assert buffer.last_stored_seq(SERIAL) == 10  # the unit resumes after what it was acknowledged
    buffer.close()


def test_buffer_recover_carries_over_the_older_copys_syncs_and_unreported_dead_letters_too(
        tmp_path, stub, system_bus, capsys):
    config = paired_config(tmp_path, stub.url, [SERIAL])
    config.patient_ref = "p-0"
    config.save()
    unit = FakeTensUnit.with_history(SERIAL, "C0:FF:EE:00:00:01", count=4, corrupt_seqs={3})
    _pull(tmp_path, unit)  # 1, 2 and 4 stored, 3's frame dead-lettered, the transfer's sync kept; none uploaded
    backup = _image_of_the_buffer(tmp_path)
    unit.record_sessions(2)
    _pull(tmp_path, unit)
    _restore_image(backup, tmp_path)
    older = RecordBuffer(backup / "buffer.db", key_file=tmp_path / "buffer.key", ledger_file=tmp_path / "scratch-ledger.json")
    older_syncs = older.pending_syncs(100)
    [frame] = older.dead_letters()
    older.close()
    config.patient_ref = None  # the config went with the SD card too: whose records they are, the buffer says
    config.save()
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0
    capsys.readouterr()

    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert [p.payload["device_seq"] for p in buffer.pending(100)] == [1, 2, 4]
    assert buffer.pending_syncs(100) == older_syncs and older_syncs  # the readings the records are placed by
    carried, replaced = buffer.dead_letters(unreported_only=True)
    assert (carried["payload"], carried["reason"], carried["source"], carried["frame_slot"]) == (
        frame["payload"], frame["reason"], "unit", 3)  # its place kept: sent again, it is still one
    assert {k: json.loads(replaced["payload"])[k] for k in ("queued_records_carried_over", "syncs_carried_over",
                                                            "dead_letters_carried_over")} == {
        "queued_records_carried_over": 3, "syncs_carried_over": len(older_syncs), "dead_letters_carried_over": 1}
    assert buffer.patient() == "p-0"  # a pairing for another patient is still refused while they wait
    buffer.close()


def test_buffer_recover_leaves_an_intact_buffer_alone(tmp_path, capsys):
    _buffer_that_held(tmp_path, 3)
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0
    assert "is intact; nothing to recover" in capsys.readouterr().out
    assert not list(tmp_path.glob("buffer-damaged-*"))
    assert RecordBuffer(tmp_path / "buffer.db").pending_count() == 3


def _older_image_restored(state_dir: Path) -> None:
    """1..5 queued, an SD-card image taken, 6..10 queued (and acknowledged), then the image restored."""
    _buffer_that_held(state_dir, 5)
    backup = _image_of_the_buffer(state_dir)
    _buffer_that_held(state_dir, 10, first_seq=6)
    _restore_image(backup, state_dir)


def test_after_buffer_recover_a_unit_that_keeps_what_it_was_acknowledged_is_still_collected_and_told_once(
        tmp_path, stub, system_bus):
    """Decided: the position buffer-recover takes from the ledger has no stored record's hash, and a unit may keep
    the records it was acknowledged (the profile lets it), so holding them proves nothing: refusing it as a
    restarted counter would stop its collection for good. It is asked from the record after, and a dead letter
    (reported to the server) says once that records at or below the position could not be checked: had its
    counter also restarted, those were not collected."""
    paired_config(tmp_path, stub.url, [SERIAL])
    _older_image_restored(tmp_path)  # the ledger says 10
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0  # resumes after 10, no record there
    unit = FakeTensUnit(SERIAL, "C0:FF:EE:00:00:01")
    unit.record_sessions(12)  # it still holds 1..10 (acknowledged before) and 11..12 are new

    _pull(tmp_path, unit)
    _pull(tmp_path, unit)

    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert [p.payload["device_seq"] for p in buffer.pending(100)] == [1, 2, 3, 4, 5, 11, 12]  # carried over; new
    unchecked = [d for d in buffer.dead_letters() if "could not be checked" in d["reason"]]
    assert len(unchecked) == 1
    buffer.close()


def test_buffer_recover_keeps_the_record_stored_last_of_a_unit_the_older_copy_is_not_behind_on(
        tmp_path, stub, system_bus, capsys):
    other = FakeTensUnit.with_history("CT-000002", "C0:FF:EE:00:00:02", count=5)
    paired_config(tmp_path, stub.url, [SERIAL, other.serial])
    unit = FakeTensUnit.with_history(SERIAL, "C0:FF:EE:00:00:01", count=3)
    held = list(unit.records)
    _pull(tmp_path, unit)  # 1..3 stored and acknowledged...
    unit.records = held  # ... but the unit never heard it
    _pull(tmp_path, other)
    backup = _image_of_the_buffer(tmp_path)
    other.record_sessions(5)
    _pull(tmp_path, other)  # the image is behind on the other unit only
    _restore_image(backup, tmp_path)
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    unit.record_sessions(2)

    _pull(tmp_path, unit)

    # Record 3 came back as the one the moved buffer stored last: a lost acknowledgement, not a restarted counter.
    assert unit.records == []
    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert [p.payload["device_seq"] for p in buffer.pending(100) if p.payload["device_serial"] == SERIAL] == [
        1, 2, 3, 4, 5]
    buffer.close()


def _recovered_once(state_dir: Path) -> None:
    """The state a single, uninterrupted buffer-recover of ``_older_image_restored`` leaves."""
    assert not (state_dir / "buffer.recovery.json").exists() and not list(state_dir.glob("buffer.recovering*"))
    assert len(list(state_dir.glob("buffer-damaged-*.db"))) == 1
    buffer = RecordBuffer(state_dir / "buffer.db")
    try:
        assert [p.payload["device_seq"] for p in buffer.pending(100)] == [1, 2, 3, 4, 5]
        [replaced] = buffer.dead_letters()
        assert replaced["reason"].startswith("the gateway's buffer was replaced")
        assert json.loads(replaced["payload"])["queued_records_carried_over"] == 5
        assert buffer.last_stored_seq(SERIAL) == 10
    finally:
        buffer.close()


def test_buffer_recover_stopped_while_salvaging_is_finished_by_running_it_again(tmp_path, stub, monkeypatch, capsys):
    paired_config(tmp_path, stub.url, [SERIAL])
    _older_image_restored(tmp_path)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt  # while the (large) moved buffer is copied and read

    with monkeypatch.context() as patched:
        patched.setattr(buffer_recovery, "_salvage", ctrl_c)
        assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 130
    capsys.readouterr()

    # Until it is finished, the half-made buffer is refused like a damaged one, naming the way out.
    assert main(["status", "--state-dir", str(tmp_path)]) == EXIT_BUFFER_DAMAGED
    err = capsys.readouterr().err
    assert "buffer-recover that stopped before it finished" in err and "To recover: device-gateway buffer-recover" in err
    assert main(["buffer-recover", "--state-dir", str(tmp_path)]) == 0  # not "intact; nothing to recover"
    out = capsys.readouterr().out
    assert "finished the recovery that had stopped" in out and "carried over: 5 record(s)" in out
    _recovered_once(tmp_path)


def test_buffer_recover_stopped_after_moving_the_files_carries_them_over_when_run_again(tmp_path, stub, monkeypatch):
    config = paired_config(tmp_path, stub.url, [SERIAL])
    _older_image_restored(tmp_path)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # between moving the damaged files and making the new buffer

    with monkeypatch.context() as patched:
        patched.setattr(buffer_recovery, "RecordBuffer", stop)
        with pytest.raises(KeyboardInterrupt):
            recover_buffer(config)

    again = recover_buffer(config)

    assert (again.intact, again.carried_over) == (False, 5), "moved nothing the second time, salvaged nothing"
    assert again.resumed
    assert [path.name for path in again.moved] == [path.name for path in tmp_path.glob("buffer-damaged-*.db")]
    _recovered_once(tmp_path)


def test_buffer_recover_stopped_once_the_new_buffer_is_in_place_does_not_replace_it_again(
        tmp_path, stub, monkeypatch):
    config = paired_config(tmp_path, stub.url, [SERIAL])
    _older_image_restored(tmp_path)
    move = buffer_recovery._move

    def move_then_stop(source, target):
        move(source, target)
        if target == config.buffer_path:
            raise KeyboardInterrupt  # the new buffer is in place, its marker not yet deleted

    with monkeypatch.context() as patched:
        patched.setattr(buffer_recovery, "_move", move_then_stop)
        with pytest.raises(KeyboardInterrupt):
            recover_buffer(config)

    again = recover_buffer(config)

    assert (again.intact, again.carried_over, again.resumes_after) == (False, 5, {SERIAL: 10})
    _recovered_once(tmp_path)


def test_scan_without_a_system_bus_says_so_in_one_line(tmp_path):
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "device_gateway.cli", "scan", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)

    assert done.returncode == EXIT_BLUETOOTH_UNAVAILABLE
    assert done.stderr.splitlines() == [
        "device-gateway: cannot reach the D-Bus system bus at unix:path=/nonexistent/bus "
        "(FileNotFoundError: [Errno 2] No such file or directory)"
    ]


def test_run_without_bluez_on_the_system_bus_ends_with_one_line_and_no_traceback(tmp_path, stub, system_bus):
    paired_config(tmp_path, stub.url, [SERIAL])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "device_gateway.cli", "run", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)

    assert done.returncode == EXIT_BLUETOOTH_UNAVAILABLE
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "device-gateway: BlueZ (org.bluez) is not running on the D-Bus system bus; is bluetoothd running?"
    )


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


def test_simulate_with_more_units_than_are_bound_pulls_only_the_bound_ones_and_finishes(
        tmp_path, stub, isolated_bus_env, capsys):
    stub.devices = ["CT-000001", "CT-000002"]
    paired_config(tmp_path, stub.url, stub.devices)

    assert main(["--state-dir", str(tmp_path), "simulate", "--units", "3", "--records", "4"]) == 0

    assert sorted(stub.stored) == sorted(f"{s}:{n}" for s in stub.devices for n in range(1, 5))
    assert "CT-SIM-0003: in range but not bound to this gateway's patient; not pulled" in capsys.readouterr().err


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


def test_run_whose_credentials_are_refused_at_every_renewal_ends_saying_so_with_its_own_status(
    tmp_path, stub, radio, monkeypatch, capsys
):
    paired_config(tmp_path, stub.url, ["CT-000001"])
    stub.refuse_tokens = True
    monkeypatch.setattr(api, "REVOKED_AFTER_S", 0.0)  # the minute of refusals, shortened; the count stays 3

    assert main(["run", "--state-dir", str(tmp_path), "--interval", "0.2"]) == EXIT_CREDENTIALS_REVOKED

    assert stub.token_requests >= api.REVOKED_AFTER_REFUSALS
    assert re.fullmatch(
        r"device-gateway: gateway token: credentials refused \(HTTP 401\), 3 times in a row over \d+ s: this gateway "
        r"was unpaired or revoked\. Pair it again with `device-gateway pair CODE`; buffered records are kept",
        capsys.readouterr().err.splitlines()[-1],
    )
    buffer = RecordBuffer(tmp_path / "buffer.db")
    assert buffer.last_stored_seq("CT-000001") == 300 and buffer.pending_count() == 300, "records are kept"
    buffer.close()
