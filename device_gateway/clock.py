"""The gateway's clocks, and the server's time as the gateway last measured it.

A home gateway's wall clock can be wrong by hours (no RTC on a Raspberry Pi, no network for NTP, a wrong
setting), so the gateway never trusts it alone:

* every reading it reports carries its **monotonic clock** (``CLOCK_BOOTTIME``: it counts suspend and is
  never set) and its **boot id**. The server ties any moment of this boot to its own clock through them,
  whatever the wall clock said (``companion/services/session_times.py``);
* every answer from the API carries the server's clock (``X-Server-Time``). The gateway measures it against
  the middle of the request's round trip (:class:`ServerClock`) and from then on knows the server's time as
  ``server time then + monotonic time since``, within the round trip plus drift. That is a clock the server
  vouches for: the only one the gateway sets a unit's clock from, and only while the measurement is fresh
  (``MAX_AGE_S``) and of this boot. Without one it leaves the unit's clock alone; the server places the
  sessions from the unit's readings anyway.
"""

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

MAX_AGE_S = 6 * 3600  # a measurement this old no longer vouches (drift, and a boot we may have missed)
DRIFT_PPM = 100
RESOLUTION_S = 0.001  # X-Server-Time carries milliseconds
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_PROCESS_BOOT = f"process-{uuid.uuid4()}"  # where there is no boot id, one run of the process stands for a boot


def _boot_id() -> str:
    try:
        return _BOOT_ID_FILE.read_text().strip() or _PROCESS_BOOT
    except OSError:
        return _PROCESS_BOOT


_BOOT = _boot_id()


def _this_boot() -> str:
    return _BOOT


def _monotonic() -> float:
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is not None and _BOOT != _PROCESS_BOOT:
        return time.clock_gettime(clock)
    return time.monotonic()


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The gateway's clocks at one moment: its wall clock, its boot and its monotonic clock."""

    wall: datetime
    boot_id: str
    monotonic_s: float

    def as_api(self) -> dict:
        """The reading as the API's ``gateway_clock``."""
        return {"wall": self.wall.isoformat(), "boot_id": self.boot_id, "monotonic_s": round(self.monotonic_s, 3)}


class GatewayClock:
    """Reads the gateway's clocks (tests pass their own functions)."""

    def __init__(self, wall: Callable[[], datetime] = _wall, monotonic: Callable[[], float] = _monotonic,
                 boot_id: Callable[[], str] = _this_boot) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._boot_id = boot_id

    def read(self) -> ClockReading:
        """The gateway's clocks now."""
        return ClockReading(self._wall(), self._boot_id(), self._monotonic())


@dataclass(frozen=True, slots=True)
class ServerTime:
    """The server's time now as the gateway knows it, within ``error_s``."""

    now: datetime
    error_s: float


class ServerClock:
    """The server's time as the gateway last measured it (thread-safe: the uploader measures, the radio reads)."""

    def __init__(self, clock: GatewayClock | None = None, max_age_s: float = MAX_AGE_S) -> None:
        self.clock = clock or GatewayClock()
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._server_at: datetime | None = None
        self._monotonic_at = 0.0
        self._boot_id = ""
        self._half_round_trip = 0.0
        self._offset_s: float | None = None

    def observe(self, server_time: datetime, sent: ClockReading, received: ClockReading) -> None:
        """Note the server's time from an answer (``sent``/``received``: the gateway's clocks around the request).

        The server's clock reading is taken to be at the middle of the round trip; a measurement with a shorter
        round trip than the one held is preferred while both are fresh."""
        if sent.boot_id != received.boot_id:
            return
        half = max(0.0, (received.monotonic_s - sent.monotonic_s) / 2)
        middle = sent.monotonic_s + half
        with self._lock:
            if self._server_at is not None and self._boot_id == received.boot_id:
                held_error = self._half_round_trip + (middle - self._monotonic_at) * DRIFT_PPM / 1_000_000
                if held_error < half and middle - self._monotonic_at < 60:
                    return
            self._server_at, self._monotonic_at, self._boot_id = server_time, middle, received.boot_id
            self._half_round_trip = half
            self._offset_s = (sent.wall + (received.wall - sent.wall) / 2 - server_time).total_seconds()

    def now(self) -> ServerTime | None:
        """The server's time now, if a fresh measurement of this boot vouches for it; else None."""
        reading = self.clock.read()
        with self._lock:
            if self._server_at is None or reading.boot_id != self._boot_id:
                return None
            age = reading.monotonic_s - self._monotonic_at
            if not 0 <= age <= self.max_age_s:
                return None
            error = self._half_round_trip + RESOLUTION_S + age * DRIFT_PPM / 1_000_000
            return ServerTime(self._server_at + timedelta(seconds=age), error)

    def wall_offset_s(self) -> float | None:
        """How far the gateway's wall clock was ahead of the server's at the last measurement (for logs)."""
        with self._lock:
            return self._offset_s


def parse_server_time(value: str | None) -> datetime | None:
    """The ``X-Server-Time`` header as an aware datetime, or None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
