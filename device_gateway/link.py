"""The Bluetooth side of the gateway: find the patient's units, connect, pull their session records.

Per connection: read Device Information and battery, read the unit's clock (to estimate its offset),
set its clock, subscribe to the session-record characteristic, write "send from last stored + 1",
then for every batch of notifications: decode, commit to the buffer, and only then write
"ack up to". The notification callback only enqueues; decoding and the (fsync-ing) buffer writes
happen in a consumer, the writes in a worker thread, so bleak's event loop is never blocked.

A link lost mid-transfer is retried with backoff; each new connection resumes from the last
sequence actually stored, so there is no gap and no duplicate. Any other error while pulling one unit
ends that unit's pull until the next cycle (noted in its status) without touching the others, except a
damaged buffer, which stops everything. The loop around cycles is the runner's.
"""

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.capture import CapturedRecord, capture, estimate_clock_offset
from device_gateway.errors import GatewayError
from device_gateway.health import describe_error
from device_gateway.profiles import companion_tens as profile
from device_gateway.profiles.companion_tens import ProfileError, TransferSummary
from device_gateway.sequencing import TransferWindow

logger = logging.getLogger(__name__)

_LINK_ERRORS = (BleakError, TimeoutError, EOFError, OSError)
_NO_SUCH_NAME = "org.freedesktop.DBus.Error.ServiceUnknown"
_DEFAULT_SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"


class BluetoothUnavailable(GatewayError):
    """Bluetooth cannot be used at all: no D-Bus system bus, BlueZ not running on it, or no usable adapter."""


def bluetooth_unavailable(exc: BaseException) -> BluetoothUnavailable | None:
    """The reason Bluetooth is unusable, if ``exc`` (raised while starting a scan) means that."""
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return BluetoothUnavailable(f"Bluetooth is not available: {exc.args[0]}")
    if isinstance(exc, BleakDBusError) and exc.dbus_error == _NO_SUCH_NAME:
        return BluetoothUnavailable("BlueZ (org.bluez) is not running on the D-Bus system bus; is bluetoothd running?")
    if isinstance(exc, OSError):
        address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", _DEFAULT_SYSTEM_BUS)
        return BluetoothUnavailable(f"cannot reach the D-Bus system bus at {address} ({describe_error(exc)})")
    return None


class LinkLost(Exception):
    """The connection ended before the transfer summary arrived."""


class LocalBufferFull(Exception):
    """The buffer refused records; the unit keeps them until uploads free space."""


@dataclass(frozen=True, slots=True)
class FoundUnit:
    """A bound unit seen advertising."""

    serial: str
    device: BLEDevice
    rssi: int


@dataclass
class UnitStatus:
    """What the gateway last learned about a unit (reported to ``/gateway/device-status``)."""

    serial: str
    battery_pct: int | None = None
    firmware: str | None = None
    last_seen_at: datetime | None = None
    last_error: str | None = None
    clock_offset_s: float | None = None


