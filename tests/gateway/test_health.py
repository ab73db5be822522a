"""The gateway's loop health: what an error is called, since when a loop fails, and what ``status`` reads."""

import sqlite3
from datetime import UTC, datetime, timedelta

from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.health import (
    HEALTH_FILE_ROOM,
    RADIO,
    UPLOAD,
    GatewayHealth,
    describe_error,
    read_health,
    read_unit_health,
)


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_errors_from_the_gateway_and_its_infrastructure_keep_their_message():
    assert describe_error(sqlite3.OperationalError("database or disk is full")) == (
        "OperationalError: database or disk is full"
    )
    assert describe_error(BufferDamaged("/s/buffer.db", "is empty")) == "BufferDamaged: buffer /s/buffer.db is empty"


def test_other_errors_are_named_by_type_and_place_never_by_message():
    described = describe_error(raised(ValueError("duration_s=2700 intensity 31.5 mA")))
    assert described.startswith("ValueError at test_health.py:") and "2700" not in described


def test_a_description_fits_the_servers_last_error_field():
    assert len(describe_error(OSError("x" * 500))) == 200


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_loop_is_failing_from_its_first_failure_until_it_works_again_and_keeps_its_last_error():
    clock = Clock()
    health = GatewayHealth(None, now=clock)
    health.failed(UPLOAD, "RetryLater: HTTP 503")
    clock.now += timedelta(minutes=5)
    health.failed(UPLOAD, "RetryLater: token renewal: HTTP 503")
    upload = health.loops[UPLOAD]
    assert (upload.failing, upload.failures, upload.failing_since) == (True, 2, "2026-03-01T08:00:00+00:00")

    clock.now += timedelta(minutes=1)
    health.succeeded(UPLOAD)

    assert (upload.failing, upload.failures, upload.recovered_at) == (False, 0, "2026-03-01T08:06:00+00:00")
    assert upload.last_error == "RetryLater: token renewal: HTTP 503"


def test_the_error_reported_with_unit_status_is_that_of_a_loop_failing_now():
    health = GatewayHealth(None)
    assert health.current_error() is None
    health.failed(RADIO, "BluetoothUnavailable: BlueZ (org.bluez) is not running")
    assert health.current_error() == "gateway radio loop: BluetoothUnavailable: BlueZ (org.bluez) is not running"
    health.succeeded(RADIO)
    assert health.current_error() is None


def test_status_reads_what_the_running_gateway_wrote(tmp_path):
    health = GatewayHealth(tmp_path / "health.json")
    health.failed(RADIO, "BleakDBusError: org.bluez gone")

    loops = read_health(tmp_path / "health.json")

    assert loops[RADIO].failing and loops[RADIO].last_error == "BleakDBusError: org.bluez gone"
    assert not loops[UPLOAD].failing


def test_no_health_file_reads_as_no_error_reported(tmp_path):
    assert read_health(tmp_path / "health.json") == {}
    (tmp_path / "health.json").write_text("{not json")
    assert read_health(tmp_path / "health.json") == {}


def test_a_gateway_restarted_after_a_failure_marks_the_loop_recovered_once_it_works(tmp_path):
    GatewayHealth(tmp_path / "health.json").failed(UPLOAD, "CredentialsRevoked: gateway token: credentials refused")

    restarted = GatewayHealth(tmp_path / "health.json")
    assert restarted.loops[UPLOAD].failing
    restarted.succeeded(UPLOAD)

    upload = read_health(tmp_path / "health.json")[UPLOAD]
    assert not upload.failing and upload.last_error == "CredentialsRevoked: gateway token: credentials refused"


