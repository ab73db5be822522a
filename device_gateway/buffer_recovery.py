"""``device-gateway buffer-recover``: set a damaged or lost buffer aside and start a new one that resumes
each unit after the last record it was acknowledged.

The damaged files are moved, not deleted (``buffer-damaged-20260102T030405Z.db`` and its ``-wal``), so
someone can still try to read them. The new buffer takes each unit's position from the ledger, so the
link asks the unit for what comes after it instead of greeting it as a first contact. Records that were
waiting for upload in the damaged buffer (the units already freed them) are carried over from a copy of the
moved file, every one whose row still reads and opens with the buffer's key (a buffer restored from an older
image, or damaged in part: see ``buffer_salvage``), and each queued record that does not come through gets a
dead letter naming it; and each unit gets a dead letter, reported to the server like the others, saying that
the buffer was replaced and how many of its queued records were carried over and lost, so that a record lost
with the damaged file is not lost in silence. Its syncs and its dead letters not yet reported are carried over the same
way (the records are placed by the syncs; a dead letter holds what a unit sent that was never a record).

A recovery stopped midway (Ctrl-C, a power cut) is finished by running it again. Before the first file is
moved, a marker beside the buffer (``buffer.recovery.json``, replaced atomically) names where the files go and
how far the recovery got: moving them, moved, or the new buffer built. While it exists every command refuses
the buffer (nothing may open, or create, a buffer where the recovery will put its own), and a second run
carries on from it: it moves what is left to the same place, salvages from there, and builds the new buffer
beside (``buffer.recovering.db``, made again from the start if a stop left part of one), renames it into place
once complete, and deletes the marker last.
"""

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.atomic_file import write_atomically
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged, recovery_marker_path_for
from device_gateway.buffer_salvage import Salvage, salvage
from device_gateway.config import GatewayConfig
from device_gateway.ledger import ledger_path_for

logger = logging.getLogger(__name__)

