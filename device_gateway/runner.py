"""The gateway at work: pull units over BLE, upload the buffer, report unit status, stop cleanly.

Two loops, each of which outlives any single error. The radio loop runs in the asyncio loop (bleak's):
refresh the bound units, pull them, report their status. The upload loop runs in its own thread so HTTP
waits and backoff never hold up the radio; both share the thread-safe buffer. A loop that fails logs one
line, notes the error in the gateway's health (``health.json``, shown by ``device-gateway status``, and
added to the unit status reported to the server), backs off (exponential, full jitter, capped) and tries
again, so it resumes by itself once the cause is gone. A unit whose pull did not collect it (the link ends
that unit's pull alone, and the radio loop goes on) is noted in the health too, until it is collected again.

Only what waiting cannot fix stops the gateway: ``run`` then stops both loops and raises it, for the
command line to turn into a distinct exit status: the API refusing the gateway's credentials at every
renewal for over a minute (CredentialsRevoked), a damaged buffer (BufferDamaged), and no Bluetooth at all
before the radio has ever worked (BluetoothUnavailable; once it has worked, BlueZ going away, e.g. a
restart of bluetoothd, is waited out like any other error).
"""

import asyncio
import logging
import random
import threading
from collections.abc import Callable

from device_gateway.api import ApiClient, CredentialsRevoked
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.capture import isoformat_utc
from device_gateway.config import GatewayConfig
from device_gateway.health import RADIO, GatewayHealth, describe_error
from device_gateway.link import BluetoothUnavailable, GatewayLink, SyncResult, UnitStatus
from device_gateway.profiles.companion_tens import PROFILE_NAME
from device_gateway.uploader import BACKOFF_CAP_S, BACKOFF_START_S, Uploader, UploadProgress, backoff_delay

logger = logging.getLogger(__name__)

UPLOAD_IDLE_S = 5.0
_CANNOT_CONTINUE = (CredentialsRevoked, BufferDamaged)


