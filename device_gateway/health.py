"""How the gateway's two loops and its units are doing: the last error of each and since when, kept in
``health.json``.

The radio loop (scan and pull units) and the upload loop (drain the buffer to the API) each survive any
single error and retry with backoff. Each failure and each recovery is written here, atomically, so that
``device-gateway status`` (another process) can say which loop is failing, with what, and since when;
the runner also adds a failing loop's error to the unit status it reports to the server.

A unit's pull can fail while the radio loop works: the unit refused every cycle (its counter went back, the
record stored last reads back undecodable, its position not checked yet, a full disk while storing). Each
unit whose last pull did not collect it is kept here too, with its error and since when its pulls have
failed, until a pull collects it again. A unit refused for good (a restarted counter waits for a person) is
pulled every cycle, 30 s: the file, on the gateway's SD card, is written at its first failure, when its error
changes, and otherwise with its count and the time of its last pull at most every ``UNIT_NOTE_EVERY`` and when
the gateway stops, so ``status`` shows at least that many pulls, the last noted then.

``health.json`` lives in the state directory beside the buffer, so a full disk is full for it too: it is kept
with room to spare (spaces after its JSON, ``HEALTH_FILE_ROOM`` in all), written when the gateway starts, and when
no new file can be made to replace it, it is rewritten in place (see ``atomic_file.rewrite_in_place``), so that
``status`` still shows the unit a full disk keeps from being collected.

Errors are described by :func:`describe_error`, which never copies a message that could carry session
content: only messages of exception types whose text is written by the gateway or by its infrastructure
(SQLite, the OS, httpx, bleak) are kept; anything else is named by its type and where it was raised.
"""

import json
import logging
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from bleak.exc import BleakError

from device_gateway.atomic_file import rewrite_in_place, write_atomically
from device_gateway.errors import GatewayError

logger = logging.getLogger(__name__)

RADIO = "radio"
UPLOAD = "upload"
LOOPS = (RADIO, UPLOAD)
HEALTH_FILE = "health.json"
MAX_ERROR_CHARS = 200  # what POST /gateway/device-status accepts as last_error
# health.json's size on disk, its JSON padded with spaces: room for both loops and some 30 failing units with
# errors of MAX_ERROR_CHARS, to rewrite it in place on a full disk.
HEALTH_FILE_ROOM = 16 * 1024
# A unit refused again with the same error has its count and time written this often (and at shutdown): 24 writes
# a day for a unit refused for good, not 2880.
UNIT_NOTE_EVERY = timedelta(hours=1)


_SAFE_MESSAGES: tuple[type[BaseException], ...] = (
    GatewayError, OSError, sqlite3.Error, httpx.HTTPError, BleakError, TimeoutError,
)


def describe_error(exc: BaseException) -> str:
    """One line for logs, ``status`` and the server: ``Type: message``, or ``Type at file:line``."""
    name = type(exc).__name__
    if isinstance(exc, _SAFE_MESSAGES):
        message = " ".join(str(exc).split())
        text = f"{name}: {message}" if message else name
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        text = f"{name} at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else name
    return text[:MAX_ERROR_CHARS]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LoopHealth:
    """One loop's state: ``failing_since`` is None while it works; the last error stays after recovery."""

    failures: int = 0
    failing_since: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    recovered_at: str | None = None

    @property
    def failing(self) -> bool:
        """True from the first failure until the next success."""
        return self.failing_since is not None


@dataclass
class UnitHealth:
    """A unit that its last pull did not collect: the error, since when its pulls have failed (the first failure
    of this run of them), how many in a row, and when the last one was."""

    last_error: str
    failing_since: str
    last_error_at: str
    failures: int = 1


