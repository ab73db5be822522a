"""What ``buffer-recover`` can still read in a damaged buffer: its queued records, its syncs, its dead letters not
yet reported, each unit's position and whose records they are, read from a copy of the moved file.

SQLite's ``quick_check`` refuses a whole file for one bad page, and a query fails as a whole when it meets one.
So the copy is opened read-only, unchecked, with no schema written, and each table is read by ranges of its row
ids without any index (an index's page may be the damaged one); a range that fails is split, down to single
rows, so every row that still reads is taken. A record is carried over only if its sealed content opens with the
buffer's key: the seal authenticates it, so nothing read off a damaged page is taken on trust. A buffer written
before sealing existed (damaged before this release first opened it and sealed it) holds its records in clear,
in a ``payload`` column: one is carried over if it reads as JSON of the record its row names (its record id, and
that id made of its serial and sequence number), the check the seal cannot make there; its dead letters' payloads
are taken as they read.

A queued record that does not come through is lost, and said so: one whose row reads but whose content does not
open, and one whose row cannot be read but whose id the record-id index still gives (the index holds each
record's id beside its row id), each get a dead letter naming it. Row ids that cannot be read and that no index
names are counted: each may have held a record of any unit, or none (uploaded records leave gaps).
"""

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.buffer import (
    KEY_CHECK_CONTEXT,
    MOVED_PAST,
    PendingRecord,
    record_context,
    sync_context,
    unit_context,
)
from device_gateway.capture import record_id_for
from device_gateway.sealing import Sealer, SealingError, read_key

logger = logging.getLogger(__name__)

_UNOPENED = (SealingError, ValueError, TypeError)  # a sealed field that does not open, or opens to no JSON


@dataclass(frozen=True, slots=True)
class Salvage:
    """What still reads in a moved buffer and was still to go to the server: its queued records, its syncs (the
    clock readings the records are placed by) and its dead letters not yet reported; and the queued records that
    did not come through (``lost``: a dead letter for each, as ``RecordBuffer.take_over`` takes them) with the row
    ids of its queue that could not be read and that no index names (``unreadable_positions``)."""

    records: list[PendingRecord] = field(default_factory=list)
    syncs: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    patient_ref: str | None = None  # whose records they are, as the moved buffer noted
    # per unit: its position there and the hash of the record at it
    last_stored: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # per unit whose position there was moved past records the unit no longer held: that position
    moved_past: dict[str, int] = field(default_factory=dict)
    lost: list[dict] = field(default_factory=list)
    unreadable_positions: int = 0


def salvage(copy: Path, key_file: Path) -> Salvage:
    """What still reads in ``copy`` (a copy of the moved buffer: SQLite may add its ``-shm`` beside it): nothing
    when it cannot be opened at all, or its key is missing or another one."""
    try:
        sealer = Sealer(read_key(key_file))
    except (OSError, SealingError) as exc:
        logger.warning("the moved buffer's key cannot be read (%s): none of its queued records is carried over", exc)
        return Salvage()
    db = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _Reader(db, sealer).salvage()
    except sqlite3.DatabaseError as exc:  # its schema itself (page 1) does not read: nothing to go by
        logger.warning("the moved buffer cannot be read (%s): none of its queued records is carried over", exc)
        return Salvage()
    except SealingError as exc:
        logger.warning("the moved buffer does not open with the key %s (%s): none of its queued records is carried "
                       "over", key_file, exc)
        return Salvage()
    finally:
        db.close()


