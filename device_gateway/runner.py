"""The gateway at work: pull units over BLE, upload the buffer, report unit status, stop cleanly.

The BLE link runs in the asyncio loop (bleak's); the uploader runs in its own thread so HTTP waits and
backoff never hold up the radio. Both share the thread-safe buffer.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import httpx

from device_gateway.api import ApiAuthError, ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.capture import isoformat_utc
from device_gateway.config import GatewayConfig
from device_gateway.link import GatewayLink, SyncResult
from device_gateway.profiles.companion_tens import PROFILE_NAME
from device_gateway.uploader import Uploader, UploadProgress

logger = logging.getLogger(__name__)

UPLOAD_IDLE_S = 5.0


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
    ) -> None:
        self.config = config
        self.buffer = buffer
        self.api = api
        self.link = GatewayLink(buffer, config.device_serials, paired_at=config.paired_at_datetime)
        self.uploader = Uploader(buffer, api, progress=progress) if api else None
        self.scan_timeout_s = scan_timeout_s
        self.interval_s = interval_s
        self.upload_stop = threading.Event()
        self.upload_wakeup = threading.Event()

    async def refresh_bound_units(self) -> set[str]:
        """Ask the API which units are bound to this gateway; keep the last known list if it cannot answer."""
        if self.api is not None:
            try:
                devices = await asyncio.to_thread(self.api.bound_devices)
                self.link.bound_serials = {d["serial"] for d in devices if d.get("profile", PROFILE_NAME) == PROFILE_NAME}
            except (httpx.HTTPError, ApiAuthError) as exc:
                logger.warning("could not refresh bound units (%s); using the last known list", exc)
        return self.link.bound_serials

    async def report_status(self) -> None:
        """Send what the gateway last learned about each unit (best effort)."""
        if self.api is None:
            return
        devices = [
            {
                "serial": status.serial,
                "battery_pct": status.battery_pct,
                "firmware": status.firmware,
                "last_seen_at": isoformat_utc(status.last_seen_at),
                "last_error": status.last_error[:200] if status.last_error else None,
            }
            for status in self.link.statuses.values()
            if status.last_seen_at is not None and status.battery_pct is not None and status.firmware is not None
        ]
        if not devices:
            return
        try:
            await asyncio.to_thread(self.api.post_device_status, devices)
        except (httpx.HTTPError, ApiAuthError) as exc:
            logger.warning("could not report unit status (%s)", exc)

    def _upload_loop(self) -> None:
        assert self.uploader is not None
        while not self.upload_stop.is_set():
            try:
                self.uploader.drain(stop=self.upload_stop)
            except ApiAuthError as exc:
                logger.error("API refused this gateway's credentials (%s); pair again", exc)
                return
            self.upload_wakeup.wait(UPLOAD_IDLE_S)
            self.upload_wakeup.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: BLE cycles every ``interval_s``, uploads continuously."""
        uploader = threading.Thread(target=self._upload_loop, name="uploader", daemon=True) if self.uploader else None
        if uploader:
            uploader.start()
        try:
            while not stop.is_set():
                await self.refresh_bound_units()
                await self.link.run_once(self.scan_timeout_s)
                self.upload_wakeup.set()
                await self.report_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            self.upload_stop.set()
            self.upload_wakeup.set()
            if uploader:
                await asyncio.to_thread(uploader.join)

    async def pull_until_done(self, expected: set[str], max_cycles: int = 5) -> list[SyncResult]:
        """Run BLE cycles until every expected unit has completed a transfer (used by ``simulate``)."""
        pending = set(expected)
        results: list[SyncResult] = []
        for _ in range(max_cycles):
            if not pending:
                break
            cycle = await self.link.run_once(self.scan_timeout_s)
            results.extend(cycle)
            pending -= {result.serial for result in cycle if result.completed}
        await self.report_status()
        return results

    def upload_all(self, max_failures: int = 8) -> UploadProgress | None:
        """Drain the buffer now (used by ``simulate``); returns None when no API is configured."""
        if self.uploader is None:
            return None
        return self.uploader.drain(max_failures=max_failures)
