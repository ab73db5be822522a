"""A buffer that lost its records, or that SQLite cannot read, is refused loudly; its ledger says how far
each unit was stored (and so acknowledged). Pure ledger rules first, then the real buffer on real files."""

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged, is_damage
from device_gateway.buffer_status import inspect_buffer
from device_gateway.capture import capture
from device_gateway.ledger import BufferLedger, LedgerUnreadable, ledger_path_for, shortfalls
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session

SERIAL = "CT-000001"


def captured(seq: int, serial: str = SERIAL):
    record = simulated_session(seq, 1_760_000_000 + seq * 3600)
    return capture(serial, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC))


def buffer_with_records(db: Path, count: int) -> None:
    buffer = RecordBuffer(db)
    buffer.store(SERIAL, [captured(seq) for seq in range(1, count + 1)])
    buffer.close()


def corrupt_a_page(db: Path, page: int) -> None:
    raw = bytearray(db.read_bytes())
    raw[4096 * page : 4096 * (page + 1)] = os.urandom(4096)
    db.write_bytes(bytes(raw))


# The ledger's rules (pure).


def test_a_unit_the_buffer_holds_less_of_than_the_ledger_says_is_a_shortfall():
    assert shortfalls({"A": 300, "B": 4, "C": 9}, {"A": 120, "B": 7, "C": 9}) == {"A": (120, 300)}


def test_a_unit_missing_from_the_buffer_counts_from_zero():
    assert shortfalls({"A": 3}, {}) == {"A": (0, 3)}


def test_a_buffer_ahead_of_its_ledger_is_no_shortfall():
    assert shortfalls({"A": 3}, {"A": 5, "B": 1}) == {}


def test_the_ledger_lives_beside_its_buffer():
    assert ledger_path_for(Path("/state/buffer.db")) == Path("/state/buffer.ledger.json")


def test_ledger_round_trips_and_a_missing_one_reads_as_none(tmp_path):
    ledger = BufferLedger(tmp_path / "buffer.ledger.json")
    assert ledger.read() is None
    ledger.write({"B": 2, "A": 300})
    assert ledger.read() == {"A": 300, "B": 2}
    assert not (tmp_path / "buffer.ledger.json.tmp").exists()


@pytest.mark.parametrize("content", ["", "{", '{"units": [1]}', '{"format": 9, "units": {}}', '{"format": 1}'])
def test_a_file_that_is_not_a_ledger_is_unreadable(tmp_path, content):
    (tmp_path / "buffer.ledger.json").write_text(content)
    with pytest.raises(LedgerUnreadable, match="buffer.ledger.json"):
        BufferLedger(tmp_path / "buffer.ledger.json").read()


# The buffer and its ledger on real files.


def test_every_store_brings_the_ledger_up_to_what_may_be_acknowledged(tmp_path):
    buffer = RecordBuffer(tmp_path / "buffer.db")
    result = buffer.store(SERIAL, [captured(1), captured(2), captured(3)])
    assert BufferLedger(tmp_path / "buffer.ledger.json").read() == {SERIAL: result.stored_up_to} == {SERIAL: 3}
    buffer.close()


def test_a_new_buffer_writes_a_ledger_that_says_it_is_in_use(tmp_path):
    RecordBuffer(tmp_path / "buffer.db").close()
    assert BufferLedger(tmp_path / "buffer.ledger.json").read() == {}


def test_buffer_truncated_to_zero_bytes_is_refused_naming_the_file_and_its_ledger(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 3)
    db.write_bytes(b"")

    with pytest.raises(BufferDamaged, match="is empty, but its ledger .*buffer.ledger.json says it was in use") as refused:
        RecordBuffer(db)
    assert refused.value.path == str(db)
    assert db.stat().st_size == 0, "a refused buffer is left as it was found"


