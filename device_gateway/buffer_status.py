"""What ``device-gateway status`` shows of the buffer: its counts, read from an open buffer, or from the
file alone without creating or changing anything (``inspect_buffer``), refused as opening it would be."""

import sqlite3
from dataclasses import dataclass
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
from device_gateway.ledger import BufferLedger, ledger_path_for, shortfalls

# Names of the buffer's persistent counters.
REFUSED_AT_CAP = "refused_at_cap"
SENT = "sent"
REPLAYED = "replayed"


@dataclass(frozen=True, slots=True)
class BufferStatus:
    """Counts shown by ``device-gateway status``."""

    pending: int
    pending_bytes: int
    dead_letters: int
    refused_at_cap: int
    sent: int
    units: dict[str, int]
    dead_letters_unreported: int = 0
    syncs_pending: int = 0
    replayed: int = 0
    patient_ref: str | None = None  # whose records it holds, as noted when it was last opened paired
    waiting_units: tuple[str, ...] = ()  # the units whose records, syncs or dead letters wait for the server


def read_status(db: sqlite3.Connection) -> BufferStatus:
    """The counts of the buffer behind ``db``."""
    pending, pending_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM records").fetchone()
    dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    units = dict(db.execute("SELECT serial, last_stored_seq FROM units ORDER BY serial").fetchall())
    counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    try:  # a buffer written before syncs and dead-letter reports existed has neither
        unreported = db.execute("SELECT COUNT(*) FROM dead_letters WHERE reported_at IS NULL").fetchone()[0]
        syncs = db.execute("SELECT COUNT(*) FROM syncs").fetchone()[0]
        waiting = db.execute("SELECT device_serial FROM records UNION SELECT device_serial FROM syncs UNION "
                             "SELECT device_serial FROM dead_letters WHERE reported_at IS NULL").fetchall()
    except sqlite3.OperationalError:
        unreported, syncs = dead, 0
        waiting = db.execute("SELECT device_serial FROM records UNION SELECT device_serial FROM dead_letters").fetchall()
    try:  # a buffer written before sealing has no meta table until a newer gateway opens it
        patient = db.execute("SELECT value FROM meta WHERE name = 'patient_ref'").fetchone()
    except sqlite3.OperationalError:
        patient = None
    return BufferStatus(pending, pending_bytes, dead, counters.get(REFUSED_AT_CAP, 0), counters.get(SENT, 0), units,
                        unreported, syncs, counters.get(REPLAYED, 0), patient[0] if patient else None,
                        tuple(sorted(serial for (serial,) in waiting)))


def inspect_buffer(path: str | Path, ledger_file: str | Path | None = None) -> BufferStatus | None:
    """What ``device-gateway status`` shows, read without creating or changing any file.

    None when there is no buffer yet. Raises BufferDamaged in every case where opening it would.
    """
    path = str(path)
    check_not_being_recovered(path)
    ledger = BufferLedger(Path(ledger_file) if ledger_file else ledger_path_for(path))
    recorded = read_ledger(ledger)
    if not Path(path).exists():
        if recorded is None:
            return None
        raise buffer_missing(path, ledger)
    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        check_readable(db, path)
        if is_empty(db):
            if recorded is None:
                return None
            raise buffer_emptied(path, ledger)
        status = read_status(db)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise buffer_unreadable(path, exc) from None
        raise
    finally:
        db.close()
    short = shortfalls(recorded or {}, status.units)
    if short:
        raise buffer_behind_ledger(path, ledger, short)
    return status
