"""Durable SQLite store-and-forward for captured session records.

A record is committed here (WAL, ``synchronous=FULL``) before the gateway acknowledges it to the
unit, and leaves the pending queue only when the server has acknowledged it (created or duplicate).
Records the server rejects move to a dead-letter table with the reason. Frames a unit sent that
could not be decoded are kept there too, raw, so nothing is dropped silently.

When the pending records reach ``max_bytes`` the buffer refuses new records: the link then does not
acknowledge them, so the unit keeps them until there is room. Each refusal is logged and counted.

Syncs (the link's readings of a unit's clock at each connection, which the server uses to place sessions in
time) wait in their own small queue until the server has them. Dead letters wait to be reported to the server
(``reported_at``), and can be put back in the queue (``requeue``) by ``device-gateway dead-letters --replay``.

At rest, record content (and dead letters) is sealed with AES-256-GCM (see ``sealing``); only what
queueing needs stays in clear: record id, unit serial, sequence number and size. The key lives in a
separate file (default: next to the database, ``buffer.key``); a buffer written before sealing
existed is converted on open and vacuumed so no plaintext page remains.

A buffer that is damaged or has lost records is refused loudly, never silently replaced (see
``buffer_integrity`` and ``ledger``).
"""

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.buffer_integrity import (
    buffer_behind_ledger,
    buffer_emptied,
    buffer_missing,
    buffer_unreadable,
    check_not_being_recovered,
    check_readable,
    is_damage,
    is_empty,
    read_ledger,
)
from device_gateway.buffer_status import REFUSED_AT_CAP, REPLAYED, SENT, BufferStatus, read_status
from device_gateway.capture import CapturedRecord
from device_gateway.ledger import BufferLedger, ledger_path_for, shortfalls
from device_gateway.sealing import Sealer, SealingError, load_or_create_key

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024**3

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS records (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT NOT NULL UNIQUE,
        device_serial TEXT NOT NULL,
        device_seq INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        sealed BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id TEXT,
        device_serial TEXT NOT NULL,
        sealed BLOB NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        dead_at TEXT NOT NULL,
        reported_at TEXT,
        frame_hash TEXT,
        frame_slot INTEGER
    )""",
    # last_hash: the content hash of the record stored last (None when the position moved without one: records
    # the unit no longer held, a recovery), to tell a lost acknowledgement from a counter that restarted.
    # moved_without_record: 1 while the position is one the gateway moved to past records the unit no longer held
    # (record_missing), so a unit holding numbers at or below it again is a restarted counter unless the server
    # holds the record there; 2 while it is a position buffer-recover gave from the ledger without the record's
    # hash (a unit may keep records it was acknowledged, so holding them proves nothing: unless the server holds
    # the record there, it is asked from the record after, and told once); None once a record is stored, or once
    # the server gave the hash of the record a gateway of the patient's delivered there (adopt_hash). A row
    # written before this column has neither (for a buffer older than the hash, every row): taken for a record
    # stored there whose hash was never kept, so the unit is asked from the record after it, unchecked, as it was
    # then, not taken for a restarted counter.
    # explained_to: how far the gateway acknowledged records it could not decode after the one stored last (kept
    # as dead letters): the unit freeing them is not a loss to report again.
    "CREATE TABLE IF NOT EXISTS units (serial TEXT PRIMARY KEY, last_stored_seq INTEGER NOT NULL, last_hash TEXT, "
    "explained_to INTEGER, moved_without_record INTEGER)",
    """CREATE TABLE IF NOT EXISTS syncs (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        sync_id TEXT NOT NULL UNIQUE,
        device_serial TEXT NOT NULL,
        sealed BLOB NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
]
# The bytes waiting for upload, kept by triggers in the same transactions as the records: summing every
# pending row on each store made buffering slow down in proportion to the backlog (bench/RESULTS.md).
# Created after any conversion of an old buffer, and recounted once at each start.
_PENDING_TOTAL = [
    "CREATE TABLE IF NOT EXISTS pending_total (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS pending_total_on_insert AFTER INSERT ON records
       BEGIN UPDATE pending_total SET bytes = bytes + NEW.size_bytes WHERE id = 1; END""",
    """CREATE TRIGGER IF NOT EXISTS pending_total_on_delete AFTER DELETE ON records
       BEGIN UPDATE pending_total SET bytes = bytes - OLD.size_bytes WHERE id = 1; END""",
    "INSERT OR REPLACE INTO pending_total(id, bytes) SELECT 1, COALESCE(SUM(size_bytes), 0) FROM records",
]
# An undecodable frame is kept once per unit and place in its sequence (frame_hash: the sealer's keyed fingerprint
# of the raw frame; frame_slot: the sequence number it stands for, see TransferWindow.settled): a unit
# sends it again after a transfer cut short before the acknowledgement that covers it, from the same place; while
# byte-identical frames of different records (erased flash, each acknowledged away) are each a loss of their own.
# A buffer from before the slot has this index on (device_serial, frame_hash), which kept only the first of those:
# replaced at open. The name stays, so an older release opening the buffer keeps this index (its IF NOT EXISTS).
# Its rows have no slot (NULL, each distinct in the index). Created after any conversion of an old buffer, which
# replaces the table.
_ONE_DEAD_LETTER_PER_FRAME = "dead_letters_one_per_frame"
_ONE_DEAD_LETTER_PER_FRAME_INDEX = (f"CREATE UNIQUE INDEX IF NOT EXISTS {_ONE_DEAD_LETTER_PER_FRAME} "
                                    "ON dead_letters(device_serial, frame_slot, frame_hash) WHERE frame_hash IS NOT NULL")
_KEY_CHECK = b"companion gateway buffer"


@dataclass(frozen=True, slots=True)
class StoreResult:
    """Outcome of storing a run of records from one unit."""

    stored_up_to: int
    stored: int
    already_stored: int
    refused: int


MOVED_PAST = 1  # units.moved_without_record: moved past records the unit no longer held
RECOVERED_UNCHECKED = 2  # units.moved_without_record: given by buffer-recover without the record's hash


@dataclass(frozen=True, slots=True)
class UnitPosition:
    """Where a unit's records resume (``seq``, 0 if none stored), the content hash of the record stored there
    (None when not known), and whether the gateway moved there without storing a record (``moved_without_record``:
    the unit no longer held the records before it, or ``buffer-recover`` started anew). A position with neither
    was written before the note existed: taken for a record stored there whose hash was never kept."""

    seq: int
    last_hash: str | None
    moved_without_record: bool
    recovered_unchecked: bool = False  # given by buffer-recover from the ledger, without the record's hash


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record waiting for the server's acknowledgement."""

    record_id: str
    payload: dict
    size_bytes: int


def _now() -> str:
    return datetime.now(UTC).isoformat()


# What each sealed field is bound to (see ``sealing``): a blob opens only in the row it was sealed for.
def record_context(record_id: str) -> str:
    """A record's content, and a dead letter's about that record."""
    return f"record:{record_id}"


def unit_context(serial: str) -> str:
    """A dead letter about a unit with no record id (an undecodable frame, a note)."""
    return f"unit:{serial}"


def sync_context(sync_id: str) -> str:
    """A sync's content."""
    return f"sync:{sync_id}"


KEY_CHECK_CONTEXT = "key-check"  # meta.key_check: a known text sealed with the buffer's key, to tell another key


def _has_plaintext_schema(db: sqlite3.Connection) -> bool:
    return "payload" in {row[1] for row in db.execute("PRAGMA table_info(records)")}


class RecordBuffer:
    """The gateway's durable queue. Thread-safe: the link and the uploader share one instance.

    ``key_file`` defaults to ``buffer.key`` beside the database (an in-memory buffer gets a key that
    lives only in memory). The key is created on first use; a buffer that holds sealed data refuses to
    open without its key, or with another one (SealingError).

    ``ledger_file`` defaults to ``buffer.ledger.json`` beside the database (an in-memory buffer has
    none). A buffer that is missing, empty, unreadable or behind its ledger raises BufferDamaged.
    ``replacing_lost`` is for ``buffer-recover`` only: it creates the new buffer where the ledger says
    one was in use, and resumes each unit after the sequence the ledger recorded.
    """

    def __init__(
        self,
        path: str | Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        key_file: str | Path | None = None,
        ledger_file: str | Path | None = None,
        *,
        replacing_lost: bool = False,
    ) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._ledger_lock = threading.Lock()
        in_memory = self.path == ":memory:"
        self._ledger = None if in_memory else BufferLedger(Path(ledger_file) if ledger_file else ledger_path_for(path))
        recorded = read_ledger(self._ledger) if self._ledger else None
        if self._ledger is not None:
            if not replacing_lost:
                check_not_being_recovered(self.path)
            if replacing_lost and Path(self.path).exists():
                raise FileExistsError(f"{self.path} must be moved aside before it is replaced")
            if recorded is not None and not replacing_lost and not Path(self.path).exists():
                raise buffer_missing(self.path, self._ledger)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._open(key_file, recorded, replacing_lost)
        except BaseException:
            self._db.close()
            raise

    def _open(self, key_file: str | Path | None, recorded: dict[str, int] | None, replacing_lost: bool) -> None:
        try:
            check_readable(self._db, self.path)
            if self._ledger is not None and recorded is not None and not replacing_lost and is_empty(self._db):
                raise buffer_emptied(self.path, self._ledger)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            for statement in _SCHEMA:
                self._db.execute(statement)
            dead_letter_columns = {row[1] for row in self._db.execute("PRAGMA table_info(dead_letters)")}
            if "reported_at" not in dead_letter_columns:
                self._db.execute("ALTER TABLE dead_letters ADD COLUMN reported_at TEXT")  # a buffer from before
            if "frame_hash" not in dead_letter_columns:
                self._db.execute("ALTER TABLE dead_letters ADD COLUMN frame_hash TEXT")  # a buffer from before
            if "frame_slot" not in dead_letter_columns:
                self._db.execute("ALTER TABLE dead_letters ADD COLUMN frame_slot INTEGER")  # a buffer from before
            unit_columns = {row[1] for row in self._db.execute("PRAGMA table_info(units)")}
            if "last_hash" not in unit_columns:
                self._db.execute("ALTER TABLE units ADD COLUMN last_hash TEXT")  # a buffer from before
            if "explained_to" not in unit_columns:
                self._db.execute("ALTER TABLE units ADD COLUMN explained_to INTEGER")  # a buffer from before
            if "moved_without_record" not in unit_columns:
                # A buffer from before: its rows keep the rule they were written under (no restarted counter is
                # inferred from a missing hash, which a buffer older than the hash lacks for every unit).
                self._db.execute("ALTER TABLE units ADD COLUMN moved_without_record INTEGER")
            self._sealer = self._open_sealer(key_file)
            if _has_plaintext_schema(self._db):
                self._seal_plaintext_buffer()
            for statement in _PENDING_TOTAL:
                self._db.execute(statement)
            self._keep_one_dead_letter_per_frame_and_slot()
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise buffer_unreadable(self.path, exc) from None
            raise
        if replacing_lost:
            with self._transaction() as db:
                # The server keeps one report per gateway and dead-letter id: the new buffer's ids start above
                # any the lost one can have used (milliseconds since 1970, x 1000: under 2^53 until 2255).
                db.execute("INSERT OR REPLACE INTO sqlite_sequence(name, seq) VALUES ('dead_letters', ?)",
                           (int(time.time() * 1000) * 1000,))
                if recorded:
                    # No record of the unit's stands at the position the ledger gives (unless take_over carries
                    # the moved buffer's hash of it).
                    db.executemany("INSERT INTO units(serial, last_stored_seq, moved_without_record) VALUES (?, ?, ?)",
                                   [(serial, seq, RECOVERED_UNCHECKED) for serial, seq in sorted(recorded.items())])
        self._ledger_units = self._reconcile_ledger(recorded)

    def _keep_one_dead_letter_per_frame_and_slot(self) -> None:
        """The unique index that keeps an undecodable frame once per place, in place of the one from before the
        slot (see ``_ONE_DEAD_LETTER_PER_FRAME``)."""
        row = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
                               (_ONE_DEAD_LETTER_PER_FRAME,)).fetchone()
        if row is not None and "frame_slot" not in row[0]:
            self._db.execute(f"DROP INDEX {_ONE_DEAD_LETTER_PER_FRAME}")
        self._db.execute(_ONE_DEAD_LETTER_PER_FRAME_INDEX)

    def _reconcile_ledger(self, recorded: dict[str, int] | None) -> dict[str, int]:
        """Refuse a buffer behind its ledger; bring a missing or lagging ledger up to the buffer."""
        if self._ledger is None:
            return {}
        stored = self.status().units
        short = shortfalls(recorded or {}, stored)
        if short:
            raise buffer_behind_ledger(self.path, self._ledger, short)
        if recorded != stored:
            self._ledger.write(stored)
        return stored

    def _open_sealer(self, key_file: str | Path | None) -> Sealer:
        if key_file is None and self.path == ":memory:":
            sealer = Sealer.ephemeral()
        else:
            key_path = Path(key_file) if key_file is not None else Path(self.path).with_suffix(".key")
            row = self._db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
            sealer = Sealer(load_or_create_key(key_path, may_create=row is None))
            if row is not None:
                sealer.open(row[0], KEY_CHECK_CONTEXT)
                return sealer
        self._db.execute("INSERT INTO meta(name, value) VALUES ('key_check', ?)", (sealer.seal(_KEY_CHECK, KEY_CHECK_CONTEXT),))
        return sealer

    def _seal_plaintext_buffer(self) -> None:
        """Convert a buffer written before sealing existed: seal every payload, then vacuum the old pages."""
        with self._transaction() as db:
            db.execute("ALTER TABLE records RENAME TO plain_records")
            db.execute("ALTER TABLE dead_letters RENAME TO plain_dead_letters")
            for statement in _SCHEMA[:2]:
                db.execute(statement)
            for rid, serial, seq, size, payload in db.execute(
                "SELECT record_id, device_serial, device_seq, size_bytes, payload FROM plain_records ORDER BY position"
            ).fetchall():
                db.execute(
                    "INSERT INTO records(record_id, device_serial, device_seq, size_bytes, sealed) VALUES (?,?,?,?,?)",
                    (rid, serial, seq, size, self._seal_record(rid, payload)),
                )
            for rid, serial, payload, reason, source, dead_at in db.execute(
                "SELECT record_id, device_serial, payload, reason, source, dead_at FROM plain_dead_letters ORDER BY id"
            ).fetchall():
                sealed = self._seal_record(rid, payload) if rid else self._sealer.seal(payload.encode(), unit_context(serial))
                db.execute(
                    "INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) VALUES (?,?,?,?,?,?)",
                    (rid, serial, sealed, reason, source, dead_at),
                )
            db.execute("DROP TABLE plain_records")
            db.execute("DROP TABLE plain_dead_letters")
        with self._lock:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        logger.info("buffer converted to sealed storage")

    def _seal_record(self, record_id: str, payload: str) -> bytes:
        return self._sealer.seal(payload.encode(), record_context(record_id))

    def _open_record(self, record_id: str, sealed: bytes) -> str:
        return self._sealer.open(sealed, record_context(record_id)).decode()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._reading() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                # SQLite rolls back by itself on some errors (SQLITE_FULL: a full disk); a ROLLBACK then would fail
                # and hide the error that matters.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite finding the file corrupt becomes BufferDamaged."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                if is_damage(exc):
                    raise buffer_unreadable(self.path, exc) from exc
                raise

    def close(self) -> None:
        """Close the database; every committed record is already on disk."""
        with self._lock:
            self._db.close()

    def pragma(self, name: str) -> object:
        """Read a PRAGMA (used by tests to check durability settings)."""
        with self._reading() as db:
            return db.execute(f"PRAGMA {name}").fetchone()[0]

    def last_stored_seq(self, serial: str) -> int:
        """Highest sequence number stored for a unit (0 if none): resume pulling after it."""
        return self.last_stored(serial)[0]

    def last_stored(self, serial: str) -> tuple[int, str | None]:
        """Highest sequence number stored for a unit (0 if none), and the content hash of that record (None when
        not known)."""
        position = self.position(serial)
        return position.seq, position.last_hash

    def position(self, serial: str) -> UnitPosition:
        """Where a unit's records resume, the hash of the record stored there, and whether the position moved
        there without a record being stored (see ``UnitPosition``)."""
        with self._reading() as db:
            row = db.execute("SELECT last_stored_seq, last_hash, moved_without_record FROM units WHERE serial = ?",
                             (serial,)).fetchone()
        return UnitPosition(row[0], row[1], row[2] == MOVED_PAST, row[2] == RECOVERED_UNCHECKED) if row else \
            UnitPosition(0, None, False)

    def note_unchecked(self, serial: str, lowest_held: int, position: int) -> None:
        """Say once (a dead letter, reported to the server) that a unit holding records at or below the position
        buffer-recover gave it could not be checked: no record's hash stands there. It is asked from the record
        after (a unit may keep what it was acknowledged); had its counter restarted too, its records
        ``lowest_held``..``position`` are not collected."""
        payload = json.dumps({"unchecked_from_seq": lowest_held, "unchecked_to_seq": position})
        with self._transaction() as db:
            self._insert_unit_dead_letter(
                db, serial, payload, "after the buffer was replaced, records at or below its position could not be "
                "checked against a stored one; if the unit's counter restarted, these were not collected")
            db.execute("UPDATE units SET moved_without_record = NULL WHERE serial = ? AND moved_without_record = ?",
                       (serial, RECOVERED_UNCHECKED))
        logger.warning("unit %s holds records %d..%d at or below the position the buffer's recovery gave it; they "
                       "cannot be checked (no stored record there): asked from the record after", serial,
                       lowest_held, position)

    def adopt_hash(self, serial: str, seq: int, content_hash: str) -> None:
        """Take ``content_hash`` (the server's, of the record a gateway of the patient's delivered under ``seq``) as
        the hash of the record at a unit's position, where the gateway had none (it moved there past records the
        unit no longer held, or buffer-recover gave it): the note is cleared, and the unit's copy of that record is
        compared with it from now on, as with a record stored here."""
        with self._transaction() as db:
            db.execute("UPDATE units SET last_hash = ?, moved_without_record = NULL WHERE serial = ? "
                       "AND last_stored_seq = ? AND last_hash IS NULL AND moved_without_record IN (?, ?)",
                       (content_hash, serial, seq, MOVED_PAST, RECOVERED_UNCHECKED))

    def note_patient(self, patient_ref: str) -> None:
        """Whose records this buffer holds (the pairing's patient), kept with them: a pairing for another patient
        is refused while they wait, even when the configuration that named the patient is lost."""
        with self._transaction() as db:
            db.execute("INSERT INTO meta(name, value) VALUES ('patient_ref', ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value WHERE value != excluded.value",
                       (patient_ref,))

    def patient(self) -> str | None:
        """Whose records this buffer holds, as noted (None: never noted)."""
        with self._reading() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'patient_ref'").fetchone()
        return row[0] if row else None

    def explained_through(self, serial: str) -> int:
        """How far the gateway acknowledged a unit's records (0 if never beyond those stored), the last ones
        undecodable and kept as dead letters rather than stored."""
        with self._reading() as db:
            row = db.execute("SELECT explained_to FROM units WHERE serial = ?", (serial,)).fetchone()
        return (row[0] or 0) if row else 0

    def note_explained(self, serial: str, seq: int) -> None:
        """The records after the one stored last up to ``seq`` were undecodable, dead-lettered, and are about to be
        acknowledged: once the unit frees them, that is not a loss (``record_missing``). The position and the
        hash of the record stored last stay, for telling a lost acknowledgement from a restarted counter."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO units(serial, last_stored_seq, explained_to) VALUES (?, 0, ?) "
                "ON CONFLICT(serial) DO UPDATE SET explained_to = MAX(COALESCE(units.explained_to, 0), "
                "excluded.explained_to)", (serial, seq))

    def store(self, serial: str, records: Sequence[CapturedRecord]) -> StoreResult:
        """Commit records from one unit, in sequence order, and return how far it is safe to ack.

        Records at or below the unit's last stored sequence are already here (their ack was lost)
        and are skipped. When the byte cap is reached the remaining records are refused. The ledger
        is brought up to the returned sequence before this returns, so it always covers every ack.
        """
        stored = already = refused = 0
        last_hash = None
        with self._transaction() as db:
            last = self._last_stored_locked(serial)
            pending_bytes = self._pending_bytes_locked()
            for record in sorted(records, key=lambda r: r.device_seq):
                if record.device_seq <= last:
                    already += 1
                    continue
                payload = json.dumps(record.as_api_item(), separators=(",", ":"))
                size = len(payload)
                if pending_bytes + size > self.max_bytes:
                    refused = len(records) - stored - already
                    break
                self._insert_locked(record, payload, size)
                pending_bytes += size
                last, last_hash = record.device_seq, record.content_hash
                stored += 1
            db.execute(
                "INSERT INTO units(serial, last_stored_seq, last_hash) VALUES (?, ?, ?) "
                "ON CONFLICT(serial) DO UPDATE SET last_stored_seq = excluded.last_stored_seq, "
                "last_hash = COALESCE(excluded.last_hash, units.last_hash), "
                "moved_without_record = CASE WHEN excluded.last_hash IS NULL THEN units.moved_without_record END",
                (serial, last, last_hash),
            )
            if refused:
                self._bump_locked(REFUSED_AT_CAP, refused)
        if refused:
            logger.warning(
                "buffer full (%d bytes cap): refused %d record(s) from unit %s; they stay on the unit",
                self.max_bytes, refused, serial,
            )
        self._note_in_ledger(serial, last)
        return StoreResult(stored_up_to=last, stored=stored, already_stored=already, refused=refused)

    def _note_in_ledger(self, serial: str, stored_up_to: int) -> None:
        # Compared with what the ledger holds, not with the buffer's previous value: after a failed ledger
        # write the unit resends, the records are "already stored", and the ledger must still catch up.
        if self._ledger is None or stored_up_to <= self._ledger_units.get(serial, 0):
            return
        with self._ledger_lock:
            if stored_up_to > self._ledger_units.get(serial, 0):
                units = {**self._ledger_units, serial: stored_up_to}
                self._ledger.write(units)
                self._ledger_units = units

    def _insert_locked(self, record: CapturedRecord, payload: str, size: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO records(record_id, device_serial, device_seq, size_bytes, sealed) VALUES (?,?,?,?,?)",
            (record.record_id, record.device_serial, record.device_seq, size, self._seal_record(record.record_id, payload)),
        )

    def take_over(self, records: Sequence[PendingRecord], syncs: Sequence[dict] = (),
                  dead_letters: Sequence[dict] = (), *, patient_ref: str | None = None,
                  notes: Sequence[tuple[str, dict, str]] = (),
                  last_stored: Mapping[str, tuple[int, str | None]] | None = None,
                  moved_past: Mapping[str, int] | None = None) -> int:
        """Take what a buffer that was replaced (``buffer-recover``) still had for the server: its queued records
        and syncs (the clock readings its records are placed by) as they were waiting there (those already here
        are left), its dead letters not yet reported (as ``dead_letters`` gives them), whose records they are
        (``patient_ref``), the notes to the server saying it was replaced (``(serial, detail, reason)``), and the
        hash of the record stored last of each unit whose position there (``last_stored``: serial → (sequence,
        hash)) is the one this buffer resumes it at, so a lost acknowledgement is still told from a restarted
        counter, and the units whose position there was moved past records they no longer held (``moved_past``:
        serial → that position), which stay so here: one holding such records again is a restarted counter. One
        transaction: a stop midway takes none of it, not part (the moved files stay where they were put). Returns
        how many records were queued."""
        taken = 0
        with self._transaction() as db:
            for record in records:
                payload = json.dumps(record.payload, separators=(",", ":"))
                taken += db.execute(
                    "INSERT OR IGNORE INTO records(record_id, device_serial, device_seq, size_bytes, sealed) "
                    "VALUES (?,?,?,?,?)",
                    (record.record_id, record.payload["device_serial"], record.payload["device_seq"], len(payload),
                     self._seal_record(record.record_id, payload))).rowcount
            for sync in syncs:
                sealed = self._sealer.seal(json.dumps(sync, separators=(",", ":")).encode(),
                                           sync_context(sync["sync_id"]))
                db.execute("INSERT OR IGNORE INTO syncs(sync_id, device_serial, sealed) VALUES (?,?,?)",
                           (sync["sync_id"], sync["serial"], sealed))
            for letter in dead_letters:
                rid, serial, payload = letter["record_id"], letter["device_serial"], letter["payload"]
                sealed = self._seal_record(rid, payload) if rid else \
                    self._sealer.seal(payload.encode(), unit_context(serial))
                db.execute("INSERT OR IGNORE INTO dead_letters(record_id, device_serial, sealed, reason, source, "
                           "dead_at, frame_hash, frame_slot) VALUES (?,?,?,?,?,?,?,?)",
                           (rid, serial, sealed, letter["reason"], letter["source"], letter["dead_at"],
                            letter.get("frame_hash"), letter.get("frame_slot")))
            if patient_ref:
                db.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('patient_ref', ?)", (patient_ref,))
            for serial, detail, reason in notes:
                self._insert_unit_dead_letter(db, serial, json.dumps(detail), reason)
            db.executemany("UPDATE units SET last_hash = ?, moved_without_record = NULL WHERE serial = ? "
                           "AND last_stored_seq = ? AND last_hash IS NULL",
                           [(digest, serial, seq) for serial, (seq, digest) in sorted((last_stored or {}).items())
                            if digest is not None])
            db.executemany("UPDATE units SET moved_without_record = ? WHERE serial = ? AND last_stored_seq = ? "
                           "AND last_hash IS NULL",
                           [(MOVED_PAST, serial, seq) for serial, seq in sorted((moved_past or {}).items())])
        return taken

    def _last_stored_locked(self, serial: str) -> int:
        row = self._db.execute("SELECT last_stored_seq FROM units WHERE serial = ?", (serial,)).fetchone()
        return row[0] if row else 0

    def _pending_bytes_locked(self) -> int:
        return self._db.execute("SELECT bytes FROM pending_total WHERE id = 1").fetchone()[0]

    def _bump_locked(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def pending(self, limit: int) -> list[PendingRecord]:
        """The oldest ``limit`` records not yet acknowledged by the server.

        A record whose stored content no longer opens (a damaged row) is moved to the dead letters, raw,
        so that it cannot hold up every record behind it.
        """
        while True:
            with self._reading() as db:
                rows = db.execute(
                    "SELECT record_id, sealed, size_bytes FROM records ORDER BY position LIMIT ?", (limit,)
                ).fetchall()
            readable, unreadable = [], []
            for rid, sealed, size in rows:
                try:
                    readable.append(PendingRecord(rid, json.loads(self._open_record(rid, sealed)), size))
                except (SealingError, ValueError) as exc:
                    why = str(exc) if isinstance(exc, SealingError) else type(exc).__name__
                    unreadable.append((rid, sealed, f"stored content unreadable: {why}"))
            if not unreadable:
                return readable
            self._set_aside_unreadable(unreadable)

    def _set_aside_unreadable(self, unreadable: list[tuple[str, bytes, str]]) -> None:
        with self._transaction() as db:
            for rid, sealed, reason in unreadable:
                note = json.dumps({"unreadable_sealed_hex": bytes(sealed).hex()})
                db.execute(
                    "INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) "
                    "SELECT record_id, device_serial, ?, ?, 'buffer', ? FROM records WHERE record_id = ?",
                    (self._seal_record(rid, note), reason, _now(), rid),
                )
                db.execute("DELETE FROM records WHERE record_id = ?", (rid,))
        logger.error("%d stored record(s) could not be read; moved to the dead-letter table", len(unreadable))

    def pending_count(self) -> int:
        """How many records wait for upload."""
        with self._reading() as db:
            return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def mark_sent(self, record_ids: Iterable[str]) -> int:
        """Remove records the server acknowledged (created or duplicate). Returns how many left the queue."""
        ids = list(record_ids)
        with self._transaction() as db:
            removed = db.executemany("DELETE FROM records WHERE record_id = ?", [(i,) for i in ids]).rowcount
            self._bump_locked(SENT, removed)
        return removed

    def dead_letter(self, rejections: Iterable[tuple[str, str]]) -> int:
        """Move records the server rejected to the dead-letter table with the server's reason."""
        moved = 0
        with self._transaction() as db:
            for record_id, reason in rejections:
                row = db.execute(
                    "SELECT device_serial, sealed FROM records WHERE record_id = ?", (record_id,)
                ).fetchone()
                if row is None:
                    continue
                db.execute(
                    "INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (record_id, row[0], row[1], reason, "server", _now()),
                )
                db.execute("DELETE FROM records WHERE record_id = ?", (record_id,))
                moved += 1
        if moved:
            logger.warning("server rejected %d record(s); moved to the dead-letter table", moved)
        return moved

    def dead_letter_frame(self, serial: str, frame: bytes, reason: str, slot: int) -> None:
        """Keep a frame a unit sent that could not be decoded, raw (hex), with the reason: once per place in the
        unit's sequence it stands for (``slot``, see ``TransferWindow.settled``), however often the unit
        sends it again there (a transfer cut short before the acknowledgement covering it is asked again from
        before it); the same bytes at another place are another record's, and kept too."""
        frame = bytes(frame)
        context = unit_context(serial)
        with self._reading() as db:
            kept = db.execute(
                "INSERT OR IGNORE INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at, "
                "frame_hash, frame_slot) VALUES (NULL,?,?,?,'unit',?,?,?)",
                (serial, self._sealer.seal(frame.hex().encode(), context), reason, _now(),
                 self._sealer.fingerprint(frame, context), slot)).rowcount == 1
        if kept:
            logger.warning("unit %s sent an undecodable frame (%s); kept in the dead-letter table", serial, reason)
        else:
            logger.info("unit %s sent an undecodable frame again (%s); kept once already", serial, reason)

    def record_missing(self, serial: str, first_seq: int, last_seq: int) -> None:
        """Note that a unit no longer holds records the gateway never stored (so the loss is not silent), and
        move the unit's position past them in the same transaction, so that the gap is noted once, not at
        every connection (another gateway of the patient's may have taken them)."""
        payload = json.dumps({"missing_from_seq": first_seq, "missing_to_seq": last_seq})
        with self._transaction() as db:
            self._insert_unit_dead_letter(db, serial, payload, "unit no longer holds these records")
            db.execute(
                "INSERT INTO units(serial, last_stored_seq, moved_without_record) VALUES (?, ?, 1) "
                "ON CONFLICT(serial) DO UPDATE SET last_stored_seq = MAX(last_stored_seq, excluded.last_stored_seq), "
                "last_hash = CASE WHEN excluded.last_stored_seq > units.last_stored_seq THEN NULL "
                "ELSE units.last_hash END, "
                "moved_without_record = CASE WHEN excluded.last_stored_seq > units.last_stored_seq THEN 1 "
                "ELSE units.moved_without_record END",
                (serial, last_seq),
            )
        self._note_in_ledger(serial, last_seq)
        logger.error("unit %s no longer holds records %d..%d that were never stored", serial, first_seq, last_seq)

    def _insert_unit_dead_letter(self, db: sqlite3.Connection, serial: str, payload: str, reason: str) -> None:
        """A dead letter about a unit (no record id), sealed, written on ``db`` (inside the caller's lock)."""
        db.execute(
            "INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) "
            "VALUES (NULL,?,?,?,?,?)",
            (serial, self._sealer.seal(payload.encode(), unit_context(serial)), reason, "unit", _now()),
        )

    def dead_letters(self, *, unreported_only: bool = False, limit: int = 1_000_000) -> list[dict]:
        """Dead letters, oldest first, their payloads opened (``unreported_only``: those not yet reported to
        the server). Each has its ``id`` in the buffer, and an undecodable frame its ``frame_hash`` and
        ``frame_slot``."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, record_id, device_serial, sealed, reason, source, dead_at, reported_at, frame_hash, "
                "frame_slot "
                "FROM dead_letters WHERE reported_at IS NULL OR ? = 0 ORDER BY id LIMIT ?",
                (int(unreported_only), limit)
            ).fetchall()
        return [
            {
                "id": n, "record_id": rid, "device_serial": serial, "reason": reason, "source": source,
                "dead_at": dead_at, "reported_at": reported, "payload": self._open_dead(rid, serial, sealed),
                "frame_hash": frame_hash, "frame_slot": frame_slot,
            }
            for n, rid, serial, sealed, reason, source, dead_at, reported, frame_hash, frame_slot in rows
        ]

    def _open_dead(self, record_id: str | None, serial: str, sealed: bytes) -> str:
        try:
            return self._open_record(record_id, sealed) if record_id else \
                self._sealer.open(sealed, unit_context(serial)).decode()
        except SealingError as exc:
            return json.dumps({"unreadable": str(exc)})

    def mark_dead_letters_reported(self, ids: Iterable[int]) -> int:
        """Note that the server has these dead letters."""
        with self._transaction() as db:
            return db.executemany("UPDATE dead_letters SET reported_at = ? WHERE id = ? AND reported_at IS NULL",
                                  [(_now(), n) for n in ids]).rowcount

    def requeue(self, dead_letter_id: int, record: CapturedRecord | None = None) -> bool:
        """Put a dead letter back in the upload queue and drop it from the dead letters: a record the server
        refused as it was (``record`` None), or the record a frame decodes to now. False if there is no such
        dead letter, or it has no record to queue."""
        with self._transaction() as db:
            row = db.execute("SELECT record_id, device_serial, sealed, source FROM dead_letters WHERE id = ?",
                             (dead_letter_id,)).fetchone()
            if row is None:
                return False
            rid, serial, sealed, source = row
            if record is not None:
                payload = json.dumps(record.as_api_item(), separators=(",", ":"))
                rid = record.record_id
                sealed = self._seal_record(rid, payload)
            elif source != "server" or rid is None:
                return False
            else:
                payload = self._open_record(rid, sealed)
            seq = int(rid.rsplit(":", 1)[1])
            db.execute("INSERT OR IGNORE INTO records(record_id, device_serial, device_seq, size_bytes, sealed) "
                       "VALUES (?,?,?,?,?)", (rid, serial, seq, len(payload), sealed))
            db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_letter_id,))
            self._bump_locked(REPLAYED, 1)
        return True

    # Syncs: the link's readings of a unit's clock, queued until the server has them.
    def store_sync(self, serial: str, sync: dict) -> None:
        """Keep a sync (an API ``Sync`` item) for upload; committed before the link reads any record."""
        sealed = self._sealer.seal(json.dumps(sync, separators=(",", ":")).encode(), sync_context(sync["sync_id"]))
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO syncs(sync_id, device_serial, sealed) VALUES (?,?,?)",
                       (sync["sync_id"], serial, sealed))

    def pending_syncs(self, limit: int) -> list[dict]:
        """The oldest syncs the server does not have yet. One whose content no longer opens (a damaged row) is
        moved to the dead letters, raw, as a record is (``pending``): the server is told its unit lost a reading
        of its clock, where it was dropped with a log line no one sees."""
        with self._reading() as db:
            rows = db.execute("SELECT sync_id, sealed FROM syncs ORDER BY position LIMIT ?", (limit,)).fetchall()
        syncs, unreadable = [], []
        for sync_id, sealed in rows:
            try:
                syncs.append(json.loads(self._sealer.open(sealed, sync_context(sync_id))))
            except (SealingError, ValueError) as exc:
                why = str(exc) if isinstance(exc, SealingError) else type(exc).__name__
                unreadable.append((sync_id, sealed, f"stored sync unreadable: {why}"))
        if unreadable:
            self._set_aside_unreadable_syncs(unreadable)
        return syncs

    def _set_aside_unreadable_syncs(self, unreadable: list[tuple[str, bytes, str]]) -> None:
        with self._transaction() as db:
            for sync_id, sealed, reason in unreadable:
                row = db.execute("SELECT device_serial FROM syncs WHERE sync_id = ?", (sync_id,)).fetchone()
                if row is None:
                    continue  # uploaded or set aside meanwhile
                note = json.dumps({"sync_id": sync_id, "unreadable_sealed_hex": bytes(sealed).hex()})
                db.execute("INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) "
                           "VALUES (NULL,?,?,?,'sync',?)",
                           (row[0], self._sealer.seal(note.encode(), unit_context(row[0])), reason, _now()))
                db.execute("DELETE FROM syncs WHERE sync_id = ?", (sync_id,))
        logger.error("%d stored sync(s) could not be read; moved to the dead-letter table", len(unreadable))

    def pending_sync_count(self) -> int:
        """How many syncs wait for upload."""
        with self._reading() as db:
            return db.execute("SELECT COUNT(*) FROM syncs").fetchone()[0]

    def dead_letter_syncs(self, rejections: Iterable[tuple[str, str]]) -> int:
        """Move syncs the server refused (malformed: a gateway fault) to the dead letters, with its reason."""
        moved = 0
        with self._transaction() as db:
            for sync_id, reason in rejections:
                row = db.execute("SELECT device_serial, sealed FROM syncs WHERE sync_id = ?", (sync_id,)).fetchone()
                if row is None:
                    continue
                payload = self._sealer.open(row[1], sync_context(sync_id))
                db.execute("INSERT INTO dead_letters(record_id, device_serial, sealed, reason, source, dead_at) "
                           "VALUES (NULL,?,?,?,?,?)",
                           (row[0], self._sealer.seal(payload, unit_context(row[0])), reason, "sync", _now()))
                db.execute("DELETE FROM syncs WHERE sync_id = ?", (sync_id,))
                moved += 1
        return moved

    def mark_syncs_sent(self, sync_ids: Iterable[str]) -> int:
        """Drop syncs the server has (created, duplicate, or refused as malformed)."""
        with self._transaction() as db:
            return db.executemany("DELETE FROM syncs WHERE sync_id = ?", [(i,) for i in sync_ids]).rowcount

    def counter(self, name: str) -> int:
        """A persistent counter (``refused_at_cap``, ``sent``)."""
        with self._reading() as db:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def status(self) -> BufferStatus:
        """Queue length, bytes, dead letters, counters and per-unit progress."""
        with self._reading() as db:
            return read_status(db)
