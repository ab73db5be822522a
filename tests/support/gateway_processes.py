"""Helpers for gateway tests that run device-gateway and the fake radio as real processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _holds(condition) -> bool:
    """The condition's value; an error while asking (a database slow or briefly unreachable under load, a
    file being replaced) counts as "not yet", not as a failure."""
    try:
        return bool(condition())
    except Exception:  # noqa: BLE001 - polling: any error is a "not yet"
        return False


def wait_for(condition, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes; returns its last value. Errors raised by the
    condition (a ``count_documents`` timing out on a busy machine) are retried until the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _holds(condition):
            return True
        time.sleep(interval_s)
    return _holds(condition)


def last_stored_seqs(state_dir: Path) -> dict[str, int]:
    """Per-unit last stored sequence, read-only from a running gateway's buffer (empty if not there yet)."""
    db = state_dir / "buffer.db"
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute("SELECT serial, last_stored_seq FROM units").fetchall())
    except sqlite3.OperationalError:
        return {}


def spawn_module(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """``python -m ARGS`` from the repository root."""
    return subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=ROOT, **kwargs)
