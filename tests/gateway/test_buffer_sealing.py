"""The buffer at rest: record content sealed (AES-GCM), its key file, and no PHI readable in the SQLite files."""

import dataclasses
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_gateway import sealing
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_status import inspect_buffer
from device_gateway.capture import capture
from device_gateway.config import load_config
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.sealing import SealingError
from device_gateway.simulator.sessions import simulated_session

SERIAL = "CT-000001"
# Values no other test data contains, so a hit in the raw files can only come from these records.
CANARY_TIME = "2025-12-24T13:37:42.420Z"
CANARY_HASH = "c4n4ry" + "9" * 58
CANARY_FRAME = b"QZXVY-CANARYSSON-FRAME"


def captured(seq: int, **changes):
    record = simulated_session(seq, 1_760_000_000 + seq * 3600)
    base = capture(SERIAL, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC))
    return dataclasses.replace(base, **changes)


def canaries() -> list[bytes]:
    values = [CANARY_TIME.encode(), CANARY_HASH.encode(), b"37.219", b"41.733", CANARY_FRAME, CANARY_FRAME.hex().encode()]
    return values + [b'"intensity_mean_ma"', b'"device_started_at"']


def hits(files: list[Path], needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in files:
        raw = path.read_bytes()
        found[path.name] = [n.decode() for n in needles if n in raw]
    return found


def test_canary_values_are_not_readable_in_the_database_or_its_wal(tmp_path):
    db = tmp_path / "buffer.db"
    buffer = RecordBuffer(db)
    buffer.store(SERIAL, [
        captured(1, device_started_at=CANARY_TIME, content_hash=CANARY_HASH, intensity_mean_ma=37.219),
        captured(2, intensity_mean_ma=41.733),
        captured(3),
    ])
    buffer.dead_letter([(f"{SERIAL}:2", "device time in the future")])
    buffer.dead_letter_frame(SERIAL, CANARY_FRAME, "BadChecksum", 3)
    files = [db, Path(f"{db}-wal")]
    assert all(path.stat().st_size > 0 for path in files)

    assert hits(files, canaries()) == {"buffer.db": [], "buffer.db-wal": []}
    assert any(hits(files, [f"{SERIAL}:1".encode()]).values()), "record ids stay in clear for queueing"
    assert buffer.pending(1)[0].payload["device_started_at"] == CANARY_TIME
    assert buffer.dead_letters()[1]["payload"] == CANARY_FRAME.hex()
    buffer.close()
    assert hits([db], canaries()) == {"buffer.db": []}


def test_key_file_is_created_with_owner_only_permissions_and_reused(tmp_path):
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store(SERIAL, [captured(1)])
    buffer.close()
    key = tmp_path / "buffer.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    reopened = RecordBuffer(tmp_path / "buffer.db")
    assert [p.record_id for p in reopened.pending(10)] == [f"{SERIAL}:1"]
    reopened.close()


def test_buffer_refuses_another_key(tmp_path):
    RecordBuffer(tmp_path / "buffer.db").close()
    RecordBuffer(tmp_path / "other.db").close()
    with pytest.raises(SealingError):
        RecordBuffer(tmp_path / "buffer.db", key_file=tmp_path / "other.key")


def test_buffer_with_sealed_data_refuses_to_start_without_its_key(tmp_path):
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store(SERIAL, [captured(1)])
    buffer.close()
    (tmp_path / "buffer.key").unlink()
    with pytest.raises(SealingError, match="missing"):
        RecordBuffer(tmp_path / "buffer.db")
    assert not (tmp_path / "buffer.key").exists()


def test_key_file_readable_by_others_is_refused(tmp_path):
    RecordBuffer(tmp_path / "buffer.db").close()
    (tmp_path / "buffer.key").chmod(0o644)
    with pytest.raises(SealingError, match="chmod 600"):
        RecordBuffer(tmp_path / "buffer.db")


def test_sealed_content_moved_to_another_record_does_not_open(tmp_path):
    db = tmp_path / "buffer.db"
    buffer = RecordBuffer(db)
    buffer.store(SERIAL, [captured(1), captured(2)])
    with sqlite3.connect(db) as raw:
        first = raw.execute("SELECT sealed FROM records WHERE device_seq = 1").fetchone()[0]
        raw.execute("UPDATE records SET sealed = ? WHERE device_seq = 2", (first,))
    assert [p.record_id for p in buffer.pending(10)] == [f"{SERIAL}:1"], "never served as record 2's content"
    [dead] = buffer.dead_letters()
    assert (dead["record_id"], dead["source"]) == (f"{SERIAL}:2", "buffer")
    assert dead["reason"].startswith("stored content unreadable: sealed field does not open")
    buffer.close()


def test_key_file_location_comes_from_the_environment(tmp_path):
    config = load_config(str(tmp_path / "state"), environ={"COMPANION_GATEWAY_KEY_FILE": str(tmp_path / "k" / "gw.key")})
    config.open_buffer().close()
    assert (tmp_path / "k" / "gw.key").exists() and not (tmp_path / "state" / "buffer.key").exists()


_PLAINTEXT_SCHEMA = """
CREATE TABLE records (position INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL UNIQUE,
    device_serial TEXT NOT NULL, device_seq INTEGER NOT NULL, device_time TEXT NOT NULL,
    gateway_received_at TEXT NOT NULL, clock_offset_s REAL NOT NULL, clock_status TEXT NOT NULL,
    content_hash TEXT NOT NULL, payload TEXT NOT NULL, size_bytes INTEGER NOT NULL);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT, device_serial TEXT NOT NULL,
    payload TEXT NOT NULL, reason TEXT NOT NULL, source TEXT NOT NULL, dead_at TEXT NOT NULL);
CREATE TABLE units (serial TEXT PRIMARY KEY, last_stored_seq INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def test_buffer_written_before_sealing_is_converted_and_keeps_its_queue(tmp_path):
    db = tmp_path / "buffer.db"
    record = captured(1, device_started_at=CANARY_TIME, content_hash=CANARY_HASH)
    payload = json.dumps(record.as_api_item())
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.executescript(_PLAINTEXT_SCHEMA)
        raw.execute("INSERT INTO records VALUES (1, ?, ?, 1, ?, ?, 0.0, 'ok', ?, ?, ?)",
                    (record.record_id, SERIAL, CANARY_TIME, record.gateway_received_at, CANARY_HASH, payload, len(payload)))
        raw.execute("INSERT INTO dead_letters VALUES (1, NULL, ?, ?, 'BadChecksum', 'unit', '2026-01-01')",
                    (SERIAL, CANARY_FRAME.hex()))
        raw.execute("INSERT INTO units VALUES (?, 1)", (SERIAL,))
    raw.close()

    before = inspect_buffer(db)  # what `status` and `pair` read before the first run converts it
    assert (before.pending, before.patient_ref, before.waiting_units) == (1, None, (SERIAL,))
    buffer = RecordBuffer(db)

    assert buffer.pending(10)[0].payload == record.as_api_item()
    assert buffer.last_stored_seq(SERIAL) == 1
    assert buffer.dead_letters()[0]["payload"] == CANARY_FRAME.hex()
    assert hits([db, Path(f"{db}-wal")], canaries()) == {"buffer.db": [], "buffer.db-wal": []}
    buffer.close()


def test_a_new_buffer_key_is_durable_in_its_directory(tmp_path, monkeypatch):
    """The key's content and its name in the state directory are on disk before anything is sealed with it: a power
    cut after records were sealed must not take the key file's creation back (as atomic_file does for its rename)."""
    synced = []
    real = os.fsync

    def tracking(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(sealing.os, "fsync", tracking)
    state = tmp_path / "state"
    sealing.create_key(state / "buffer.key")
    assert synced[0] == str((state / "buffer.key").resolve())
    assert str(state.resolve()) in synced[1:] and str(tmp_path.resolve()) in synced[1:]  # (the new directory's name)