@dataclass
class _Reader:
    """Reads one copy, opened read-only, with the buffer's key."""

    db: sqlite3.Connection
    sealer: Sealer
    now: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def salvage(self) -> Salvage:
        meta = {name: value for _, name, value in self._rows("meta", ("name", "value"))[0]}
        if isinstance(meta.get("key_check"), bytes):
            self.sealer.open(meta["key_check"], KEY_CHECK_CONTEXT)  # another key: SealingError, nothing is taken
        records, lost, unreadable = self._records()
        patient = meta.get("patient_ref")
        last_stored, moved_past = self._units()
        return Salvage(records, self._syncs(), self._dead_letters(), patient if isinstance(patient, str) else None,
                       last_stored, moved_past, lost, unreadable)

    def _in_clear(self, table: str) -> bool:
        """True for a table of a buffer written before sealing: its content in a ``payload`` column, in clear."""
        columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
        return "payload" in columns and "sealed" not in columns

    def _records(self) -> tuple[list[PendingRecord], list[dict], int]:
        in_clear = self._in_clear("records")
        rows, unreadable = self._rows("records", ("record_id", "device_serial", "payload" if in_clear else "sealed"))
        records, lost = [], []
        for position, rid, serial, stored in rows:
            if not isinstance(rid, str):
                unreadable.append(position)
                continue
            try:
                payload = _record_in_clear(rid, stored) if in_clear else \
                    json.loads(self.sealer.open(stored, record_context(rid)))
                records.append(PendingRecord(rid, payload, len(json.dumps(payload, separators=(",", ":")))))
            except _UNOPENED as exc:
                why = str(exc) if isinstance(exc, SealingError | _NotItsRecord) else type(exc).__name__
                detail = {"unreadable_payload": _text(stored)} if in_clear else {"unreadable_sealed_hex": _hex(stored)}
                lost.append(self._lost(rid, serial, f"lost with the damaged buffer: its stored content does not "
                                                    f"{'read' if in_clear else 'open'} ({why})", detail))
        named = self._record_ids_by_position() if unreadable else {}
        for position in unreadable:
            if position in named:
                lost.append(self._lost(named[position], None, "lost with the damaged buffer: its row could not be "
                                                              "read", {"position_in_the_damaged_buffer": position}))
        unnamed = sum(1 for position in unreadable if position not in named)
        if lost or unnamed:
            logger.error("the moved buffer's queue: %d record(s) read and open, %d lost (a dead letter each), %d row "
                         "id(s) that could not be read and that no index names", len(records), len(lost), unnamed)
        return records, lost, unnamed

    def _lost(self, record_id: str, serial: object, reason: str, detail: dict) -> dict:
        if not isinstance(serial, str):
            serial = record_id.rsplit(":", 1)[0]  # a record id is the unit's serial and its sequence number
        return {"record_id": record_id, "device_serial": serial, "reason": reason, "source": "buffer",
                "dead_at": self.now, "payload": json.dumps(detail), "frame_hash": None, "frame_slot": None}

    def _record_ids_by_position(self) -> dict[int, str]:
        """The record id of each queued row, as far as the record-id index still reads (it holds each id beside
        its row id), read in pages of ids."""
        named: dict[int, str] = {}
        after = ""
        while True:
            try:
                page = self.db.execute(
                    "SELECT record_id, position FROM records INDEXED BY sqlite_autoindex_records_1 "
                    "WHERE record_id > ? ORDER BY record_id LIMIT 1000", (after,)).fetchall()
            except sqlite3.DatabaseError:
                return named
            if not page:
                return named
            named.update((position, rid) for rid, position in page if isinstance(position, int))
            after = page[-1][0]

    def _syncs(self) -> list[dict]:
        rows, unreadable = self._rows("syncs", ("sync_id", "sealed"))
        syncs = []
        for position, sync_id, sealed in rows:
            try:
                syncs.append(json.loads(self.sealer.open(sealed, sync_context(sync_id))))
            except _UNOPENED:
                unreadable.append(position)
        if unreadable:
            logger.error("%d sync(s) of the moved buffer could not be read; the rest are carried over",
                         len(unreadable))
        return syncs

    def _dead_letters(self) -> list[dict]:
        """Its dead letters not yet reported, their payloads opened (one that does not open says so, as
        ``RecordBuffer.dead_letters`` gives it)."""
        in_clear = self._in_clear("dead_letters")
        columns = ("record_id", "device_serial", "payload" if in_clear else "sealed", "reason", "source", "dead_at",
                   "reported_at", "frame_hash", "frame_slot")
        rows, unreadable = self._rows("dead_letters", columns)
        letters = []
        for n, rid, serial, stored, reason, source, dead_at, reported, frame_hash, frame_slot in rows:
            if reported is not None:
                continue
            if not all(isinstance(text, str) for text in (serial, reason, source, dead_at)):
                unreadable.append(n)
                continue
            try:
                payload = _text_in_clear(stored) if in_clear else \
                    self.sealer.open(stored, record_context(rid) if rid else unit_context(serial)).decode()
            except _UNOPENED as exc:
                payload = json.dumps({"unreadable": str(exc)})
            letters.append({"record_id": rid, "device_serial": serial, "reason": reason, "source": source,
                            "dead_at": dead_at, "payload": payload, "frame_hash": frame_hash,
                            "frame_slot": frame_slot})
        if unreadable:
            logger.error("%d dead letter(s) of the moved buffer could not be read", len(unreadable))
        return letters

    def _units(self) -> tuple[dict[str, tuple[int, str | None]], dict[str, int]]:
        rows, _ = self._rows("units", ("serial", "last_stored_seq", "last_hash", "moved_without_record"))
        units = [row[1:] for row in rows if isinstance(row[1], str) and isinstance(row[2], int)]
        return ({serial: (seq, digest if isinstance(digest, str) else None) for serial, seq, digest, _ in units},
                {serial: seq for serial, seq, _, moved in units if moved == MOVED_PAST})

    def _rows(self, table: str, columns: Sequence[str]) -> tuple[list[tuple], list[int]]:
        """Every row of ``table`` that still reads, as (rowid, *columns) in rowid order (a column the table does not
        have, in a buffer from before it, reads as None), and the row ids in its extent that could not be read."""
        have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
        if not have:
            return [], []  # a buffer from before the table
        select = ", ".join(column if column in have else "NULL" for column in columns)
        extent = self._extent(table)
        if extent is None:
            logger.error("the extent of the moved buffer's %s cannot be read: none of it is carried over", table)
            return [], []
        rows: list[tuple] = []
        unreadable: list[int] = []
        ranges = [extent]
        while ranges:
            low, high = ranges.pop()
            # One row is looked up, not scanned to: a scan steps on past it to see where its range ends, and the
            # page after the last row of a good one may be the bad one.
            where, bounds = ("rowid = ?", (low,)) if low == high else ("rowid BETWEEN ? AND ?", (low, high))
            try:
                rows += self.db.execute(f"SELECT rowid, {select} FROM {table} NOT INDEXED "  # noqa: S608 - our names
                                        f"WHERE {where} ORDER BY rowid", bounds).fetchall()
            except sqlite3.DatabaseError:
                if low == high:
                    unreadable.append(low)
                else:
                    middle = (low + high) // 2
                    ranges += [(middle + 1, high), (low, middle)]  # the lower half first: rows stay in order
        return rows, unreadable

    def _extent(self, table: str) -> tuple[int, int] | None:
        """The lowest and highest row id of ``table``; where its edges do not read, 1 up to the highest id it
        gave out (AUTOINCREMENT keeps it in ``sqlite_sequence``)."""
        try:
            low, high = self.db.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()  # noqa: S608
            return (low, high) if low is not None else (1, 0)
        except sqlite3.DatabaseError:
            pass
        try:
            given = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return (1, given[0]) if given and isinstance(given[0], int) else None


class _NotItsRecord(ValueError):
    """A row's payload in clear that is not JSON of the record the row names."""


def _record_in_clear(record_id: str, stored: object) -> dict:
    """The payload of a record of a buffer from before sealing, if it is the record its row names: JSON whose
    record id is the row's, made of its serial and sequence number (nothing else vouches for a row read off a
    damaged page)."""
    payload = json.loads(_text_in_clear(stored))
    if not isinstance(payload, dict) or payload.get("record_id") != record_id:
        raise _NotItsRecord("not the record its row names")
    serial, seq = payload.get("device_serial"), payload.get("device_seq")
    if not isinstance(serial, str) or not isinstance(seq, int) or record_id_for(serial, seq) != record_id:
        raise _NotItsRecord("its serial and sequence number do not make its record id")
    return payload


def _text_in_clear(stored: object) -> str:
    if not isinstance(stored, str):
        raise TypeError(f"a payload in clear reads as {type(stored).__name__}")
    return stored


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _hex(value: object) -> str:
    return bytes(value).hex() if isinstance(value, bytes | bytearray | memoryview) else repr(value)
