"""The Bluetooth side of the gateway: find the patient's units, connect, pull their session records.

Per connection: read Device Information and battery, read the unit's clock (to estimate its offset),
read the transfer summary, set the unit's clock only from a clock the server vouches for (and only when it
is off), note the sync (what the unit's clock read, the unit's highest sequence, the gateway's clocks, and
what it set) in the buffer when it tells the server anything new, subscribe to the session-record
characteristic, write "send from last stored + 1", then for every batch of notifications: decode, commit to
the buffer, and only then write "ack up to". Where the gateway has no hash of its own for the record at a unit's
position and the unit holds it again, it asks the server for the one a gateway of the patient's delivered
(``GatewayLink.delivered_record``). Every record names its connection's sync: the server places
sessions in time from the syncs (``device_gateway/clock.py``, ``docs/device-gateway.md``). The notification callback only enqueues; decoding and the (fsync-ing) buffer writes
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
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError

from device_gateway.api import DeliveredRecord
from device_gateway.buffer import RecordBuffer, StoreResult
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.capture import CapturedRecord, capture, content_hash, isoformat_utc
from device_gateway.clock import ClockReading, GatewayClock, ServerClock, ServerTime
from device_gateway.errors import GatewayError
from device_gateway.health import describe_error
from device_gateway.profiles import companion_tens as profile
from device_gateway.profiles.companion_tens import ProfileError, TransferSummary
from device_gateway.sequencing import TransferWindow

logger = logging.getLogger(__name__)

_LINK_ERRORS = (BleakError, TimeoutError, EOFError, OSError)
SET_CLOCK_ABOVE_S = 2.0  # a unit clock off by more than this is set (from a clock the server vouches for)
SYNC_JUMP_S = 5.0  # an offset that moved by more than this since the last noted sync is worth noting
SYNC_HEARTBEAT_S = 6 * 3600  # otherwise a sync without new records is noted this often
# A server that answered it cannot confirm the record at a unit's position is asked again this much later (an
# unreachable one, the next cycle): each answer is an audited read, and a cycle comes every 30 s.
SERVER_RECHECK_S = 600.0
_GATEWAY_HASH = re.compile(r"^[0-9a-f]{64}$")  # what capture.content_hash gives
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


class SequenceWentBack(Exception):
    """The unit's highest sequence number is below the highest this gateway stored from it: its counter
    restarted (reflashed, replaced under the same serial, or wrapped). Its records would take ids already
    used, so nothing is read or acknowledged: the unit keeps them, and the error is in the unit's status,
    which the server shows, until someone looks."""


class LastStoredUnreadable(Exception):
    """The unit still holds the record stored last but its copy comes back undecodable: a lost acknowledgement
    cannot be told from a restarted counter, so nothing is stored or acknowledged (the unit keeps its records)
    and the error is in the unit's status until someone looks, or the record reads again. Asking again within
    the cycle would only bring the same frame back."""


class LocalBufferFull(Exception):
    """The buffer refused records; the unit keeps them until uploads free space."""


class PositionNotCheckedYet(Exception):
    """The unit holds the record at a position buffer-recover gave without its hash, and the server, the only one
    that can check it, could not be asked. Nothing is read or acknowledged and the position stays to be checked:
    the server is asked again the next cycle. Taking the unit unchecked would be for good (a reflashed unit's new
    records at or below the position acknowledged away, never collected)."""


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
    last_seen_on_server_clock: bool = False  # last_seen_at is the server's time as measured, not the wall clock
    last_error: str | None = None
    clock_offset_s: float | None = None
    clock_set: bool = False


@dataclass
class _Sync:
    """One connection's sync: noted in the buffer before any record that names it."""

    item: dict
    noted: bool = False


@dataclass(frozen=True, slots=True)
class _ServerCheck:
    """What the server said of the record at a unit's position: the hash a gateway of the patient's delivered there
    (None: it cannot tell, or was not asked), whether it could not be reached (asked again the next cycle), and
    what it said, for the unit's status."""

    content_hash: str | None = None
    unreachable: bool = False
    said: str = ""


