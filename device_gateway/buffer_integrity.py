"""When the gateway refuses its buffer, and what it says.

A buffer that is damaged or has lost records is refused loudly (:class:`BufferDamaged`), never silently
replaced by an empty one: at open, a file SQLite cannot read or whose ``quick_check`` fails, and a file
that is missing, empty, or holds fewer records than its ledger says (see ``ledger``), and any file while a
``buffer-recover`` of it is unfinished; at run time, SQLite reporting the file corrupt. A full disk is not damage: that error is raised as is, and the caller retries
once there is room. ``device-gateway buffer-recover`` is the way out; the command line names it.
"""

import logging
import sqlite3
from pathlib import Path

from device_gateway.errors import GatewayError
from device_gateway.ledger import BufferLedger, LedgerUnreadable

logger = logging.getLogger(__name__)

# SQLite's primary result codes that mean the file itself is damaged (extended codes add bits above 0xFF).
_DAMAGED_FILE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class BufferDamaged(GatewayError):
    """The buffer file is damaged or has lost records; the gateway must not carry on with it.

    ``problem`` completes the sentence "buffer PATH ..."; the command line adds the recovery command.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"buffer {path} {problem}")
        self.path = path
        self.problem = problem


def is_damage(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is corrupt or not a database (not for a full disk or a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _DAMAGED_FILE_CODES


def is_empty(db: sqlite3.Connection) -> bool:
    """True for a file with no tables: a new database, or one truncated to zero bytes."""
    return db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0


def check_readable(db: sqlite3.Connection, path: str) -> None:
    """Run SQLite's ``quick_check`` (reads every page once); raise BufferDamaged if it finds damage."""
    verdict = " ".join(row[0] for row in db.execute("PRAGMA quick_check(1)").fetchall())
    if verdict != "ok":
        raise BufferDamaged(path, f"fails SQLite's integrity check ({' '.join(verdict.split())})")


def read_ledger(ledger: BufferLedger) -> dict[str, int] | None:
    """The ledger's units, None without a ledger; {} ("in use, units unknown") for an unreadable one,
    so that an empty buffer beside it is still refused while an intact buffer simply rewrites it."""
    try:
        return ledger.read()
    except LedgerUnreadable as exc:
        logger.warning("%s; it will be rewritten from the buffer if the buffer is intact", exc)
        return {}


def buffer_missing(path: str, ledger: BufferLedger) -> BufferDamaged:
    """The buffer file is gone but the ledger says one was in use."""
    return BufferDamaged(path, f"is missing, but its ledger {ledger.path} says it was in use")


def buffer_emptied(path: str, ledger: BufferLedger) -> BufferDamaged:
    """The buffer file holds no tables (e.g. truncated to zero bytes) but the ledger says one was in use."""
    return BufferDamaged(path, f"is empty, but its ledger {ledger.path} says it was in use")


def buffer_behind_ledger(path: str, ledger: BufferLedger, short: dict[str, tuple[int, int]]) -> BufferDamaged:
    """The buffer holds fewer records for some unit than the ledger says were stored (and acknowledged)."""
    detail = ", ".join(f"unit {serial} up to {stored}, ledger {recorded}" for serial, (stored, recorded) in short.items())
    return BufferDamaged(path, f"holds fewer records than its ledger {ledger.path} says ({detail})")


def recovery_marker_path_for(buffer_path: str | Path) -> Path:
    """Where ``buffer-recover`` notes how far it got while it replaces a buffer: ``buffer.recovery.json``."""
    path = Path(buffer_path)
    return path.with_name(path.stem + ".recovery.json")


def check_not_being_recovered(path: str) -> None:
    """Raise BufferDamaged while a ``buffer-recover`` of this buffer is unfinished (its marker exists): until it
    is, the file there is the damaged one, part of the new one, or none, and nothing may open or create one."""
    marker = recovery_marker_path_for(path)
    if marker.exists():
        raise BufferDamaged(path, f"is being replaced by a buffer-recover that stopped before it finished ({marker})")


def buffer_unreadable(path: str, exc: sqlite3.DatabaseError) -> BufferDamaged:
    """SQLite cannot read the file (not a database, or a corrupt page)."""
    return BufferDamaged(path, f"is damaged: {exc}")