class GatewayHealth:
    """Both loops' health and the units' that are not being collected, shared by the runner's threads; ``path``
    None keeps it in memory only.

    It starts from what the file says, so that a gateway restarted after a failure marks the loop
    recovered once it works, instead of leaving the old failure on show, and a unit refused before the restart
    keeps the time its refusals began. It writes the file at once if the file has less than ``HEALTH_FILE_ROOM``
    (none yet, or one an older release wrote), while there is room on the disk.
    """

    def __init__(self, path: Path | None, now: Callable[[], datetime] = _utcnow) -> None:
        self.path = path
        self.now = now
        self._lock = threading.Lock()
        self.loops = {loop: LoopHealth() for loop in LOOPS}
        self.units: dict[str, UnitHealth] = {}
        self._units_written: dict[str, datetime] = {}  # when this process last wrote each unit's failures
        self._unwritten = False  # a failure noted in memory only (the same error again, written within the hour)
        if path is not None:
            self.loops.update({loop: state for loop, state in read_health(path).items() if loop in LOOPS})
            self.units.update(read_unit_health(path))
            if _size(path) < HEALTH_FILE_ROOM:
                with self._lock:
                    self._save_locked()

    def failed(self, loop: str, error: str) -> None:
        """Note a failure of ``loop`` (counts it, keeps the error, starts ``failing_since``)."""
        with self._lock:
            health = self.loops[loop]
            moment = self.now().isoformat()
            health.failures += 1
            health.failing_since = health.failing_since or moment
            health.last_error, health.last_error_at = error, moment
            health.recovered_at = None
            self._save_locked()

    def succeeded(self, loop: str) -> None:
        """Note that ``loop`` worked; written only when it ends a run of failures."""
        with self._lock:
            health = self.loops[loop]
            if not health.failing:
                return
            health.failures, health.failing_since = 0, None
            health.recovered_at = self.now().isoformat()
            self._save_locked()
        logger.info("%s loop recovered", loop)

    def unit_failed(self, serial: str, error: str) -> None:
        """Note that a pull of unit ``serial`` did not collect it (starts its ``failing_since``). Written at its first
        failure (and the first this process sees), when the error changes, else at most every ``UNIT_NOTE_EVERY``
        (``flush`` writes the rest)."""
        with self._lock:
            now = self.now()
            unit = self.units.get(serial)
            if unit is None:
                self.units[serial] = UnitHealth(error, failing_since=now.isoformat(), last_error_at=now.isoformat())
                news = True
            else:
                news = error != unit.last_error
                unit.failures += 1
                unit.last_error, unit.last_error_at = error, now.isoformat()
            written = self._units_written.get(serial)
            if news or written is None or now - written >= UNIT_NOTE_EVERY:
                self._save_locked()
            else:
                self._unwritten = True

    def unit_collected(self, serial: str) -> None:
        """Note that a pull collected unit ``serial``; written only when it ends a run of failures."""
        with self._lock:
            if self.units.pop(serial, None) is None:
                return
            self._save_locked()
        logger.info("unit %s collected again", serial)

    def keep_units(self, serials: Iterable[str]) -> None:
        """Forget the failures of units other than ``serials`` (no longer bound to this gateway: not its to pull)."""
        with self._lock:
            gone = set(self.units) - set(serials)
            if not gone:
                return
            for serial in gone:
                del self.units[serial]
            self._save_locked()

    def flush(self) -> None:
        """Write what is noted in memory only (units refused again with the same error since their last write): when
        the gateway stops."""
        with self._lock:
            if self._unwritten:
                self._save_locked()

    def current_error(self) -> str | None:
        """The error of a loop that is failing now (``radio loop: ...``), for the unit status sent to the server."""
        with self._lock:
            for loop, health in self.loops.items():
                if health.failing and health.last_error:
                    return f"gateway {loop} loop: {health.last_error}"[:MAX_ERROR_CHARS]
        return None

    def _save_locked(self) -> None:
        if self.path is None:
            return
        now = self.now()
        # Tried counts as written, written or not: a file that cannot be written is not tried every 30 s either.
        self._units_written = dict.fromkeys(self.units, now)
        self._unwritten = False
        body = {"updated_at": now.isoformat(), "loops": {name: asdict(h) for name, h in self.loops.items()},
                "units": {serial: asdict(h) for serial, h in sorted(self.units.items())}}
        text = (json.dumps(body, indent=1) + "\n").ljust(HEALTH_FILE_ROOM)
        try:
            write_atomically(self.path, text)
        except OSError as exc:
            try:  # a full disk: no new file can be made, the one there can still be rewritten
                rewrite_in_place(self.path, text.rstrip(" "))
            except OSError as again:  # a full disk must not turn a report of an error into another error
                logger.warning("could not write %s (%s; in place: %s)", self.path, describe_error(exc),
                               describe_error(again))
            else:
                logger.warning("%s rewritten in place: %s", self.path, describe_error(exc))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def health_file_unreadable(path: Path) -> bool:
    """True when ``path`` is there but does not read as a gateway writes it (a power cut during a rewrite in place,
    a hand edit): what it held about failing loops and units cannot be shown."""
    try:
        return not isinstance(json.loads(path.read_text()), dict)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True


def read_health(path: Path) -> dict[str, LoopHealth]:
    """What the running (or last) gateway wrote of its loops; empty when it never wrote anything or the file is
    unreadable."""
    try:
        loops = json.loads(path.read_text())["loops"]
        known = {f.name for f in fields(LoopHealth)}
        return {name: LoopHealth(**{k: v for k, v in state.items() if k in known}) for name, state in loops.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def read_unit_health(path: Path) -> dict[str, UnitHealth]:
    """The units the running (or last) gateway's last pull did not collect, by serial; empty when none (a file
    written before units were kept in it, or none, or one unreadable)."""
    try:
        units = json.loads(path.read_text()).get("units", {})
        known = {f.name for f in fields(UnitHealth)}
        return {serial: UnitHealth(**{k: v for k, v in state.items() if k in known})
                for serial, state in units.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
