"""``device-gateway buffer-recover``: set a damaged or lost buffer aside and start a new one that resumes
each unit after the last record it was acknowledged.

The damaged files are moved, not deleted (``buffer-damaged-20260102T030405Z.db`` and its ``-wal``), so
someone can still try to read them. The new buffer takes each unit's position from the ledger, so the
link asks the unit for what comes after it instead of greeting it as a first contact. Records that were
waiting for upload in the damaged buffer are not carried over: the units already freed them, and only the
moved file may still hold them.
"""

import logging
import os
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
        resumes_after = buffer.status().units
    finally:
        buffer.close()
    logger.warning("new buffer %s; units resume after %s", path, resumes_after or "nothing (first contact)")
    return Recovery(intact=False, moved=moved, resumes_after=resumes_after)
