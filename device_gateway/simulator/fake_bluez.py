"""A fake BlueZ (``org.bluez``) on a D-Bus bus, built with dbus-fast ``ServiceInterface`` objects.

It exports what bleak 3.1's BlueZ backend uses: ``/org/bluez/hci0`` (Adapter1 with the "central" role),
one Device1 per simulated unit (ManufacturerData as ``a{qv}``, UUIDs, RSSI re-announced every 100 ms
while discovering), and on Connect the GATT tree at ``<device>/serviceXXXX/charYYYY`` with
ReadValue / WriteValue / StartNotify / StopNotify; a notification is PropertiesChanged on ``Value``.
The ObjectManager at ``/`` is dbus-fast's own.
"""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from dbus_fast import DBusError, PropertyAccess, Variant
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from device_gateway.profiles import companion_tens as profile
from device_gateway.simulator.unit import FakeTensUnit

if TYPE_CHECKING:
    from device_gateway.simulator.radio import FakeBluez

ADAPTER_PATH = "/org/bluez/hci0"

Str = Annotated[str, DBusSignature("s")]
Bool = Annotated[bool, DBusSignature("b")]
Int16 = Annotated[int, DBusSignature("n")]
UInt16 = Annotated[int, DBusSignature("q")]
Path = Annotated[str, DBusSignature("o")]
Strings = Annotated[list[str], DBusSignature("as")]
Bytes = Annotated[bytes, DBusSignature("ay")]
Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
ManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
ServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]

_NOT_CONNECTED = "org.bluez.Error.NotConnected"


def device_path(address: str) -> str:
    """The BlueZ object path of a device address."""
    return f"{ADAPTER_PATH}/dev_{address.replace(':', '_')}"


class FakeAdapter(ServiceInterface):
    """org.bluez.Adapter1 of hci0."""

    def __init__(self, bluez: "FakeBluez") -> None:
        super().__init__("org.bluez.Adapter1")
        self._bluez = bluez
        self.discovering = False

    @dbus_method()
    def StartDiscovery(self) -> None:
        self.discovering = True
        self.emit_properties_changed({"Discovering": True})
        self._bluez.start_announcing()

    @dbus_method()
    def StopDiscovery(self) -> None:
        self.discovering = False
        self.emit_properties_changed({"Discovering": False})
        self._bluez.stop_announcing()

    @dbus_method()
    def SetDiscoveryFilter(self, properties: Options) -> None:
        return None

    @dbus_method()
    def RemoveDevice(self, device: Path) -> None:
        self._bluez.forget(device)

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> Str:
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> Str:
        return "companion-fake-hci0"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> Str:
        return "companion-fake-hci0"

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> Bool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> Bool:
        return self.discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> Strings:
        return ["central", "peripheral"]

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> Strings:
        return []


class FakeDevice(ServiceInterface):
    """org.bluez.Device1 for one simulated unit."""

    def __init__(self, bluez: "FakeBluez", unit: FakeTensUnit) -> None:
        super().__init__("org.bluez.Device1")
        self._bluez = bluez
        self.unit = unit
        self.path = device_path(unit.address)
        self.connected = False
        self.services_resolved = False
        self.rssi = -60

    @dbus_method()
    def Connect(self) -> None:
        if self.connected:
            return
        self.connected = True
        self.emit_properties_changed({"Connected": True})
        self._bluez.export_gatt(self)
        asyncio.get_running_loop().call_soon(self._resolve_services)

    def _resolve_services(self) -> None:
        if self.connected:
            self.services_resolved = True
            self.emit_properties_changed({"ServicesResolved": True})

    @dbus_method()
    def Disconnect(self) -> None:
        self._bluez.drop_link(self)

    @dbus_method()
    def Pair(self) -> None:
        return None

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> Str:
        return self.unit.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> Str:
        return "random"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> Str:
        return f"Companion TENS {self.unit.serial}"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> Str:
        return f"Companion TENS {self.unit.serial}"

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> Path:
        return ADAPTER_PATH

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> Strings:
        return [profile.TENS_SERVICE_UUID]

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> Bool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> Bool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Trusted(self) -> Bool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Blocked(self) -> Bool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> Bool:
        return self.connected

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> Bool:
        return self.services_resolved

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> Int16:
        return self.rssi

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> ManufacturerData:
        return {profile.MANUFACTURER_ID: Variant("ay", self.unit.padded(self.unit.serial))}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> ServiceData:
        return {}


class FakeService(ServiceInterface):
    """org.bluez.GattService1."""

    def __init__(self, uuid: str, device: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid
        self._device = device

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> Str:
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> Bool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> Path:
        return self._device


class FakeCharacteristic(ServiceInterface):
    """org.bluez.GattCharacteristic1; reads and writes are delegated to the owning link."""

    def __init__(
        self,
        uuid: str,
        service: str,
        flags: list[str],
        read: Callable[[], bytes] | None = None,
        write: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._uuid = uuid
        self._service = service
        self._flags = flags
        self._read = read
        self._write = write
        self.value = b""
        self.notifying = False
        self.live = True

    def _require_link(self) -> None:
        if not self.live:
            raise DBusError(_NOT_CONNECTED, "Not Connected")

    @dbus_method()
    def ReadValue(self, options: Options) -> Bytes:
        self._require_link()
        if self._read is None:
            raise DBusError("org.bluez.Error.NotPermitted", "Read not permitted")
        self.value = self._read()
        return self.value

    @dbus_method()
    def WriteValue(self, value: Bytes, options: Options) -> None:
        self._require_link()
        if self._write is None:
            raise DBusError("org.bluez.Error.NotPermitted", "Write not permitted")
        try:
            self._write(bytes(value))
        except profile.ProfileError as exc:
            raise DBusError("org.bluez.Error.InvalidValueLength", str(exc)) from None

    @dbus_method()
    def StartNotify(self) -> None:
        self._require_link()
        self.notifying = True
        self.emit_properties_changed({"Notifying": True})

    @dbus_method()
    def StopNotify(self) -> None:
        self.notifying = False
        self.emit_properties_changed({"Notifying": False})

    def notify(self, value: bytes) -> None:
        """Send a notification: PropertiesChanged on Value, as BlueZ does."""
        if self.live and self.notifying:
            self.value = value
            self.emit_properties_changed({"Value": value})

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> Str:
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> Path:
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> Bytes:
        return self.value

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> Bool:
        return self.notifying

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> Strings:
        return self._flags

    @dbus_property(access=PropertyAccess.READ)
    def MTU(self) -> UInt16:
        return 247
