"""The gateway's durable SQLite buffer: durability settings, resume points, cap policy, dead letters, kill -9."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_gateway.buffer import REFUSED_AT_CAP, RecordBuffer, UnitPosition
from device_gateway.capture import capture
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session

SERIAL = "CT-000001"
REPO_ROOT = Path(__file__).resolve().parents[2]


def captured(seq: int, serial: str = SERIAL):
    record = simulated_session(seq, 1_760_000_000 + seq * 3600)
    return capture(serial, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC))


def _record_size() -> int:
    return len(json.dumps(captured(1).as_api_item(), separators=(",", ":")))


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


def test_buffer_uses_wal_and_synchronous_full(buffer):
    assert buffer.pragma("journal_mode") == "wal"
    assert buffer.pragma("synchronous") == 2


def test_stored_records_are_pending_in_capture_order(buffer):
    buffer.store(SERIAL, [captured(2), captured(1), captured(3)])
    assert [p.record_id for p in buffer.pending(10)] == [f"{SERIAL}:1", f"{SERIAL}:2", f"{SERIAL}:3"]


def test_store_reports_the_sequence_safe_to_acknowledge(buffer):
    result = buffer.store(SERIAL, [captured(1), captured(2)])
    assert (result.stored_up_to, result.stored) == (2, 2)
    assert buffer.last_stored_seq(SERIAL) == 2


def test_records_resent_after_a_lost_ack_are_not_stored_twice(buffer):
    buffer.store(SERIAL, [captured(1), captured(2)])
    result = buffer.store(SERIAL, [captured(2), captured(3)])
    assert (result.already_stored, result.stored, result.stored_up_to) == (1, 1, 3)
    assert buffer.pending_count() == 3


def test_resent_record_already_uploaded_is_not_queued_again(buffer):
    buffer.store(SERIAL, [captured(1)])
    buffer.mark_sent([f"{SERIAL}:1"])
    buffer.store(SERIAL, [captured(1)])
    assert buffer.pending_count() == 0


def test_resume_point_is_kept_per_unit(buffer):
    buffer.store(SERIAL, [captured(1), captured(2)])
    buffer.store("CT-000002", [captured(1, "CT-000002")])
    assert (buffer.last_stored_seq(SERIAL), buffer.last_stored_seq("CT-000002"), buffer.last_stored_seq("x")) == (2, 1, 0)


def test_the_record_stored_last_is_known_by_its_hash_until_the_position_moves_without_one(tmp_path):
    import sqlite3

    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store(SERIAL, [captured(1), captured(2)])
    assert buffer.last_stored(SERIAL) == (2, captured(2).content_hash)
    buffer.store(SERIAL, [captured(2)])  # resent after a lost acknowledgement: nothing new, the hash stays
    assert buffer.last_stored(SERIAL) == (2, captured(2).content_hash)
    buffer.record_missing(SERIAL, 3, 4)  # records the unit no longer holds: position moved, no record to know
    assert buffer.last_stored(SERIAL) == (4, None)
    buffer.close()
    # A buffer written before the hash was kept opens, its units without one.
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("CREATE TABLE units (serial TEXT PRIMARY KEY, last_stored_seq INTEGER NOT NULL)")
        db.execute("INSERT INTO units VALUES (?, 7)", (SERIAL,))
    old = RecordBuffer(tmp_path / "old.db")
    assert old.last_stored(SERIAL) == (7, None)
    old.close()


def _moved_aside(state_dir) -> None:
    """The buffer's files moved aside, as buffer-recover moves a damaged one (SQLite still pairs them)."""
    (state_dir / "buffer.db").rename(state_dir / "moved.db")
    for side in ("-wal", "-shm"):
        if (state_dir / f"buffer.db{side}").exists():
            (state_dir / f"buffer.db{side}").rename(state_dir / f"moved.db{side}")


def test_a_position_moved_without_a_record_is_noted_until_a_record_is_stored(tmp_path):
    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.store(SERIAL, [captured(1), captured(2)])
    assert buffer.position(SERIAL) == UnitPosition(2, captured(2).content_hash, False)
    buffer.record_missing(SERIAL, 3, 4)
    assert buffer.position(SERIAL) == UnitPosition(4, None, True)
    buffer.store(SERIAL, [])  # a connection that stored nothing leaves it so
    assert buffer.position(SERIAL) == UnitPosition(4, None, True)
    buffer.store(SERIAL, [captured(5)])
    assert buffer.position(SERIAL) == UnitPosition(5, captured(5).content_hash, False)
    buffer.close()
    # buffer-recover: the new buffer's positions come from the ledger, with no record's hash there (checked by
    # nothing: a unit may keep what it was acknowledged)...
    _moved_aside(tmp_path)
    new = RecordBuffer(tmp_path / "buffer.db", replacing_lost=True)
    assert new.position(SERIAL) == UnitPosition(5, None, False, recovered_unchecked=True)
    new.take_over([], last_stored={SERIAL: (5, captured(5).content_hash)})  # ... unless the moved one had it
    assert new.position(SERIAL) == UnitPosition(5, captured(5).content_hash, False)
    new.close()