_NOT_ASKED = _ServerCheck()


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
        clock: GatewayClock | None = None,
        server_clock: ServerClock | None = None,
        delivered_record: Callable[[str, int], DeliveredRecord] | None = None,
        server_recheck_s: float = SERVER_RECHECK_S,
    ) -> None:
        self.buffer = buffer
        # Asks the server whether the patient's gateways delivered a unit's record, with which content hash (the
        # API client's delivered_record; None: not asked, as without a server).
        self.delivered_record = delivered_record
        self.server_recheck_s = server_recheck_s
        self._server_answered: dict[str, tuple[int, float]] = {}  # serial -> (position, monotonic) of a "cannot"
        self.bound_serials = set(bound_serials)
        self.paired_at = paired_at
        self.now = now
        self.clock = clock or GatewayClock(wall=now)
        self.server_clock = server_clock
        self._last_noted: dict[str, tuple[float, float]] = {}  # serial -> (offset, monotonic) of the last sync noted
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.statuses: dict[str, UnitStatus] = {}
        self._busy: set[str] = set()
        self._first_contact_told: dict[str, int] = {}  # serial -> the start of its records last said

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
                except (LocalBufferFull, PositionNotCheckedYet) as exc:  # the next cycle may do
                    result.errors.append(str(exc))
                    status.last_error = str(exc)
                    break
                except (SequenceWentBack, LastStoredUnreadable) as exc:
                    # Waiting cannot fix it: said once a cycle, and in the unit's status.
                    logger.error("unit %s: %s", unit.serial, exc)
                    result.errors.append(str(exc))
                    said = "sequence went back" if isinstance(exc, SequenceWentBack) else "record stored last unreadable"
                    status.last_error = f"{said}: {exc}"
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
            serial = profile.decode_device_text(await client.read_gatt_char(profile.SERIAL_NUMBER_CHAR_UUID))
            if serial != unit.serial:
                raise LinkLost(f"unit advertised {unit.serial} but reports serial {serial!r}")
            status.firmware = profile.decode_device_text(
                await client.read_gatt_char(profile.FIRMWARE_REVISION_CHAR_UUID))
            battery = await client.read_gatt_char(profile.BATTERY_LEVEL_CHAR_UUID)
            status.battery_pct = battery[0] if len(battery) == 1 and battery[0] <= 100 else None
            unit_now, reading = await self._read_unit_clock(client)
            vouched = self.server_clock.now() if self.server_clock is not None else None
            # The server's silent-unit alert runs on this: the server's time when it vouches for one, else the
            # gateway's wall clock, said to be that (the server corrects it by the offset it measures).
            status.last_seen_at = vouched.now if vouched is not None else reading.wall
            status.last_seen_on_server_clock = vouched is not None
            # The reference: the server's time at the reading when the server vouches for it, else the gateway's.
            reference = (vouched.now - timedelta(seconds=self.clock.read().monotonic_s - reading.monotonic_s)
                         if vouched is not None else reading.wall)
            offset = (unit_now - reference).total_seconds() if unit_now is not None else 0.0
            status.clock_offset_s = offset
            window, summary = await self._open_window(client, unit.serial)
            set_to = None
            if vouched is not None and unit_now is not None and abs(offset) > SET_CLOCK_ABOVE_S:
                now = self.server_clock.now() if self.server_clock is not None else None
                if now is not None:
                    set_to = datetime.fromtimestamp(int(now.now.timestamp()), UTC)
                    await client.write_gatt_char(
                        profile.CONTROL_CHAR_UUID, profile.set_clock(int(set_to.timestamp())), response=True)
            status.clock_set = set_to is not None
            sync = _Sync(self._sync_item(unit.serial, summary, unit_now, reading, set_to, vouched, reference))
            if (summary.records_stored and window.expected <= summary.highest_seq  # records to take, likely
                    or self._worth_noting(unit.serial, offset, set_to, reading)):
                await self._note_sync(unit.serial, sync, offset, reading)
            await client.start_notify(profile.SESSION_RECORD_CHAR_UUID, on_notify)
            await client.write_gatt_char(
                profile.CONTROL_CHAR_UUID, profile.send_from(window.first_to_ask()), response=True
            )
            await self._receive(client, unit.serial, frames, offset, window, result, sync)

    def _sync_item(self, serial: str, summary: TransferSummary, unit_now: datetime | None, reading: ClockReading,
                   set_to: datetime | None, vouched: ServerTime | None, reference: datetime) -> dict:
        return {
            "sync_id": uuid.uuid4().hex, "serial": serial, "highest_seq": summary.highest_seq,
            "unit_clock": isoformat_utc(unit_now) if unit_now is not None else None,
            "gateway_clock": isoformat_utc(reading.wall), "boot_id": reading.boot_id,
            "monotonic_s": round(reading.monotonic_s, 3),
            "clock_set_to": isoformat_utc(set_to) if set_to is not None else None,
            "vouched_time": isoformat_utc(reference) if vouched is not None else None,
            "vouched_error_s": round(vouched.error_s, 3) if vouched is not None else None,
        }

    def _worth_noting(self, serial: str, offset: float, set_to: datetime | None, reading: ClockReading) -> bool:
        """A sync without new records tells the server something when the clock was set, jumped, or a while
        has passed (so a reset between two sessions is bounded)."""
        last = self._last_noted.get(serial)
        return (set_to is not None or last is None or abs(offset - last[0]) > SYNC_JUMP_S
                or reading.monotonic_s - last[1] > SYNC_HEARTBEAT_S)

    async def _note_sync(self, serial: str, sync: _Sync, offset: float, reading: ClockReading) -> None:
        if sync.noted:
            return
        await asyncio.to_thread(self.buffer.store_sync, serial, sync.item)
        sync.noted = True
        after_set = 0.0 if sync.item["clock_set_to"] is not None else offset
        self._last_noted[serial] = (after_set, reading.monotonic_s)

    async def _open_window(self, client: BleakClient, serial: str) -> tuple[TransferWindow, TransferSummary]:
        position = await asyncio.to_thread(self.buffer.position, serial)
        last_stored, last_hash = position.seq, position.last_hash
        try:
            summary = profile.decode_frame(await client.read_gatt_char(profile.SESSION_RECORD_CHAR_UUID))
        except ProfileError as exc:
            raise LinkLost(f"unreadable transfer summary ({type(exc).__name__})") from None
        if not isinstance(summary, TransferSummary):
            raise LinkLost("session-record characteristic did not return a transfer summary")
        if summary.highest_seq < last_stored:
            raise SequenceWentBack(
                f"its highest sequence number ({summary.highest_seq}) is below the highest already stored from it "
                f"({last_stored}): its counter restarted; nothing is read or acknowledged, the unit keeps its records")
        # Asked from the record after the one stored last (or after the undecodable frames acknowledged past it),
        # never from where its summary's counts put its records: see device_gateway/sequencing.py.
        explained = max(last_stored, await asyncio.to_thread(self.buffer.explained_through, serial))
        window = TransferWindow(expected=explained + 1)
        # The counts only tell whether the unit holds a record at or below the position: it holds as many records
        # as it says, none above its highest number, so the lowest it holds is at most this (a number missing
        # below its highest, or one assigned to a session still running, only puts the lowest lower).
        lowest_held = summary.highest_seq - summary.records_stored + 1
        if last_stored and summary.records_stored and lowest_held <= last_stored:
            server = _NOT_ASKED
            if last_hash is None and (position.moved_without_record or position.recovered_unchecked):
                # No record of its own at the position: the server may hold the one a gateway of the patient's
                # delivered there (another hub took the records, or this one before its buffer was replaced).
                server = await self._hash_from_server(serial, last_stored)
                last_hash = server.content_hash
            if last_hash is not None:
                # It still holds the record at its position (stored here, or as the patient's gateways delivered it
                # to the server): a lost acknowledgement, or a counter that restarted and has counted past it since.
                # That record must come back the same before anything is stored.
                window.verify = (last_stored, last_hash)
            elif position.moved_without_record:
                # The position moved past records never stored here (the unit said it no longer held them), and the
                # server holds no record there to compare (or could not be asked this cycle): a unit that holds
                # numbers at or below it again is taken for a counter that restarted. Asking from the position
                # would store what follows and acknowledge away the new records below it, unread.
                # The conclusion first: the unit's status the server shows keeps 200 characters of it.
                raise SequenceWentBack(
                    f"its counter restarted: it holds records at or below {last_stored} (moved past records it no "
                    f"longer held{server.said}); nothing read or acknowledged")
            elif position.recovered_unchecked and server.unreachable:
                # Only the server can check this position, and what follows is for good (the note cleared, the unit
                # asked from the record after): left for this cycle, the server asked again the next.
                raise PositionNotCheckedYet(
                    f"not collected this cycle: record {last_stored} at its position (given by buffer-recover) "
                    "unchecked, server unreachable; asked again next cycle")
            elif position.recovered_unchecked:
                # buffer-recover gave the position from the ledger, without the hash of the record stored there, and
                # the server answered it cannot tell either (that record may have been lost unsent with the old
                # buffer), or there is no server to ask: a unit may keep what it was acknowledged (the profile lets
                # it), so holding these proves nothing, and refusing it would stop its collection for good. Asked
                # from the record after, and said once.
                await asyncio.to_thread(self.buffer.note_unchecked, serial, lowest_held, last_stored)
            # Otherwise a position written before that note (every unit's, in a buffer older than the hash): taken
            # for a record stored there, its hash never kept (a lost acknowledgement, or a unit that keeps what it
            # was acknowledged). Nothing to compare it with: asked from the record after it, as it was then.
        return window, summary

    async def _hash_from_server(self, serial: str, seq: int) -> _ServerCheck:
        """The content hash of the unit's record ``seq`` as a gateway of the patient's delivered it to the server,
        adopted as the hash of the record at the unit's position (so it is asked once); else no hash, whether the
        server could not be reached, and what it said, for the unit's status. A server that cannot be asked is
        asked again the next cycle; one that answered it cannot confirm the record, after ``server_recheck_s``.
        Without a server to ask (``delivered_record`` None) nothing is, as before the check."""
        if self.delivered_record is None:
            return _NOT_ASKED
        answered = self._server_answered.get(serial)
        now = self.clock.read().monotonic_s
        if answered is not None and answered[0] == seq and now - answered[1] < self.server_recheck_s:
            return _ServerCheck(said=f"; server: no record {seq} to compare")
        try:
            answer = await asyncio.to_thread(self.delivered_record, serial, seq)
        except Exception as exc:  # the server's trouble: no answer this cycle, asked again the next
            logger.warning("unit %s: could not ask the server about record %d (%s); asked again next cycle", serial,
                           seq, describe_error(exc))
            return _ServerCheck(unreachable=True, said="; server unreachable, asked again next cycle")
        # Only a hash the gateways make (SHA-256 over the serial and the raw frame) is comparable with the unit's
        # record: the server keeps the hash the delivering gateway sent, and has none for imported history.
        if not answer.delivered or answer.content_hash is None or not _GATEWAY_HASH.fullmatch(answer.content_hash):
            self._server_answered[serial] = (seq, now)
            return _ServerCheck(said=f"; server: no record {seq} to compare")
        self._server_answered.pop(serial, None)
        await asyncio.to_thread(self.buffer.adopt_hash, serial, seq, answer.content_hash)
        logger.info("unit %s: the server holds record %d as a gateway of the patient's delivered it; the unit's copy "
                    "is compared with it", serial, seq)
        return _ServerCheck(content_hash=answer.content_hash)

    async def _read_unit_clock(self, client: BleakClient) -> tuple[datetime | None, ClockReading]:
        """The unit's clock, and the gateway's clocks at the middle of the read (None: unreadable)."""
        sent = self.clock.read()
        raw = await client.read_gatt_char(profile.CURRENT_TIME_CHAR_UUID)
        received = self.clock.read()
        middle = ClockReading(sent.wall + (received.wall - sent.wall) / 2, received.boot_id,
                              (sent.monotonic_s + received.monotonic_s) / 2)
        try:
            return profile.decode_current_time(raw), middle
        except ProfileError as exc:
            logger.warning("unreadable unit clock (%s); the server places its records from the other syncs", exc)
            return None, middle

    async def _receive(
        self,
        client: BleakClient,
        serial: str,
        frames: "asyncio.Queue[tuple[bytes, datetime] | None]",
        offset: float,
        window: TransferWindow,
        result: SyncResult,
        sync: _Sync,
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
            captured, summary = await self._decode(serial, items, offset, window, result, sync.item["sync_id"])
            await self._keep_settled(serial, window)
            if captured:
                stored = await self._store(serial, captured, sync, result)
                if stored.stored_up_to > acked and not link_lost:
                    await self._ack(client, stored.stored_up_to)
                    acked = stored.stored_up_to
                if stored.refused:
                    raise LocalBufferFull("local buffer full; the unit keeps the rest")
            if link_lost:
                raise LinkLost("link dropped mid-transfer")
            if summary is not None:
                await self._close(client, serial, window, summary, result, sync, acked)
                return

    async def _close(self, client: BleakClient, serial: str, window: TransferWindow, summary: TransferSummary,
                     result: SyncResult, sync: _Sync, acked: int) -> None:
        """The transfer summary came: the unit sent all it holds from the number asked. The records it sent past
        numbers it skipped are stored, the skipped numbers noted, and only then is it acknowledged, up to the last
        number stored, explained by an undecodable frame, or skipped: never past a number it did not send with
        nothing sent after it (a session still running may hold it)."""
        if window.verify is not None:
            if window.verify_undecodable:
                window.settle_unreadable_last()
                await self._keep_settled(serial, window)
                raise LastStoredUnreadable(
                    f"its copy of record {window.verify[0]}, the one stored last, comes back undecodable: a lost "
                    "acknowledgement cannot be told from a counter that restarted; nothing is stored or "
                    "acknowledged, the unit keeps its records")
            raise LinkLost(f"transfer ended before record {window.verify[0]}, the one stored last, came back; "
                           "resuming")
        closing = window.close(summary.highest_seq)
        await self._keep_settled(serial, window)  # an undecodable tail or gap, before it is acknowledged
        done = min(window.expected - 1, summary.highest_seq)  # never past what the unit holds
        refused = 0
        if records := [record for record in closing.records if record is not None]:
            stored = await self._store(serial, records, sync, result)
            refused = stored.refused
            if refused:
                done = stored.stored_up_to
        for first, last in closing.skipped:
            if last < done:
                await self._note_skipped(serial, first, last)
        if done > acked:
            if done > await asyncio.to_thread(self.buffer.last_stored_seq, serial):  # an undecodable tail
                await asyncio.to_thread(self.buffer.note_explained, serial, done)
            await self._ack(client, done)
        if refused:
            raise LocalBufferFull("local buffer full; the unit keeps the rest")

    async def _note_skipped(self, serial: str, first: int, last: int) -> None:
        """The unit sent a record after ``first``..``last`` and not them: it does not hold them. From the first
        number on, earlier records were collected (and acknowledged) by another gateway: said once per unit and
        start. Otherwise a loss, noted (a dead letter the server is told of): another gateway of the patient's took
        them, the unit lost them, or it numbered a session it never kept."""
        if first > 1:
            await asyncio.to_thread(self.buffer.record_missing, serial, first, last)
        elif self._first_contact_told.get(serial) != last + 1:
            self._first_contact_told[serial] = last + 1
            logger.info("unit %s: first contact; it holds records from sequence %d", serial, last + 1)

    async def _store(self, serial: str, captured: list[CapturedRecord], sync: _Sync, result: SyncResult) -> StoreResult:
        """Commit records to the buffer, after the sync they name."""
        if not sync.noted:
            await asyncio.to_thread(self.buffer.store_sync, serial, sync.item)
            sync.noted = True
        stored = await asyncio.to_thread(self.buffer.store, serial, captured)
        result.stored += stored.stored
        result.refused += stored.refused
        return stored

    async def _ack(self, client: BleakClient, seq: int) -> None:
        await client.write_gatt_char(profile.CONTROL_CHAR_UUID, profile.ack_up_to(seq), response=True)

    async def _decode(
        self,
        serial: str,
        items: list[tuple[bytes, datetime]],
        offset: float,
        window: TransferWindow,
        result: SyncResult,
        sync_id: str,
    ) -> tuple[list[CapturedRecord], TransferSummary | None]:
        captured: list[CapturedRecord] = []
        summary = None
        for frame, received_at in items:
            try:
                decoded = profile.decode_frame(frame)
            except ProfileError as exc:
                named, reason = getattr(exc, "seq", None), f"{type(exc).__name__}: {exc}"
                if not window.note_undecodable(named, content_hash(serial, frame), (frame, reason)):
                    raise _restarted(named) from None
                result.undecodable += 1
                if named is not None:  # it stands for the record it names; one that names none waits for its run
                    await asyncio.to_thread(self.buffer.dead_letter_frame, serial, frame, reason, named)
                continue
            if isinstance(decoded, TransferSummary):
                summary = decoded
                continue
            if window.seen_again(decoded.seq, content_hash(serial, frame)) is False:
                raise _restarted(decoded.seq)
            record = capture(serial, decoded, frame, offset, received_at, self.paired_at, sync_id)
            admitted = window.admit(decoded.seq, record)  # None: kept aside, past a gap, until the transfer ends
            if admitted:
                captured.append(record)
            elif admitted is False:
                result.out_of_sequence += 1
                logger.debug("unit %s: record %d out of sequence (expected %d)", serial, decoded.seq, window.expected)
        return captured, summary

    async def _keep_settled(self, serial: str, window: TransferWindow) -> None:
        """Dead-letter the undecodable frames the window placed (see ``TransferWindow.settled``), each under the
        sequence number it stands for, before anything after them is acknowledged."""
        for slot, (frame, reason) in window.take_settled():
            await asyncio.to_thread(self.buffer.dead_letter_frame, serial, frame, reason, slot)


def _restarted(seq: int | None) -> SequenceWentBack:
    return SequenceWentBack(
        f"record {seq} is not the one stored under that number: its counter restarted; nothing is read or "
        "acknowledged, the unit keeps its records")


def advertised_serial(adv: AdvertisementData) -> str | None:
    """The serial a Companion TENS unit advertises in its manufacturer data, if any."""
    data = adv.manufacturer_data.get(profile.MANUFACTURER_ID)
    if data is None:
        return None
    try:
        return profile.decode_advertised_serial(data)
    except ProfileError:
        return None
