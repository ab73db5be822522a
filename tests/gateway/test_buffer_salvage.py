"""buffer-recover carrying over what still reads in a buffer damaged in part: every queued record whose row still
reads and whose seal still opens, and a dead letter for each one that does not come through."""

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.buffer_recovery import recover_buffer
from device_gateway.capture import capture
from device_gateway.config import GatewayConfig
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session

SERIAL = "CT-000001"
QUEUED = 300


def _records(n: int) -> list:
    sessions = [simulated_session(seq, 1_760_000_000 + seq * 3600) for seq in range(1, n + 1)]
    return [capture(SERIAL, s, encode_record(s), 0.0, datetime(2026, 1, 1, tzinfo=UTC)) for s in sessions]


def _buffer_holding_a_queue(state_dir: Path) -> GatewayConfig:
    """A buffer with ``QUEUED`` records stored and acknowledged (freed by the unit), none uploaded yet."""
    config = GatewayConfig(state_dir=str(state_dir))
    buffer = config.open_buffer()
    buffer.store(SERIAL, _records(QUEUED))
    buffer.close()
    return config


def _pages(db: Path, name: str, kind: str | None = None) -> list[tuple[int, int]]:
    """(page number, cells) of each page of the table or index ``name`` (of one ``kind`` only: leaf, internal)."""
    with sqlite3.connect(db) as reading:
        return reading.execute("SELECT pageno, ncell FROM dbstat WHERE name = ? AND (? IS NULL OR pagetype = ?) "
                               "ORDER BY pageno", (name, kind, kind)).fetchall()


def _overwrite(db: Path, *pages: int) -> None:
    """Each of ``pages`` replaced by random bytes, as a failing SD card leaves a sector."""
    with sqlite3.connect(db) as reading:
        size = reading.execute("PRAGMA page_size").fetchone()[0]
    raw = bytearray(db.read_bytes())
    for page in pages:
        raw[size * (page - 1):size * page] = os.urandom(size)
    db.write_bytes(bytes(raw))


def _queue_after_recovery(config: GatewayConfig) -> tuple[list[int], list[dict], dict]:
    """The new buffer's queued sequence numbers, its dead letters for records lost, and the unit's notice."""
    buffer = config.open_buffer()
    try:
        queued = [p.payload["device_seq"] for p in buffer.pending(10_000)]
        letters = buffer.dead_letters()
    finally:
        buffer.close()
    [notice] = [d for d in letters if d["reason"].startswith("the gateway's buffer was replaced")]
    return queued, [d for d in letters if d["source"] == "buffer"], json.loads(notice["payload"])


def test_recover_carries_over_records_of_a_buffer_damaged_in_part(tmp_path):
    """One bad page of the record-id index fails SQLite's check of the whole file; the records are all there."""
    config = _buffer_holding_a_queue(tmp_path)
    db = tmp_path / "buffer.db"
    _overwrite(db, max(page for page, _ in _pages(db, "sqlite_autoindex_records_1")))
    with sqlite3.connect(db) as reading:
        assert reading.execute("SELECT COUNT(*) FROM records NOT INDEXED").fetchone()[0] == QUEUED

    recovery = recover_buffer(config)

    assert (recovery.intact, recovery.carried_over, recovery.lost) == (False, QUEUED, 0)
    queued, lost, notice = _queue_after_recovery(config)
    assert queued == list(range(1, QUEUED + 1)) and lost == []
    assert (notice["queued_records_carried_over"], notice["queued_records_lost"]) == (QUEUED, 0)


