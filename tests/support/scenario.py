"""A patient's days compressed into a test, with the real parts: a virtual timeline drives a fake TENS unit's
clock, a home gateway's wall and monotonic clocks and the server's clock alike; the real link (real bleak
against the fake BlueZ on a private bus), the real buffer, uploader and API client talk to the real API
(served over loopback) on FerretDB.

The timeline only moves forward (a monotonic clock never goes back): a story starts days in the past and
ends now.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.clock import GatewayClock
from device_gateway.link import SERVER_RECHECK_S, GatewayLink, SyncResult
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.unit import FakeTensUnit
from device_gateway.uploader import Uploader


class Timeline:
    """Virtual time: ``now()`` is the real clock moved back by what is left of the story."""

    def __init__(self, start_ago: timedelta) -> None:
        self.shift = -start_ago
        self._start_ago = start_ago
        self._real_monotonic = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def unit_time(self) -> float:
        """A unit's "real" clock (seconds since 1970): it runs on the timeline."""
        return self.now().timestamp()

    def monotonic(self) -> float:
        """A gateway's monotonic clock on the timeline (it never goes back)."""
        return 1000.0 + (time.monotonic() - self._real_monotonic) + (self.shift + self._start_ago).total_seconds()

    def to(self, moment: datetime) -> None:
        """Move on to ``moment`` (never back)."""
        ahead = moment - self.now()
        if ahead > timedelta(0):
            self.shift += ahead

    def today_at(self, days: int, hour: int, minute: int = 0, zone: str = "UTC") -> datetime:
        """The instant at a local time ``days`` after the real today (negative: before), in ``zone``."""
        real_today = datetime.now(ZoneInfo(zone)).date()
        return datetime.combine(real_today + timedelta(days=days), datetime.min.time(), ZoneInfo(zone)).replace(
            hour=hour, minute=minute).astimezone(UTC)


def run_with_units(units: Iterable[FakeTensUnit], scenario):
    """Start the fake BlueZ with ``units`` in range and run ``scenario(fake)`` in the same loop as bleak."""

    async def main():
        fake = await FakeBluez().start()
        try:
            for unit in units:
                fake.add_unit(unit)
            return await scenario(fake)
        finally:
            await fake.stop()

    return asyncio.run(main())


@dataclass
class Session:
    """A session as it really happened (for the assertions)."""

    serial: str
    seq: int
    start: datetime
    minutes: int


class Unit:
    """A fake TENS unit living on the timeline, with the sessions it really recorded."""

    def __init__(self, timeline: Timeline, serial: str, address: str) -> None:
        self.timeline = timeline
        self.fake = FakeTensUnit(serial=serial, address=address, real_clock=timeline.unit_time)
        self.sessions: list[Session] = []

    @property
    def serial(self) -> str:
        return self.fake.serial

    def session_at(self, start: datetime, minutes: int = 30) -> Session:
        """Live through a session from ``start`` (the timeline moves to its end)."""
        self.timeline.to(start + timedelta(minutes=minutes))
        record = self.fake.finish_session(duration_s=minutes * 60)
        session = Session(self.serial, record.seq, start, minutes)
        self.sessions.append(session)
        return session

    def reset_clock(self, at: datetime, to: float) -> None:
        """A battery change at ``at``: the clock restarts at ``to`` (seconds since 1970)."""
        self.timeline.to(at)
        self.fake.reset_clock(to)


@dataclass
class HomeGateway:
    """A paired gateway at a patient's home: the real link, buffer, API client and uploader, on the timeline."""

    state_dir: Path
    api_url: str
    gateway_id: str
    gateway_secret: str
    timeline: Timeline
    serials: list[str]
    skew: timedelta = timedelta(0)  # how far its wall clock is ahead of real time
    boot: str = "boot-1"
    server_recheck_s: float = SERVER_RECHECK_S  # how soon its link asks the server again about a unit's record
    link: GatewayLink = field(init=False)

    def __post_init__(self) -> None:
        self.clock = GatewayClock(wall=lambda: self.timeline.now() + self.skew, monotonic=self.timeline.monotonic,
                                  boot_id=lambda: self.boot)
        self._start()

    def _start(self) -> None:
        self.buffer = RecordBuffer(self.state_dir / "buffer.db")
        self.api = ApiClient(self.api_url, self.gateway_id, self.gateway_secret, gateway_clock=self.clock)
        self.link = GatewayLink(self.buffer, self.serials, now=lambda: self.timeline.now() + self.skew,
                                clock=self.clock, server_clock=self.api.server_clock, backoff_base_s=0.05,
                                idle_timeout_s=5.0, max_attempts=6, delivered_record=self.api.delivered_record,
                                server_recheck_s=self.server_recheck_s)
        self.uploader = Uploader(self.buffer, self.api, sleep=lambda seconds: None)

    def visit(self, *units: Unit) -> list[SyncResult]:
        """The units come into range: one BLE cycle (connect, read the clock, pull, acknowledge)."""
        return run_with_units([u.fake for u in units], lambda fake: self.link.run_once(scan_timeout_s=5))

    def go_online(self) -> None:
        """Reach the API: learn the bound units (and the server's time), upload everything, report status."""
        devices = self.api.bound_devices()
        self.link.bound_serials = {d["serial"] for d in devices}
        progress = self.uploader.drain(max_failures=5)
        assert self.buffer.pending_count() == 0 and self.buffer.pending_sync_count() == 0, progress

    def crash_and_restart(self, reboot: bool = False) -> None:
        """The process dies (nothing is flushed beyond what was committed) and starts again; ``reboot``: the
        machine restarted too (a new boot: its monotonic readings are no longer comparable)."""
        self.api.close()
        self.buffer.close()
        if reboot:
            self.boot = f"{self.boot}+"
        self._start()

    def close(self) -> None:
        self.api.close()
        self.buffer.close()


def local_day(instant: datetime, zone: str) -> str:
    return instant.astimezone(ZoneInfo(zone)).date().isoformat()


def days_back(today: date, count: int) -> list[date]:
    return [today - timedelta(days=n) for n in range(count, 0, -1)]
