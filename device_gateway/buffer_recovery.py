"""``device-gateway buffer-recover``: set a damaged or lost buffer aside and start a new one that resumes
each unit after the last record it was acknowledged.

The damaged files are moved, not deleted (``buffer-damaged-20260102T030405Z.db`` and its ``-wal``), so
someone can still try to read them. The new buffer takes each unit's position from the ledger, so the
link asks the unit for what comes after it instead of greeting it as a first contact. Records that were
waiting for upload in the damaged buffer (the units already freed them) are carried over from a copy of the
moved file where its rows still open with the buffer's key (a buffer restored from an older image, or lost
only in part); and each unit gets a dead letter, reported to the server like the others, saying that the
buffer was replaced and how many of its queued records were carried over, so that a record lost with the
damaged file is not lost in silence. Its syncs and its dead letters not yet reported are carried over the same
way (the records are placed by the syncs; a dead letter holds what a unit sent that was never a record).
"""

import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

_SQLITE_SIDE_FILES = ("", "-wal", "-shm")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``buffer-recover`` did: nothing (``intact``), or the files it moved and where each unit resumes."""

    intact: bool
    moved: list[Path]
    resumes_after: dict[str, int]
    carried_over: int = 0


def _aside(path: Path, stamp: str) -> Path:
    """A free name for the damaged buffer, keeping ``.db`` so SQLite still pairs it with its ``-wal``."""
    n = 0
    while True:
        tag = f"{stamp}-{n}" if n else stamp
        candidate = path.with_name(f"{path.stem}-damaged-{tag}{path.suffix}")
        if not any(Path(f"{candidate}{side}").exists() for side in _SQLITE_SIDE_FILES):
            return candidate
        n += 1


def _utcnow() -> datetime:
    return datetime.now(UTC)


def recover_buffer(config: GatewayConfig, now: Callable[[], datetime] = _utcnow) -> Recovery:
    """Replace the buffer if (and only if) opening it is refused as damaged or lost."""
    path = config.buffer_path
    try:
        config.open_buffer().close()
        return Recovery(intact=True, moved=[], resumes_after={})
    except BufferDamaged as exc:
        logger.warning("recovering: %s", exc)
    aside = _aside(path, now().strftime("%Y%m%dT%H%M%SZ"))
    moved = []
    for side in _SQLITE_SIDE_FILES:
        source = Path(f"{path}{side}")
        if source.exists():
            target = Path(f"{aside}{side}")
            os.replace(source, target)
            moved.append(target)
    buffer = RecordBuffer(path, config.max_buffer_bytes, key_file=config.buffer_key_path, replacing_lost=True)
    try:
        salvaged = _salvage(aside, config) if moved else _Salvage([], [], [], None, {})
        resumes_after = buffer.status().units
        records = Counter(record.payload["device_serial"] for record in salvaged.records)
        syncs = Counter(sync["serial"] for sync in salvaged.syncs)
        letters = Counter(letter["device_serial"] for letter in salvaged.dead_letters)
        notes = [(serial, {"buffer_replaced_at": now().isoformat(), "moved_to": str(aside),
                           "queued_records_carried_over": records[serial], "syncs_carried_over": syncs[serial],
                           "dead_letters_carried_over": letters[serial],
                           "resumes_after_seq": resumes_after.get(serial, 0)},
                  "the gateway's buffer was replaced (damaged or lost): records it held that were not yet uploaded "
                  "may be lost, apart from those carried over")
                 for serial in sorted(set(resumes_after) | set(records) | set(syncs) | set(letters))]
        carried = buffer.take_over(salvaged.records, salvaged.syncs, salvaged.dead_letters,
                                   patient_ref=salvaged.patient_ref or config.patient_ref, notes=notes,
                                   last_stored=salvaged.last_stored)
    finally:
        buffer.close()
    logger.warning("new buffer %s; %d queued record(s) carried over; units resume after %s", path, carried,
                   resumes_after or "nothing (first contact)")
    return Recovery(intact=False, moved=moved, resumes_after=resumes_after, carried_over=carried)


@dataclass(frozen=True, slots=True)
class _Salvage:
    """What still opens in a moved buffer and was still to go to the server: its queued records, its syncs (the
    clock readings the records are placed by) and its dead letters not yet reported."""

    records: list
    syncs: list[dict]
    dead_letters: list[dict]
    patient_ref: str | None  # whose records they are, as the moved buffer noted
    last_stored: dict[str, tuple[int, str | None]]  # per unit: its position there and the hash of the record at it


def _salvage(aside: Path, config: GatewayConfig) -> _Salvage:
    """What was still to go to the server in the moved buffer, read from a copy of it (the moved file is left
    as it was): nothing when it cannot be opened at all."""
    with tempfile.TemporaryDirectory(prefix="buffer-salvage-") as scratch:
        copy = Path(scratch) / "buffer.db"
        for side in _SQLITE_SIDE_FILES:
            if Path(f"{aside}{side}").exists():
                shutil.copyfile(f"{aside}{side}", f"{copy}{side}")
        try:
            # Its own ledger (none): the copy is read for its rows, whatever the real ledger says of it.
            old = RecordBuffer(copy, key_file=config.buffer_key_path, ledger_file=Path(scratch) / "ledger.json")
        except Exception as exc:  # noqa: BLE001 - a file past reading: nothing to carry over, said in the log
            logger.warning("the moved buffer cannot be read (%s): none of its queued records is carried over",
                           type(exc).__name__)
            return _Salvage([], [], [], None, {})
        try:
            return _Salvage(old.pending(1_000_000), old.pending_syncs(1_000_000),
                            old.dead_letters(unreported_only=True), old.patient(),
                            {serial: old.last_stored(serial) for serial in old.status().units})
        finally:
            old.close()