@dataclass
class SyncResult:
    """Outcome of pulling one unit (possibly over several connections)."""

    serial: str
    completed: bool
    stored: int = 0
    attempts: int = 0
    undecodable: int = 0
    out_of_sequence: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GatewayLink:
    """Scans for and pulls the units bound to this gateway into the buffer."""

    def __init__(
        self,
        buffer: RecordBuffer,
        bound_serials: Iterable[str],
        paired_at: datetime | None = None,
        now: Callable[[], datetime] = _utcnow,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 10.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.buffer = buffer
        self.bound_serials = set(bound_serials)
        self.paired_at = paired_at
        self.now = now
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.statuses: dict[str, UnitStatus] = {}
        self._busy: set[str] = set()

    async def scan(self, timeout_s: float = 5.0, only_bound: bool = True) -> list[FoundUnit]:
        """Scan for units advertising the Companion TENS service whose serial is bound to this gateway.

        Returns early once every bound serial has been seen. ``only_bound=False`` lists every unit.
        """
        found: dict[str, FoundUnit] = {}
        all_seen = asyncio.Event()

        def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
            serial = advertised_serial(adv)
            if serial is None or (only_bound and serial not in self.bound_serials):
                return
            found[serial] = FoundUnit(serial, device, adv.rssi)
            if only_bound and set(found) >= self.bound_serials:
                all_seen.set()

        scanner = BleakScanner(on_advert, service_uuids=[profile.TENS_SERVICE_UUID])
        try:
            await scanner.start()
        except (BleakError, OSError) as exc:
            unavailable = bluetooth_unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_seen.wait(), timeout_s)
        finally:
            await scanner.stop()
        return sorted(found.values(), key=lambda unit: unit.serial)

    async def run_once(self, scan_timeout_s: float = 5.0) -> list[SyncResult]:
        """Scan, then pull every bound unit found, all at once."""
        units = [unit for unit in await self.scan(scan_timeout_s) if unit.serial not in self._busy]
        return list(await asyncio.gather(*(self.pull(unit) for unit in units)))

    async def pull(self, unit: FoundUnit) -> SyncResult:
        """Pull every record the unit holds after the last one stored, reconnecting after link loss."""
        result = SyncResult(unit.serial, completed=False)
        status = self.statuses.setdefault(unit.serial, UnitStatus(unit.serial))
        self._busy.add(unit.serial)
        try:
            while result.attempts < self.max_attempts and not result.completed:
                result.attempts += 1
                try:
                    await self._pull_once(unit, result, status)
                    result.completed = True
                    status.last_error = None
                except (LinkLost, *_LINK_ERRORS) as exc:
                    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    result.errors.append(message)
                    status.last_error = message
                    logger.info("unit %s: link attempt %d failed (%s)", unit.serial, result.attempts, message)
                    if result.attempts < self.max_attempts:
                        await asyncio.sleep(self._backoff(result.attempts))
                except LocalBufferFull as exc:
                    result.errors.append(str(exc))
                    status.last_error = str(exc)
                    break
                except BufferDamaged:
                    raise
                except Exception as exc:  # one misbehaving unit (or a full disk) must not stop the gateway
                    message = describe_error(exc)
                    logger.error("unit %s: %s; giving up until the next cycle", unit.serial, message)
                    logger.debug("unit %s: pull failure", unit.serial, exc_info=exc)
                    result.errors.append(message)
                    status.last_error = message
                    break
        finally:
            self._busy.discard(unit.serial)
        return result

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1)))

    async def _pull_once(self, unit: FoundUnit, result: SyncResult, status: UnitStatus) -> None:
        frames: asyncio.Queue[tuple[bytes, datetime] | None] = asyncio.Queue()

        def on_notify(_char: object, data: bytearray) -> None:
            frames.put_nowait((bytes(data), self.now()))

        def on_disconnect(_client: BleakClient) -> None:
            frames.put_nowait(None)

        async with BleakClient(
            unit.device, disconnected_callback=on_disconnect, timeout=self.connect_timeout_s
        ) as client:
            serial = (await client.read_gatt_char(profile.SERIAL_NUMBER_CHAR_UUID)).decode("utf-8", "replace")
            if serial != unit.serial:
                raise LinkLost(f"unit advertised {unit.serial} but reports serial {serial}")
            status.firmware = (await client.read_gatt_char(profile.FIRMWARE_REVISION_CHAR_UUID)).decode(
                "utf-8", "replace"
            )
            battery = await client.read_gatt_char(profile.BATTERY_LEVEL_CHAR_UUID)
            status.battery_pct = battery[0] if len(battery) == 1 and battery[0] <= 100 else None
            status.last_seen_at = self.now()
            offset = await self._clock_offset(client)
            status.clock_offset_s = offset
            await client.write_gatt_char(
                profile.CONTROL_CHAR_UUID, profile.set_clock(int(self.now().timestamp())), response=True
            )
            window = await self._open_window(client, unit.serial)
            await client.start_notify(profile.SESSION_RECORD_CHAR_UUID, on_notify)
            await client.write_gatt_char(
                profile.CONTROL_CHAR_UUID, profile.send_from(window.expected), response=True
            )
            await self._receive(client, unit.serial, frames, offset, window, result)

    async def _open_window(self, client: BleakClient, serial: str) -> TransferWindow:
        last_stored = await asyncio.to_thread(self.buffer.last_stored_seq, serial)
        try:
            summary = profile.decode_frame(await client.read_gatt_char(profile.SESSION_RECORD_CHAR_UUID))
        except ProfileError as exc:
            raise LinkLost(f"unreadable transfer summary ({type(exc).__name__})") from None
        if not isinstance(summary, TransferSummary):
            raise LinkLost("session-record characteristic did not return a transfer summary")
        window = TransferWindow.start(last_stored, summary.highest_seq, summary.records_stored)
        if window.expected > last_stored + 1:
            if last_stored:
                await asyncio.to_thread(self.buffer.record_missing, serial, last_stored + 1, window.expected - 1)
            else:
                # First contact: earlier records were collected (and acknowledged) by another gateway.
                logger.info("unit %s: first contact; it holds records from sequence %d", serial, window.expected)
        return window

    async def _clock_offset(self, client: BleakClient) -> float:
        sent_at = self.now()
        raw = await client.read_gatt_char(profile.CURRENT_TIME_CHAR_UUID)
        received_at = self.now()
        try:
            device_now = profile.decode_current_time(raw)
        except ProfileError as exc:
            logger.warning("unreadable unit clock (%s); assuming no offset", exc)
            return 0.0
        return estimate_clock_offset(device_now, sent_at, received_at)

    async def _receive(
        self,
        client: BleakClient,
        serial: str,
        frames: "asyncio.Queue[tuple[bytes, datetime] | None]",
        offset: float,
        window: TransferWindow,
        result: SyncResult,
    ) -> None:
        acked = 0
        while True:
            try:
                first = await asyncio.wait_for(frames.get(), self.idle_timeout_s)
            except TimeoutError:
                raise LinkLost(f"no data for {self.idle_timeout_s:.0f} s") from None
            batch = [first]
            while not frames.empty():
                batch.append(frames.get_nowait())
            link_lost = None in batch
            items = [item for item in batch if item is not None]
            captured, summary = await self._decode(serial, items, offset, window, result)
            if captured:
                stored = await asyncio.to_thread(self.buffer.store, serial, captured)
                result.stored += stored.stored
                result.refused += stored.refused
                if stored.stored_up_to > acked and not link_lost:
                    await client.write_gatt_char(
                        profile.CONTROL_CHAR_UUID, profile.ack_up_to(stored.stored_up_to), response=True
                    )
                    acked = stored.stored_up_to
                if stored.refused:
                    raise LocalBufferFull("local buffer full; the unit keeps the rest")
            if link_lost:
                raise LinkLost("link dropped mid-transfer")
            if summary is not None:
                if not window.is_complete(summary.highest_seq):
                    raise LinkLost(f"transfer ended before sequence {summary.highest_seq}; resuming")
                if window.expected - 1 > acked:
                    await client.write_gatt_char(
                        profile.CONTROL_CHAR_UUID, profile.ack_up_to(window.expected - 1), response=True
                    )
                return

    async def _decode(
        self,
        serial: str,
        items: list[tuple[bytes, datetime]],
        offset: float,
        window: TransferWindow,
        result: SyncResult,
    ) -> tuple[list[CapturedRecord], TransferSummary | None]:
        captured: list[CapturedRecord] = []
        summary = None
        for frame, received_at in items:
            try:
                decoded = profile.decode_frame(frame)
            except ProfileError as exc:
                result.undecodable += 1
                window.note_undecodable()
                await asyncio.to_thread(self.buffer.dead_letter_frame, serial, frame, f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(decoded, TransferSummary):
                summary = decoded
            elif window.admit(decoded.seq):
                captured.append(capture(serial, decoded, frame, offset, received_at, self.paired_at))
            else:
                result.out_of_sequence += 1
                logger.debug("unit %s: record %d out of sequence (expected %d)", serial, decoded.seq, window.expected)
        return captured, summary


def advertised_serial(adv: AdvertisementData) -> str | None:
    """The serial a Companion TENS unit advertises in its manufacturer data, if any."""
    data = adv.manufacturer_data.get(profile.MANUFACTURER_ID)
    if data is None:
        return None
    try:
        return profile.decode_advertised_serial(data)
    except ProfileError:
        return None