def test_deleted_buffer_is_refused_and_not_created_again(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 3)
    for side in ("", "-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)

    with pytest.raises(BufferDamaged, match="is missing, but its ledger"):
        RecordBuffer(db)
    assert not db.exists()


def test_file_of_garbage_bytes_is_refused_as_damaged(tmp_path):
    db = tmp_path / "buffer.db"
    db.write_bytes(os.urandom(8192))

    with pytest.raises(BufferDamaged, match="is damaged: file is not a database"):
        RecordBuffer(db)


def test_partly_corrupted_buffer_fails_the_integrity_check_at_open(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 300)
    corrupt_a_page(db, 3)

    with pytest.raises(BufferDamaged, match=r"fails SQLite's integrity check \(\*\*\* in database main \*\*\* Page 4"):
        RecordBuffer(db)


def test_buffer_swapped_for_an_older_copy_is_refused_as_behind_its_ledger(tmp_path):
    db = tmp_path / "buffer.db"
    buffer = RecordBuffer(db)
    buffer.store(SERIAL, [captured(1), captured(2)])
    buffer.close()
    old_copy = tmp_path / "old.db"
    with sqlite3.connect(db) as live, sqlite3.connect(old_copy) as copy:
        live.backup(copy)
    buffer = RecordBuffer(db)
    buffer.store(SERIAL, [captured(3), captured(4)])
    buffer.close()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    os.replace(old_copy, db)

    with pytest.raises(BufferDamaged, match=f"holds fewer records than its ledger .*unit {SERIAL} up to 2, ledger 4"):
        RecordBuffer(db)


def test_a_ledger_behind_the_buffer_catches_up_at_open(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 5)
    BufferLedger(tmp_path / "buffer.ledger.json").write({SERIAL: 2})

    RecordBuffer(db).close()

    assert BufferLedger(tmp_path / "buffer.ledger.json").read() == {SERIAL: 5}


def test_a_buffer_from_before_ledgers_gets_one_at_open(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 4)
    (tmp_path / "buffer.ledger.json").unlink()

    RecordBuffer(db).close()

    assert BufferLedger(tmp_path / "buffer.ledger.json").read() == {SERIAL: 4}


def test_an_unreadable_ledger_beside_an_intact_buffer_is_rewritten_from_the_buffer(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 4)
    (tmp_path / "buffer.ledger.json").write_text("{garbage")

    RecordBuffer(db).close()

    assert BufferLedger(tmp_path / "buffer.ledger.json").read() == {SERIAL: 4}


def test_an_unreadable_ledger_beside_an_empty_buffer_is_refused(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 4)
    (tmp_path / "buffer.ledger.json").write_text("{garbage")
    db.write_bytes(b"")

    with pytest.raises(BufferDamaged, match="is empty"):
        RecordBuffer(db)


def test_inspecting_a_buffer_that_does_not_exist_creates_nothing(tmp_path):
    state = tmp_path / "state"
    assert inspect_buffer(state / "buffer.db") is None
    assert not state.exists()


def test_inspecting_a_damaged_buffer_refuses_it_as_opening_would(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 2)
    db.write_bytes(b"")
    with pytest.raises(BufferDamaged, match="is empty"):
        inspect_buffer(db)


def test_corrupt_and_not_a_database_are_damage_but_a_full_disk_is_not(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with closing(sqlite3.connect(garbage)) as db, pytest.raises(sqlite3.DatabaseError) as not_a_database:
        db.execute("SELECT * FROM sqlite_master").fetchall()
    full = sqlite3.connect(tmp_path / "full.db")
    full.execute("CREATE TABLE t (x)")
    full.execute(f"PRAGMA max_page_count = {full.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError, match="full") as disk_full:
        full.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(50)])
    full.close()

    assert is_damage(not_a_database.value) and not is_damage(disk_full.value)


def test_corruption_found_while_the_buffer_is_open_is_reported_as_damage(tmp_path):
    db = tmp_path / "buffer.db"
    buffer_with_records(db, 8000)  # about 5 MB: more than SQLite's page cache, so reads go to the file
    buffer = RecordBuffer(db)
    for page in range(3, 11):
        corrupt_a_page(db, page)

    with pytest.raises(BufferDamaged, match="is damaged: database disk image is malformed"):
        buffer.status()
    buffer.close()
