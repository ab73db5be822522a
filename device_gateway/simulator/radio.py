"""The fake BlueZ as a whole: owns the bus connection, the adapter, the units in range and their links."""

import asyncio
import contextlib
import logging

from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from device_gateway.profiles import companion_tens as profile
from device_gateway.profiles.companion_tens import ControlOp
from device_gateway.simulator.fake_bluez import (
    ADAPTER_PATH,
    FakeAdapter,
    FakeCharacteristic,
    FakeDevice,
    FakeService,
)
from device_gateway.simulator.unit import FakeTensUnit

logger = logging.getLogger(__name__)

ANNOUNCE_INTERVAL_S = 0.1
DEFAULT_NOTIFY_INTERVAL_S = 0.001


class _GattLink:
    """The GATT objects of one connection to a unit, and its transfer in progress."""

    def __init__(self, bluez: "FakeBluez", device: FakeDevice) -> None:
        self.bluez = bluez
        self.device = device
        self.unit = device.unit
        self.objects: list[tuple[str, FakeService | FakeCharacteristic]] = []
        self.transfer: asyncio.Task[None] | None = None
        self._handle = 0x0009
        unit = self.unit
        tens = self._service(profile.TENS_SERVICE_UUID)
        self.records = self._char(tens, profile.SESSION_RECORD_CHAR_UUID, ["read", "notify"], read=unit.summary)
        self._char(tens, profile.CONTROL_CHAR_UUID, ["write"], write=self._on_control)
        battery = self._service(profile.BATTERY_SERVICE_UUID)
        self._char(battery, profile.BATTERY_LEVEL_CHAR_UUID, ["read", "notify"], read=lambda: bytes([unit.battery_pct]))
        info = self._service(profile.DEVICE_INFORMATION_SERVICE_UUID)
        self._char(info, profile.SERIAL_NUMBER_CHAR_UUID, ["read"], read=lambda: unit.padded(unit.serial))
        self._char(info, profile.FIRMWARE_REVISION_CHAR_UUID, ["read"], read=lambda: unit.padded(unit.firmware))
        clock = self._service(profile.CURRENT_TIME_SERVICE_UUID)
        self._char(clock, profile.CURRENT_TIME_CHAR_UUID, ["read", "notify"], read=unit.current_time)

    def _next_handle(self) -> int:
        self._handle += 1
        return self._handle

    def _service(self, uuid: str) -> str:
        path = f"{self.device.path}/service{self._next_handle():04x}"
        self.objects.append((path, FakeService(uuid, self.device.path)))
        return path

    def _char(self, service: str, uuid: str, flags: list[str], read=None, write=None) -> FakeCharacteristic:
        path = f"{service}/char{self._next_handle():04x}"
        char = FakeCharacteristic(uuid, service, flags, read=read, write=write)
        self.objects.append((path, char))
        return char

    def _on_control(self, raw: bytes) -> None:
        op, arg = self.unit.apply(raw)
        if op is ControlOp.SEND_FROM:
            if self.transfer is not None:
                self.transfer.cancel()
            self.transfer = asyncio.get_running_loop().create_task(self._send_from(arg))

    async def _send_from(self, seq: int) -> None:
        for sent, record in enumerate(self.unit.records_from(seq)):
            if self.unit.drop_link_after is not None and sent >= self.unit.drop_link_after:
                self.unit.drop_link_after = None
                logger.info("fake unit %s drops the link mid-transfer", self.unit.serial)
                self.bluez.drop_link(self.device)
                return
            self.records.notify(self.unit.frame_for(record))
            self.unit.notified.append(record.seq)
            await asyncio.sleep(self.bluez.notify_interval_s)
        self.records.notify(self.unit.summary())

    def close(self) -> None:
        if self.transfer is not None:
            self.transfer.cancel()
        for _, obj in self.objects:
            if isinstance(obj, FakeCharacteristic):
                obj.live = False


class FakeBluez:
    """``org.bluez`` on a (private) system bus, with simulated units that can come and go."""

    def __init__(self, notify_interval_s: float = DEFAULT_NOTIFY_INTERVAL_S) -> None:
        self.notify_interval_s = notify_interval_s
        self.bus: MessageBus | None = None
        self.adapter = FakeAdapter(self)
        self.devices: dict[str, FakeDevice] = {}
        self._links: dict[str, _GattLink] = {}
        self._announcer: asyncio.Task[None] | None = None

    async def start(self, bus_address: str | None = None) -> "FakeBluez":
        """Connect to the bus (``DBUS_SYSTEM_BUS_ADDRESS`` by default) and own ``org.bluez``."""
        self.bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
        self.bus.export(ADAPTER_PATH, self.adapter)
        await self.bus.request_name("org.bluez")
        return self

    async def stop(self) -> None:
        """Drop every link and leave the bus."""
        self.stop_announcing()
        for device in list(self.devices.values()):
            self.drop_link(device)
        if self.bus is not None:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await self.bus.wait_for_disconnect()
            self.bus = None

    def add_unit(self, unit: FakeTensUnit) -> FakeDevice:
        """Bring a unit into range: its Device1 object appears."""
        assert self.bus is not None
        device = FakeDevice(self, unit)
        self.devices[unit.serial] = device
        self.bus.export(device.path, device)
        return device

    def remove_unit(self, serial: str) -> None:
        """Take a unit out of range: its link drops and its Device1 object disappears."""
        device = self.devices.pop(serial, None)
        if device is not None and self.bus is not None:
            self.drop_link(device)
            self.bus.unexport(device.path)

    def forget(self, path: str) -> None:
        """Adapter1.RemoveDevice."""
        for serial, device in list(self.devices.items()):
            if device.path == path:
                self.remove_unit(serial)

    def start_announcing(self) -> None:
        """While discovering, re-announce every unit in range (bleak only reports fresh adverts)."""
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.get_running_loop().create_task(self._announce())

    def stop_announcing(self) -> None:
        """Stop re-announcing (discovery stopped)."""
        if self._announcer is not None:
            self._announcer.cancel()
            self._announcer = None

    async def _announce(self) -> None:
        tick = 0
        while True:
            tick += 1
            # Connected units are announced too: after a gateway crash BlueZ keeps the link up, and the
            # restarted gateway must still find the unit (bleak then reuses the existing connection).
            for device in list(self.devices.values()):
                device.rssi = -60 - tick % 5
                device.emit_properties_changed({"RSSI": device.rssi})
            await asyncio.sleep(ANNOUNCE_INTERVAL_S)

    def export_gatt(self, device: FakeDevice) -> None:
        """Called by Device1.Connect: export the unit's GATT tree."""
        assert self.bus is not None
        link = _GattLink(self, device)
        self._links[device.unit.serial] = link
        for path, obj in link.objects:
            self.bus.export(path, obj)

    def drop_link(self, device: FakeDevice) -> None:
        """The radio link ends (Disconnect, unit out of range, or a drop the test asked for)."""
        link = self._links.pop(device.unit.serial, None)
        if link is not None:
            link.close()
        if device.connected:
            device.connected = False
            device.services_resolved = False
            device.emit_properties_changed({"ServicesResolved": False, "Connected": False})
        if link is not None and self.bus is not None:
            for path, _ in reversed(link.objects):
                self.bus.unexport(path)