def test_a_position_from_a_buffer_older_than_the_hash_is_not_taken_for_one_moved_without_a_record(tmp_path):
    with sqlite3.connect(tmp_path / "older.db") as db:  # before the hash: its position is a record stored there
        db.execute("CREATE TABLE units (serial TEXT PRIMARY KEY, last_stored_seq INTEGER NOT NULL)")
        db.execute("INSERT INTO units VALUES (?, 7)", (SERIAL,))
    with sqlite3.connect(tmp_path / "old.db") as db:  # with the hash, from before the note (NULL: a record)
        db.execute("CREATE TABLE units (serial TEXT PRIMARY KEY, last_stored_seq INTEGER NOT NULL, last_hash TEXT, "
                   "explained_to INTEGER)")
        db.execute("INSERT INTO units VALUES (?, 7, NULL, NULL)", (SERIAL,))
    for name in ("older.db", "old.db"):
        old = RecordBuffer(tmp_path / name)
        assert old.position(SERIAL) == UnitPosition(7, None, False)
        old.store(SERIAL, [captured(8)])
        assert old.position(SERIAL) == UnitPosition(8, captured(8).content_hash, False)
        old.close()


def test_record_keeps_device_time_gateway_time_offset_status_and_hash(buffer):
    buffer.store(SERIAL, [captured(1)])
    payload = buffer.pending(1)[0].payload
    assert payload["device_started_at"] == "2025-10-09T09:53:20.000Z"
    assert payload["gateway_received_at"] == "2026-01-01T00:00:00.000Z"
    assert (payload["clock_offset_s"], payload["clock_status"]) == (0.0, "ok")
    assert len(payload["content_hash"]) == 64


def test_mark_sent_removes_only_the_acknowledged_records(buffer):
    buffer.store(SERIAL, [captured(1), captured(2), captured(3)])
    assert buffer.mark_sent([f"{SERIAL}:1", f"{SERIAL}:3"]) == 2
    assert [p.record_id for p in buffer.pending(10)] == [f"{SERIAL}:2"]


def test_rejected_record_moves_to_dead_letters_with_reason(buffer):
    buffer.store(SERIAL, [captured(1), captured(2)])
    buffer.dead_letter([(f"{SERIAL}:2", "device time in the future")])
    assert [p.record_id for p in buffer.pending(10)] == [f"{SERIAL}:1"]
    dead = buffer.dead_letters()
    assert [(d["record_id"], d["reason"], d["source"]) for d in dead] == [
        (f"{SERIAL}:2", "device time in the future", "server")
    ]


def test_undecodable_frame_is_kept_raw_in_dead_letters(buffer):
    buffer.dead_letter_frame(SERIAL, b"\x01\x02\x03", "BadChecksum", 3)
    assert [(d["payload"], d["reason"], d["source"]) for d in buffer.dead_letters()] == [
        ("010203", "BadChecksum", "unit")
    ]


FRAME_WITH_A_BAD_CRC = bytes.fromhex("0101040000008de8106bdb090000027800c80001010e0100602a71")


def test_the_same_undecodable_frame_kept_twice_is_one_dead_letter(buffer):
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum: crc 0x712a does not match content", 4)
    # The transfer was cut short before the acknowledgement covering it: the unit sends the same frame again, from
    # the same place in its sequence.
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum: crc 0x712a does not match content", 4)

    assert [(d["payload"], d["frame_slot"]) for d in buffer.dead_letters()] == [(FRAME_WITH_A_BAD_CRC.hex(), 4)]
    # Another unit's, another frame, or the same bytes at another place (another record's) is a dead letter of its own.
    buffer.dead_letter_frame("CT-000002", FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC[:-1] + b"\x00", "BadChecksum", 4)
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 5)
    assert len(buffer.dead_letters()) == 4


def test_a_buffer_from_before_frames_were_kept_once_gets_the_rule_at_open(tmp_path):
    path = tmp_path / "buffer.db"
    buffer = RecordBuffer(path)
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)
    buffer.close()
    old = sqlite3.connect(path)  # as an older gateway left it: no frame_hash column, no unique index
    old.execute("DROP INDEX dead_letters_one_per_frame")
    old.execute("ALTER TABLE dead_letters DROP COLUMN frame_slot")
    old.execute("ALTER TABLE dead_letters DROP COLUMN frame_hash")
    old.commit()
    old.close()

    buffer = RecordBuffer(path)
    try:
        buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)  # (the one kept before has no hash)
        buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)
        assert len(buffer.dead_letters()) == 2
    finally:
        buffer.close()