_SQLITE_SIDE_FILES = ("", "-wal", "-shm")
_MOVING, _MOVED, _BUILT = "moving", "moved", "built"  # how far a recovery got, as its marker says


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``buffer-recover`` did: nothing (``intact``), or the files it moved and where each unit resumes;
    ``resumed``: it finished a recovery that had stopped midway."""

    intact: bool
    moved: list[Path]
    resumes_after: dict[str, int]
    carried_over: int = 0
    resumed: bool = False
    lost: int = 0  # queued records of the moved buffer that did not come through, a dead letter each
    unreadable_positions: int = 0  # row ids of its queue that could not be read and that no index names


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
    """Replace the buffer if (and only if) opening it is refused as damaged or lost; finish a recovery that
    stopped midway."""
    path = config.buffer_path
    marker_path = recovery_marker_path_for(path)
    marker = _read_marker(marker_path)
    resumed = marker is not None
    if marker is None:
        try:
            config.open_buffer().close()
            return Recovery(intact=True, moved=[], resumes_after={})
        except BufferDamaged as exc:
            logger.warning("recovering: %s", exc)
        marker = {"moved_to": str(_aside(path, now().strftime("%Y%m%dT%H%M%SZ"))), "stage": _MOVING}
        _write_marker(marker_path, marker)
    else:
        logger.warning("finishing the recovery that stopped at stage %r (damaged files: %s)", marker["stage"],
                       marker["moved_to"])
    aside = Path(marker["moved_to"])
    if marker["stage"] == _MOVING:
        for side in _SQLITE_SIDE_FILES:
            if Path(f"{path}{side}").exists():
                _move(Path(f"{path}{side}"), Path(f"{aside}{side}"))
        marker = {**marker, "stage": _MOVED}
        _write_marker(marker_path, marker)
    building = path.with_name(f"{path.stem}.recovering{path.suffix}")
    if marker["stage"] == _MOVED:
        marker = {**marker, "stage": _BUILT, **_build(building, aside, config, now)}
        _write_marker(marker_path, marker)
    for side in ("-wal", "-shm", ""):  # the database file last: it is what says the new buffer is there
        if Path(f"{building}{side}").exists():
            _move(Path(f"{building}{side}"), Path(f"{path}{side}"))
    marker_path.unlink()
    _sync_directory(path.parent)
    lost, unreadable = marker.get("lost", 0), marker.get("unreadable_positions", 0)  # (a marker an older one left)
    logger.warning("new buffer %s; %d queued record(s) carried over, %d lost, %d unreadable row id(s) no index "
                   "names; units resume after %s", path, marker["carried_over"], lost, unreadable,
                   marker["resumes_after"] or "nothing (first contact)")
    moved = [Path(f"{aside}{side}") for side in _SQLITE_SIDE_FILES if Path(f"{aside}{side}").exists()]
    return Recovery(intact=False, moved=moved, resumes_after=marker["resumes_after"],
                    carried_over=marker["carried_over"], resumed=resumed, lost=lost, unreadable_positions=unreadable)


def _build(building: Path, aside: Path, config: GatewayConfig, now: Callable[[], datetime]) -> dict:
    """The new buffer, made complete under ``building`` (anything a stop left there is made again): each unit's
    position from the ledger, and what the moved buffer still had for the server. Returns, for the marker, how
    many queued records it carried over and lost, how many row ids of the queue no one can tell, and where each
    unit resumes."""
    for side in (*_SQLITE_SIDE_FILES, "-journal"):
        Path(f"{building}{side}").unlink(missing_ok=True)
    buffer = RecordBuffer(building, config.max_buffer_bytes, key_file=config.buffer_key_path,
                          ledger_file=ledger_path_for(config.buffer_path), replacing_lost=True)
    try:
        salvaged = _salvage(aside, config) if any(Path(f"{aside}{side}").exists() for side in _SQLITE_SIDE_FILES) \
            else Salvage()
        resumes_after = buffer.status().units
        records = Counter(record.payload["device_serial"] for record in salvaged.records)
        lost = Counter(letter["device_serial"] for letter in salvaged.lost)
        syncs = Counter(sync["serial"] for sync in salvaged.syncs)
        letters = Counter(letter["device_serial"] for letter in salvaged.dead_letters)
        notes = [(serial, {"buffer_replaced_at": now().isoformat(), "moved_to": str(aside),
                           "queued_records_carried_over": records[serial], "syncs_carried_over": syncs[serial],
                           "dead_letters_carried_over": letters[serial], "queued_records_lost": lost[serial],
                           "unreadable_queue_positions": salvaged.unreadable_positions,
                           "resumes_after_seq": resumes_after.get(serial, 0)},
                  "the gateway's buffer was replaced (damaged or lost): records it held that were not yet uploaded "
                  "may be lost, apart from those carried over")
                 for serial in sorted(set(resumes_after) | set(records) | set(syncs) | set(letters) | set(lost))]
        carried = buffer.take_over(salvaged.records, salvaged.syncs, [*salvaged.dead_letters, *salvaged.lost],
                                   patient_ref=salvaged.patient_ref or config.patient_ref, notes=notes,
                                   last_stored=salvaged.last_stored, moved_past=salvaged.moved_past)
    finally:
        buffer.close()
    return {"carried_over": carried, "lost": len(salvaged.lost), "unreadable_positions": salvaged.unreadable_positions,
            "resumes_after": resumes_after}


def _move(source: Path, target: Path) -> None:
    os.replace(source, target)
    _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_marker(marker_path: Path) -> dict | None:
    try:
        return json.loads(marker_path.read_text())
    except FileNotFoundError:
        return None


def _write_marker(marker_path: Path, marker: dict) -> None:
    write_atomically(marker_path, json.dumps(marker, indent=1) + "\n")


def _salvage(aside: Path, config: GatewayConfig) -> Salvage:
    """What was still to go to the server in the moved buffer, read from a copy of it (the moved file is left
    as it was, and SQLite may add to what it opens): whatever of it still reads (see ``buffer_salvage``)."""
    with tempfile.TemporaryDirectory(prefix="buffer-salvage-") as scratch:
        copy = Path(scratch) / "buffer.db"
        for side in _SQLITE_SIDE_FILES:
            if Path(f"{aside}{side}").exists():
                shutil.copyfile(f"{aside}{side}", f"{copy}{side}")
        return salvage(copy, config.buffer_key_path)