def test_a_unit_fails_from_its_first_refused_pull_until_one_collects_it(tmp_path):
    clock = Clock()
    health = GatewayHealth(tmp_path / "health.json", now=clock)
    health.unit_failed("CT-000001", "PositionNotCheckedYet: server unreachable")
    clock.now += timedelta(minutes=5)
    health.unit_failed("CT-000001", "sequence went back: its counter restarted")

    unit = GatewayHealth(tmp_path / "health.json").units["CT-000001"]  # as a restarted gateway reads it
    assert (unit.failing_since, unit.last_error_at, unit.failures) == (
        "2026-03-01T08:00:00+00:00", "2026-03-01T08:05:00+00:00", 2)
    assert unit.last_error == "sequence went back: its counter restarted"
    assert health.current_error() is None  # a unit's own error goes to the server in its own status

    health.unit_collected("CT-000001")
    assert read_unit_health(tmp_path / "health.json") == {}


def test_on_a_full_disk_health_json_is_rewritten_in_place_and_reads_whole(tmp_path, monkeypatch):
    """No new file can be made on a full disk (the temporary one write_atomically renames): the file, kept with room
    since the gateway started, is overwritten in place, and a shorter content leaves nothing of the longer one."""
    import errno

    import device_gateway.health as health_module

    health = GatewayHealth(tmp_path / "health.json")
    assert (tmp_path / "health.json").stat().st_size == HEALTH_FILE_ROOM  # the room, taken while there is some
    health.unit_failed("CT-000001", "x" * 200)
    health.unit_failed("CT-000002", "OperationalError: database or disk is full")

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(health_module, "write_atomically", disk_full)
    health.unit_collected("CT-000001")
    health.failed(RADIO, "OSError: [Errno 28] No space left on device")

    assert set(read_unit_health(tmp_path / "health.json")) == {"CT-000002"}
    assert read_health(tmp_path / "health.json")[RADIO].failing
    assert (tmp_path / "health.json").stat().st_size == HEALTH_FILE_ROOM and not (tmp_path / "health.json.tmp").exists()


def test_a_health_file_from_before_units_were_kept_reads_as_no_unit_failing(tmp_path):
    (tmp_path / "health.json").write_text('{"updated_at": "2026-03-01T08:00:00+00:00", "loops": {}}')
    assert read_unit_health(tmp_path / "health.json") == {}


def test_review_a_unit_refused_every_cycle_does_not_rewrite_health_json_every_cycle(tmp_path, monkeypatch):
    """A unit refused for good (a restarted counter waits for a person) is pulled every 30 s: health.json, on the
    gateway's SD card, must not be rewritten (two fsyncs and a rename) each time nothing but the count changed."""
    import device_gateway.health as health_module

    writes = []
    real = health_module.write_atomically
    monkeypatch.setattr(health_module, "write_atomically", lambda path, text: (writes.append(path), real(path, text)))
    clock = Clock()
    health = GatewayHealth(tmp_path / "health.json", now=clock)
    for _ in range(120):  # one hour of 30 s cycles
        health.unit_failed("CT-000001", "sequence went back: its counter restarted")
        clock.now += timedelta(seconds=30)

    assert len(writes) <= 2, f"health.json rewritten {len(writes)} times in an hour for one unchanged error"


def test_a_unit_refused_again_with_the_same_error_is_written_hourly_and_when_the_gateway_stops(tmp_path):
    clock = Clock()
    health = GatewayHealth(tmp_path / "health.json", now=clock)
    for _ in range(3):
        health.unit_failed("CT-000001", "sequence went back: its counter restarted")
        clock.now += timedelta(seconds=30)
    assert read_unit_health(tmp_path / "health.json")["CT-000001"].failures == 1  # the first, written at once

    clock.now += timedelta(hours=1)
    health.unit_failed("CT-000001", "sequence went back: its counter restarted")
    assert read_unit_health(tmp_path / "health.json")["CT-000001"].failures == 4  # an hour after the last write

    clock.now += timedelta(seconds=30)
    health.unit_failed("CT-000001", "sequence went back: its counter restarted")
    health.flush()  # the gateway stops
    unit = read_unit_health(tmp_path / "health.json")["CT-000001"]
    assert (unit.failures, unit.last_error_at) == (5, clock.now.isoformat())