def test_recover_carries_over_the_rows_other_pages_hold_and_names_each_record_a_bad_data_page_lost(tmp_path):
    config = _buffer_holding_a_queue(tmp_path)
    db = tmp_path / "buffer.db"
    leaves = _pages(db, "records", "leaf")
    page, cells = leaves[len(leaves) // 2]
    _overwrite(db, page)

    recovery = recover_buffer(config)

    assert (recovery.carried_over, recovery.lost, recovery.unreadable_positions) == (QUEUED - cells, cells, 0)
    queued, lost, notice = _queue_after_recovery(config)
    lost_seqs = sorted(int(d["record_id"].rsplit(":", 1)[1]) for d in lost)
    assert len(queued) == QUEUED - cells and sorted(queued + lost_seqs) == list(range(1, QUEUED + 1))
    assert {(d["device_serial"], d["reason"]) for d in lost} == {
        (SERIAL, "lost with the damaged buffer: its row could not be read")}
    assert (notice["queued_records_carried_over"], notice["queued_records_lost"]) == (QUEUED - cells, cells)


def test_recover_counts_unreadable_rows_that_no_index_names(tmp_path):
    config = _buffer_holding_a_queue(tmp_path)
    db = tmp_path / "buffer.db"
    leaves = _pages(db, "records", "leaf")
    page, cells = leaves[len(leaves) // 2]
    _overwrite(db, page, *(index_page for index_page, _ in _pages(db, "sqlite_autoindex_records_1")))

    recovery = recover_buffer(config)

    assert (recovery.carried_over, recovery.lost, recovery.unreadable_positions) == (QUEUED - cells, 0, cells)
    queued, lost, notice = _queue_after_recovery(config)
    assert len(queued) == QUEUED - cells and lost == []
    assert (notice["queued_records_lost"], notice["unreadable_queue_positions"]) == (0, cells)


def test_a_row_that_reads_but_whose_seal_does_not_open_is_lost_not_carried_over(tmp_path):
    config = _buffer_holding_a_queue(tmp_path)
    db = tmp_path / "buffer.db"
    with sqlite3.connect(db) as writing:  # one byte of record 7's ciphertext altered: its tag no longer verifies
        sealed = bytearray(writing.execute("SELECT sealed FROM records WHERE device_seq = 7").fetchone()[0])
        sealed[20] ^= 0x01
        writing.execute("UPDATE records SET sealed = ? WHERE device_seq = 7", (bytes(sealed),))
    _overwrite(db, max(page for page, _ in _pages(db, "sqlite_autoindex_records_1")))

    recovery = recover_buffer(config)

    assert (recovery.carried_over, recovery.lost) == (QUEUED - 1, 1)
    queued, [lost], notice = _queue_after_recovery(config)
    assert 7 not in queued and len(queued) == QUEUED - 1
    assert lost["record_id"] == f"{SERIAL}:7" and "its stored content does not open" in lost["reason"]
    assert notice["queued_records_lost"] == 1


def test_review_a_damaged_buffer_from_before_sealing_carries_over_its_readable_queue(tmp_path):
    """A buffer the release before sealing wrote, damaged in part (one bad page of its record-id index) when this
    release first opens it: its records are there, in clear, and read; none may be declared lost."""
    from tests.gateway.test_buffer_sealing import _PLAINTEXT_SCHEMA

    db = tmp_path / "buffer.db"
    with sqlite3.connect(db) as raw:
        raw.executescript(_PLAINTEXT_SCHEMA)
        for record in _records(QUEUED):
            payload = json.dumps(record.as_api_item())
            raw.execute("INSERT INTO records VALUES (NULL, ?, ?, ?, ?, ?, 0.0, 'ok', ?, ?, ?)",
                        (record.record_id, SERIAL, record.device_seq, "t", record.gateway_received_at,
                         record.content_hash, payload, len(payload)))
        raw.execute("INSERT INTO units VALUES (?, ?)", (SERIAL, QUEUED))
    raw.close()
    _overwrite(db, max(page for page, _ in _pages(db, "sqlite_autoindex_records_1")))
    config = GatewayConfig(state_dir=str(tmp_path))

    recovery = recover_buffer(config)

    assert (recovery.carried_over, recovery.lost) == (QUEUED, 0)


def test_a_damaged_buffer_from_before_sealing_loses_a_row_whose_payload_is_another_record_and_keeps_its_dead_letters(
        tmp_path):
    """Nothing seals a record in clear: one whose payload is not the record its row names (read off a damaged page,
    or written under another id) is lost, with a dead letter, not carried over; its dead letters come with it."""
    from tests.gateway.test_buffer_sealing import _PLAINTEXT_SCHEMA

    db = tmp_path / "buffer.db"
    records = _records(3)
    with sqlite3.connect(db) as raw:
        raw.executescript(_PLAINTEXT_SCHEMA)
        for record in records:
            payload = json.dumps((records[0] if record.device_seq == 2 else record).as_api_item())
            raw.execute("INSERT INTO records VALUES (NULL, ?, ?, ?, ?, ?, 0.0, 'ok', ?, ?, ?)",
                        (record.record_id, SERIAL, record.device_seq, "t", record.gateway_received_at,
                         record.content_hash, payload, len(payload)))
        raw.execute("INSERT INTO dead_letters VALUES (NULL, NULL, ?, 'ffff', 'BadChecksum', 'unit', '2026-01-01')",
                    (SERIAL,))
        raw.execute("INSERT INTO units VALUES (?, 3)", (SERIAL,))
    raw.close()
    _overwrite(db, max(page for page, _ in _pages(db, "sqlite_autoindex_records_1")))
    config = GatewayConfig(state_dir=str(tmp_path))

    recovery = recover_buffer(config)

    queued, [lost], notice = _queue_after_recovery(config)
    assert (recovery.carried_over, recovery.lost, queued) == (2, 1, [1, 3])
    assert lost["record_id"] == f"{SERIAL}:2" and "does not read (not the record its row names)" in lost["reason"]
    buffer = config.open_buffer()
    try:
        assert [(d["reason"], d["payload"]) for d in buffer.dead_letters() if d["reason"] == "BadChecksum"] == [
            ("BadChecksum", "ffff")]
    finally:
        buffer.close()