class GatewayRunner:
    """Ties the link, the buffer and the uploader together for ``run`` and ``simulate``."""

    def __init__(
        self,
        config: GatewayConfig,
        buffer: RecordBuffer,
        api: ApiClient | None,
        progress: Callable[[UploadProgress], None] | None = None,
        scan_timeout_s: float = 5.0,
        interval_s: float = 30.0,
        health: GatewayHealth | None = None,
        rng: random.Random | None = None,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        self.config = config
        self.buffer = buffer
        self.api = api
        self.health = health or GatewayHealth(None)
        # The link sets units' clocks only from the server's time as the API client measures it.
        # It asks the server about a unit's record where it has no hash of its own to compare (docs/device-gateway.md).
        self.link = GatewayLink(buffer, config.device_serials, paired_at=config.paired_at_datetime,
                                server_clock=api.server_clock if api is not None else None,
                                delivered_record=api.delivered_record if api is not None else None)
        self.uploader = Uploader(buffer, api, progress=progress, health=self.health) if api else None
        self.scan_timeout_s = scan_timeout_s
        self.interval_s = interval_s
        self.rng = rng or random.Random()
        self.backoff_start_s = backoff_start_s
        self.backoff_cap_s = backoff_cap_s
        self.upload_stop = threading.Event()
        self.upload_wakeup = threading.Event()
        self.cannot_continue: Exception | None = None
        self._radio_failures = 0
        self._radio_has_worked = False
        self._unpullable: dict[str, str] = {}
        self._halt: asyncio.Event | None = None

    async def refresh_bound_units(self) -> set[str]:
        """Ask the API which units are bound to this gateway; keep the last known list if it cannot answer."""
        if self.api is not None:
            try:
                devices = await asyncio.to_thread(self.api.bound_devices)
                self.link.bound_serials = self._pullable(devices)
            except CredentialsRevoked:
                raise
            except Exception as exc:  # the API's trouble must not keep the radio from pulling known units
                logger.warning("could not refresh bound units (%s); using the last known list", describe_error(exc))
        return self.link.bound_serials

    def _pullable(self, devices: list[dict]) -> set[str]:
        """The serials of units this gateway can pull; units of another profile are named once, not pulled."""
        pullable, others = set(), {}
        for device in devices:
            profile_name = device.get("profile") or PROFILE_NAME
            if profile_name == PROFILE_NAME:
                pullable.add(str(device["serial"]))
            else:
                others[str(device["serial"])] = str(profile_name)
        if others and others != self._unpullable:
            logger.warning(
                "not pulling %s: this gateway drives only the %s profile",
                ", ".join(f"{serial} ({name})" for serial, name in sorted(others.items())), PROFILE_NAME,
            )
        self._unpullable = others
        return pullable

    async def report_status(self) -> None:
        """Send what the gateway last learned about each unit (best effort), with its own trouble if any."""
        if self.api is None:
            return
        gateway_error = self.health.current_error()
        devices = [
            device_report(status, gateway_error)
            for status in self.link.statuses.values()
            if status.last_seen_at is not None and status.battery_pct is not None and status.firmware is not None
            and status.serial in self.link.bound_serials  # a unit that moved to another patient is theirs to report
        ]
        if not devices:
            return
        try:
            await asyncio.to_thread(self.api.post_device_status, devices)
        except CredentialsRevoked:
            raise
        except Exception as exc:  # a status report is best effort; the next cycle sends a fresh one
            logger.warning("could not report unit status (%s)", describe_error(exc))

    def _upload_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.uploader is not None
        while not self.upload_stop.is_set():
            try:
                self.uploader.drain(stop=self.upload_stop)
            except _CANNOT_CONTINUE as exc:
                loop.call_soon_threadsafe(self._give_up, exc)
                return
            self.upload_wakeup.wait(UPLOAD_IDLE_S)
            self.upload_wakeup.clear()

    def _give_up(self, exc: Exception) -> None:
        if self.cannot_continue is None:
            self.cannot_continue = exc
            logger.error("the gateway cannot continue: %s", describe_error(exc))
        assert self._halt is not None
        self._halt.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: BLE cycles every ``interval_s``, uploads continuously.

        Raises CredentialsRevoked, BufferDamaged or BluetoothUnavailable (see the module docstring)
        after both loops have stopped.
        """
        self._halt = asyncio.Event()
        loop = asyncio.get_running_loop()
        uploader = (
            threading.Thread(target=self._upload_loop, args=(loop,), name="uploader", daemon=True)
            if self.uploader else None
        )
        if uploader:
            uploader.start()
        try:
            while not (stop.is_set() or self._halt.is_set()):
                pause = await self._radio_cycle()
                await self._pause(stop, pause)
        finally:
            self.upload_stop.set()
            self.upload_wakeup.set()
            if uploader:
                await asyncio.to_thread(uploader.join)
            self.health.flush()  # the counts of units refused again, noted in memory since their last write
        if self.cannot_continue is not None:
            raise self.cannot_continue

    async def _radio_cycle(self) -> float:
        """One pass of the radio loop; returns how long to wait before the next one."""
        try:
            pause = await self._pull_cycle()
            self.upload_wakeup.set()
            await self.report_status()
            return pause
        except (*_CANNOT_CONTINUE, BluetoothUnavailable) as exc:
            self._give_up(exc)
            return 0.0

    async def _pull_cycle(self) -> float:
        try:
            await self.refresh_bound_units()
            results = await self.link.run_once(self.scan_timeout_s)
        except _CANNOT_CONTINUE:
            raise
        except BluetoothUnavailable as exc:
            if not self._radio_has_worked:
                raise
            return self._radio_failed(exc)
        except Exception as exc:  # the radio loop must outlive any single error; see the module docstring
            return self._radio_failed(exc)
        self._radio_has_worked = True
        self._radio_failures = 0
        self.health.succeeded(RADIO)
        self._note_units(results)
        return self.interval_s

    def _note_units(self, results: list[SyncResult]) -> None:
        """Note in the health each unit pulled and not collected (a pull swallows its unit's error, so the radio
        loop works while a unit is refused every cycle), and each one collected again."""
        for result in results:
            if result.completed:
                self.health.unit_collected(result.serial)
            else:
                self.health.unit_failed(result.serial, self.link.statuses[result.serial].last_error or "not collected")
        self.health.keep_units(self.link.bound_serials)

    def _radio_failed(self, exc: Exception) -> float:
        self._radio_failures += 1
        error = describe_error(exc)
        self.health.failed(RADIO, error)
        delay = backoff_delay(self._radio_failures, self.rng, start_s=self.backoff_start_s, cap_s=self.backoff_cap_s)
        logger.error("radio loop: %s; retrying in %.1f s", error, delay)
        logger.debug("radio loop failure", exc_info=exc)
        return delay

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        assert self._halt is not None
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._halt.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def pull_until_done(self, expected: set[str], max_cycles: int = 5) -> list[SyncResult]:
        """Run BLE cycles until every expected unit has completed a transfer (used by ``simulate``)."""
        pending = set(expected)
        results: list[SyncResult] = []
        for _ in range(max_cycles):
            if not pending:
                break
            cycle = await self.link.run_once(self.scan_timeout_s)
            results.extend(cycle)
            self._note_units(cycle)
            pending -= {result.serial for result in cycle if result.completed}
        await self.report_status()
        return results

    def upload_all(self, max_failures: int = 8) -> UploadProgress | None:
        """Drain the buffer now (used by ``simulate``); returns None when no API is configured."""
        if self.uploader is None:
            return None
        return self.uploader.drain(max_failures=max_failures)


def device_report(status: UnitStatus, gateway_error: str | None) -> dict:
    """One unit's entry in ``POST /api/v1/gateway/device-status`` (a unit seen at least once; the gateway's own
    trouble stands in for a unit without an error of its own)."""
    return {
        "serial": status.serial,
        "battery_pct": status.battery_pct,
        "firmware": status.firmware,
        "last_seen_at": isoformat_utc(status.last_seen_at),
        "last_seen_clock": "server" if status.last_seen_on_server_clock else "gateway",
        "last_error": (status.last_error or gateway_error or "")[:200] or None,
    }