def test_a_buffer_from_before_the_slot_keeps_identical_frames_of_different_records_apart(tmp_path):
    """The previous release kept an undecodable frame once per unit whatever its place, by a unique index on
    (unit, frame hash): a buffer it made gets the rule by place at open."""
    path = tmp_path / "buffer.db"
    buffer = RecordBuffer(path)
    buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 2)
    buffer.close()
    old = sqlite3.connect(path)  # as the previous release left it: no frame_slot column, its unique index
    old.execute("DROP INDEX dead_letters_one_per_frame")
    old.execute("ALTER TABLE dead_letters DROP COLUMN frame_slot")
    old.execute("CREATE UNIQUE INDEX dead_letters_one_per_frame ON dead_letters(device_serial, frame_hash) "
                "WHERE frame_hash IS NOT NULL")
    old.commit()
    old.close()

    buffer = RecordBuffer(path)
    try:
        buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 3)
        buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)
        buffer.dead_letter_frame(SERIAL, FRAME_WITH_A_BAD_CRC, "BadChecksum", 4)  # sent again after a cut: kept once
        assert [d["frame_slot"] for d in buffer.dead_letters()] == [None, 3, 4]
    finally:
        buffer.close()


def test_full_buffer_refuses_records_so_the_unit_keeps_them(tmp_path, caplog):
    one_record = _record_size()
    buf = RecordBuffer(tmp_path / "small.db", max_bytes=int(one_record * 2.5))
    with caplog.at_level(logging.WARNING):
        result = buf.store(SERIAL, [captured(seq) for seq in range(1, 6)])
    assert (result.stored, result.refused, result.stored_up_to) == (2, 3, 2)
    assert buf.counter(REFUSED_AT_CAP) == 3
    assert "buffer full" in caplog.text
    buf.close()


def test_a_full_disk_while_storing_raises_sqlites_own_error_and_keeps_nothing_of_the_batch(buffer):
    """SQLite rolls a transaction back by itself on SQLITE_FULL; the error the caller gets (and the gateway's
    health shows) is still "database or disk is full", not a failed ROLLBACK of a transaction already gone."""
    buffer.store(SERIAL, [captured(1)])
    buffer.pragma(f"max_page_count = {buffer.pragma('page_count')}")  # not one page more

    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        buffer.store(SERIAL, [captured(seq) for seq in range(2, 40)])

    assert buffer.last_stored_seq(SERIAL) == 1 and buffer.pending_count() == 1
    buffer.pragma("max_page_count = 1073741823")  # room again: the buffer goes on as if nothing happened
    assert buffer.store(SERIAL, [captured(seq) for seq in range(2, 40)]).stored_up_to == 39


def test_buffer_accepts_again_once_uploads_free_space(tmp_path):
    one_record = _record_size()
    buf = RecordBuffer(tmp_path / "small.db", max_bytes=int(one_record * 1.5))
    buf.store(SERIAL, [captured(1), captured(2)])
    buf.mark_sent([f"{SERIAL}:1"])
    assert buf.store(SERIAL, [captured(2)]).stored_up_to == 2
    buf.close()


def test_pending_bytes_follow_stores_sends_and_dead_letters_and_survive_reopening(tmp_path):
    def summed(buf):
        return buf._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM records").fetchone()[0]

    buf = RecordBuffer(tmp_path / "total.db")
    buf.store(SERIAL, [captured(seq) for seq in range(1, 6)])
    buf.mark_sent([f"{SERIAL}:1", f"{SERIAL}:2"])
    buf.dead_letter([(f"{SERIAL}:3", "rejected")])
    assert buf._pending_bytes_locked() == summed(buf) > 0
    total = summed(buf)
    buf.close()
    reopened = RecordBuffer(tmp_path / "total.db")
    assert reopened._pending_bytes_locked() == summed(reopened) == total
    reopened.close()


def _run_writer_until(db: Path, total: int, kill_after_acks: int | None) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.buffer_writer", str(db), SERIAL, str(total)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ACK"):
            acked.append(int(line.split()[1]))
            if kill_after_acks is not None and len(acked) >= kill_after_acks:
                proc.send_signal(signal.SIGKILL)
                break
    proc.stdout.close()
    proc.wait()
    return acked


def test_every_acknowledged_record_survives_sigkill_and_restart(tmp_path):
    db = tmp_path / "crash.db"
    total = 60
    acknowledged: set[int] = set()
    for kill_after in (1, 7, 13, 3):
        acknowledged.update(_run_writer_until(db, total, kill_after))
    acknowledged.update(_run_writer_until(db, total, None))
    buf = RecordBuffer(db)
    stored = {int(p.record_id.split(":")[1]) for p in buf.pending(1000)}
    buf.close()
    assert acknowledged <= stored
    assert stored == set(range(1, total + 1))


def test_buffer_recover_keeps_a_position_the_moved_buffer_had_moved_past_records(tmp_path):
    """A unit that had freed records never stored (a noted gap) and holds numbers at or below that position
    again is a restarted counter: a recovery that still reads the moved buffer keeps that, not "unchecked"."""
    old = RecordBuffer(tmp_path / "buffer.db")
    old.store(SERIAL, [captured(1), captured(2)])
    old.record_missing(SERIAL, 3, 4)
    position = old.position(SERIAL)
    old.close()
    _moved_aside(tmp_path)
    new = RecordBuffer(tmp_path / "buffer.db", replacing_lost=True)
    new.take_over([], last_stored={SERIAL: (position.seq, position.last_hash)},
                  moved_past={SERIAL: position.seq} if position.moved_without_record else {})
    try:
        assert new.position(SERIAL) == UnitPosition(4, None, True)
    finally:
        new.close()
