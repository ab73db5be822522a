"""The Companion TENS profile: GATT UUIDs and the pure encoders/decoders of its byte formats.

The byte tables are in ``docs/companion-tens-profile.md``. Everything here is pure: bytes in, frozen
dataclasses out (or the reverse), with errors that are all subclasses of :class:`ProfileError`, so
the link can catch exactly those and carry on.
"""

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

PROFILE_NAME = "companion-tens"

# Vendor service and characteristics (random 128-bit base, one per role).
TENS_SERVICE_UUID = "7e1a0001-5d2c-4b8e-9f3a-2c6d1e0b4a10"
SESSION_RECORD_CHAR_UUID = "7e1a0002-5d2c-4b8e-9f3a-2c6d1e0b4a10"  # read + notify
CONTROL_CHAR_UUID = "7e1a0003-5d2c-4b8e-9f3a-2c6d1e0b4a10"  # write

# Standard Bluetooth SIG services and characteristics (16-bit ids on the SIG base UUID).
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_CHAR_UUID = "00002a19-0000-1000-8000-00805f9b34fb"
DEVICE_INFORMATION_SERVICE_UUID = "0000180a-0000-1000-8000-00805f9b34fb"
SERIAL_NUMBER_CHAR_UUID = "00002a25-0000-1000-8000-00805f9b34fb"
FIRMWARE_REVISION_CHAR_UUID = "00002a26-0000-1000-8000-00805f9b34fb"
CURRENT_TIME_SERVICE_UUID = "00001805-0000-1000-8000-00805f9b34fb"
CURRENT_TIME_CHAR_UUID = "00002a2b-0000-1000-8000-00805f9b34fb"

# Advertisement: manufacturer data under this company id carries the unit's serial (ASCII).
# 0xFFFF is the Bluetooth SIG's id reserved for tests and unregistered vendors.
MANUFACTURER_ID = 0xFFFF

FORMAT_VERSION = 1
FRAME_SESSION_RECORD = 0x01
FRAME_TRANSFER_SUMMARY = 0x02

OP_SEND_FROM = 0x01
OP_ACK_UP_TO = 0x02
OP_SET_CLOCK = 0x03

_RECORD = struct.Struct("<BBIIIBHHHHBB")  # without the trailing CRC
_SUMMARY = struct.Struct("<BBII")
_COMMAND = struct.Struct("<BI")
_CURRENT_TIME = struct.Struct("<HBBBBBBBB")
_CRC = struct.Struct("<H")

RECORD_LENGTH = _RECORD.size + _CRC.size
SUMMARY_LENGTH = _SUMMARY.size + _CRC.size
COMMAND_LENGTH = _COMMAND.size
CURRENT_TIME_LENGTH = _CURRENT_TIME.size

MAX_DURATION_S = 24 * 3600
FREQUENCY_RANGE_HZ = (1, 250)
PULSE_WIDTH_RANGE_US = (20, 400)
MAX_INTENSITY_DECI_MA = 1000  # 100.0 mA
UINT32_MAX = 0xFFFFFFFF


class EndReason(IntEnum):
    """How a therapy session ended, as the unit reports it."""

    COMPLETED = 0
    STOPPED = 1
    ELECTRODE_OFF = 2
    OVERLOAD = 3
    BATTERY = 4

    @property
    def label(self) -> str:
        """The lower-case name used in the API (``electrode_off``...)."""
        return self.name.lower()


class ControlOp(IntEnum):
    """Commands written to the control characteristic."""

    SEND_FROM = OP_SEND_FROM
    ACK_UP_TO = OP_ACK_UP_TO
    SET_CLOCK = OP_SET_CLOCK


class ProfileError(ValueError):
    """Base class of every error raised while decoding Companion TENS bytes."""


class TruncatedFrame(ProfileError):
    """Fewer bytes than the smallest frame of the expected kind."""


class BadLength(ProfileError):
    """A frame whose length does not match its kind."""


class BadChecksum(ProfileError):
    """The CRC-16 of the frame does not match its content."""


class UnknownVersion(ProfileError):
    """A format version this gateway does not understand."""


class UnknownFrameKind(ProfileError):
    """A frame kind byte that is not a session record or a transfer summary."""


class ValueOutOfRange(ProfileError):
    """A field decoded correctly but holds a value the profile does not allow. ``seq``: the record's sequence
    number when the frame is otherwise sound (its length and CRC right, its sequence number valid)."""

    seq: int | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One therapy session as stored by the unit. Intensities are in 0.1 mA units."""

    seq: int
    device_started_at: int
    duration_s: int
    programme: int
    frequency_hz: int
    pulse_width_us: int
    intensity_mean_dma: int
    intensity_peak_dma: int
    end_reason: EndReason
    battery_pct: int

    @property
    def intensity_mean_ma(self) -> float:
        """Mean intensity in milliamperes."""
        return self.intensity_mean_dma / 10

    @property
    def intensity_peak_ma(self) -> float:
        """Peak intensity in milliamperes."""
        return self.intensity_peak_dma / 10


@dataclass(frozen=True, slots=True)
class TransferSummary:
    """Sent by the unit after the last record of a transfer, and returned by a read."""

    highest_seq: int
    records_stored: int


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A command to the unit: send records from ``arg``, ack up to ``arg``, or set clock to ``arg``."""

    op: ControlOp
    arg: int


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _with_crc(body: bytes) -> bytes:
    return body + _CRC.pack(crc16_ccitt(body))


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueOutOfRange(f"{name}={value} outside {low}..{high}")


def _validate_record(record: SessionRecord) -> None:
    _check_range("seq", record.seq, 1, UINT32_MAX)
    _check_range("device_started_at", record.device_started_at, 0, UINT32_MAX)
    _check_range("duration_s", record.duration_s, 1, MAX_DURATION_S)
    _check_range("programme", record.programme, 0, 255)
    _check_range("frequency_hz", record.frequency_hz, *FREQUENCY_RANGE_HZ)
    _check_range("pulse_width_us", record.pulse_width_us, *PULSE_WIDTH_RANGE_US)
    _check_range("intensity_peak", record.intensity_peak_dma, 0, MAX_INTENSITY_DECI_MA)
    _check_range("intensity_mean", record.intensity_mean_dma, 0, record.intensity_peak_dma)
    _check_range("battery_pct", record.battery_pct, 0, 100)


# What a decoded record may hold and still be sent: the API's own bounds (companion.api.ingestion), wider than the
# clinical ranges above. A CRC-valid record whose content breaks a clinical range (a session of 25 hours, a mean
# above its peak) is decoded and sent, and the server stores it held back from the figures with its finding:
# nothing is dropped for its content. Only what the API cannot take is refused here.
API_MAX_SETTING = 10_000  # Hz, µs
API_MAX_DECI_MA = 10_000  # 1,000.0 mA
API_MAX_DURATION_S = 2**31


def _check_sendable(record: SessionRecord) -> None:
    _check_range("seq", record.seq, 1, UINT32_MAX)
    _check_range("duration_s", record.duration_s, 0, API_MAX_DURATION_S)
    _check_range("frequency_hz", record.frequency_hz, 0, API_MAX_SETTING)
    _check_range("pulse_width_us", record.pulse_width_us, 0, API_MAX_SETTING)
    _check_range("intensity_peak", record.intensity_peak_dma, 0, API_MAX_DECI_MA)
    _check_range("intensity_mean", record.intensity_mean_dma, 0, API_MAX_DECI_MA)
    _check_range("battery_pct", record.battery_pct, 0, 100)


def encode_record(record: SessionRecord) -> bytes:
    """Encode a session record into its fixed-length frame (raises ValueOutOfRange on bad fields)."""
    _validate_record(record)
    return _with_crc(
        _RECORD.pack(
            FORMAT_VERSION,
            FRAME_SESSION_RECORD,
            record.seq,
            record.device_started_at,
            record.duration_s,
            record.programme,
            record.frequency_hz,
            record.pulse_width_us,
            record.intensity_mean_dma,
            record.intensity_peak_dma,
            int(record.end_reason),
            record.battery_pct,
        )
    )


def encode_summary(summary: TransferSummary) -> bytes:
    """Encode a transfer-summary frame."""
    return _with_crc(
        _SUMMARY.pack(FORMAT_VERSION, FRAME_TRANSFER_SUMMARY, summary.highest_seq, summary.records_stored)
    )


def _check_length(data: bytes, expected_length: int) -> None:
    if len(data) < expected_length:
        raise TruncatedFrame(f"{len(data)} bytes, expected {expected_length}")
    if len(data) > expected_length:
        raise BadLength(f"{len(data)} bytes, expected {expected_length}")


def _check_frame(data: bytes, expected_length: int) -> None:
    _check_length(data, expected_length)
    (crc,) = _CRC.unpack_from(data, expected_length - _CRC.size)
    if crc != crc16_ccitt(data[: expected_length - _CRC.size]):
        raise BadChecksum(f"crc 0x{crc:04x} does not match content")


def decode_frame(data: bytes) -> SessionRecord | TransferSummary:
    """Decode any frame notified on the session-record characteristic.

    Raises a :class:`ProfileError` subclass for anything that is not a valid frame.
    """
    data = bytes(data)
    if len(data) < 2:
        raise TruncatedFrame(f"{len(data)} bytes, a frame starts with version and kind")
    if data[0] != FORMAT_VERSION:
        raise UnknownVersion(f"format version {data[0]}")
    if data[1] == FRAME_SESSION_RECORD:
        return decode_record(data)
    if data[1] == FRAME_TRANSFER_SUMMARY:
        _check_frame(data, SUMMARY_LENGTH)
        _, _, highest, count = _SUMMARY.unpack_from(data)
        return TransferSummary(highest_seq=highest, records_stored=count)
    raise UnknownFrameKind(f"frame kind 0x{data[1]:02x}")


def decode_record(data: bytes) -> SessionRecord:
    """Decode one session-record frame into a :class:`SessionRecord`.

    Raises TruncatedFrame, BadLength, BadChecksum, UnknownVersion, UnknownFrameKind or ValueOutOfRange (no
    sequence number, an end reason or battery level the profile does not define, or a value beyond what the API
    takes; a value beyond a clinical range is decoded: the server judges it).
    """
    data = bytes(data)
    if len(data) >= 1 and data[0] != FORMAT_VERSION:
        raise UnknownVersion(f"format version {data[0]}")
    _check_frame(data, RECORD_LENGTH)
    fields = _RECORD.unpack_from(data)
    if fields[1] != FRAME_SESSION_RECORD:
        raise UnknownFrameKind(f"frame kind 0x{fields[1]:02x}")
    seq = fields[2] if 1 <= fields[2] <= UINT32_MAX else None
    try:
        end_reason = EndReason(fields[10])
    except ValueError:
        error = ValueOutOfRange(f"end_reason={fields[10]}")
        error.seq = seq
        raise error from None
    record = SessionRecord(
        seq=fields[2],
        device_started_at=fields[3],
        duration_s=fields[4],
        programme=fields[5],
        frequency_hz=fields[6],
        pulse_width_us=fields[7],
        intensity_mean_dma=fields[8],
        intensity_peak_dma=fields[9],
        end_reason=end_reason,
        battery_pct=fields[11],
    )
    try:
        _check_sendable(record)
    except ValueOutOfRange as error:
        error.seq = seq
        raise
    return record


def encode_command(command: ControlCommand) -> bytes:
    """Encode a control command (opcode + uint32 argument)."""
    _check_range("arg", command.arg, 0, UINT32_MAX)
    return _COMMAND.pack(int(command.op), command.arg)


def decode_command(data: bytes) -> ControlCommand:
    """Decode a control command written by the gateway (used by units and the simulator)."""
    data = bytes(data)
    _check_length(data, COMMAND_LENGTH)
    op, arg = _COMMAND.unpack(data)
    try:
        return ControlCommand(ControlOp(op), arg)
    except ValueError:
        raise ValueOutOfRange(f"opcode 0x{op:02x}") from None


def send_from(seq: int) -> bytes:
    """The "send records from sequence ``seq``" command."""
    return encode_command(ControlCommand(ControlOp.SEND_FROM, seq))


def ack_up_to(seq: int) -> bytes:
    """The "records up to ``seq`` are stored, you may free them" command."""
    return encode_command(ControlCommand(ControlOp.ACK_UP_TO, seq))


def set_clock(epoch_s: int) -> bytes:
    """The "set your clock to ``epoch_s`` (UTC seconds)" command."""
    return encode_command(ControlCommand(ControlOp.SET_CLOCK, epoch_s))


def encode_current_time(moment: datetime) -> bytes:
    """Encode the standard Current Time characteristic (0x2A2B), 10 bytes, UTC."""
    moment = moment.astimezone(UTC)
    return _CURRENT_TIME.pack(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
        moment.isoweekday(), moment.microsecond * 256 // 1_000_000, 0,
    )


def decode_current_time(data: bytes) -> datetime:
    """Decode the standard Current Time characteristic (0x2A2B) as a UTC datetime."""
    data = bytes(data)
    _check_length(data, CURRENT_TIME_LENGTH)
    year, month, day, hour, minute, second, _, fraction, _ = _CURRENT_TIME.unpack(data)
    try:
        return datetime(year, month, day, hour, minute, second, fraction * 1_000_000 // 256, tzinfo=UTC)
    except ValueError as exc:
        raise ValueOutOfRange(f"current time: {exc}") from None


def decode_advertised_serial(data: bytes) -> str:
    """Read the serial from a unit's manufacturer data (raises ValueOutOfRange if not ASCII), without the NULs
    that fill a fixed-length field."""
    try:
        return bytes(data).decode("ascii").rstrip("\x00")
    except UnicodeDecodeError:
        raise ValueOutOfRange("advertised serial is not ASCII") from None


def decode_device_text(data: bytes) -> str:
    """A Device Information string (serial number, firmware revision): UTF-8, without the NULs some units add
    to fill a fixed-length field (the characteristic's value is the string's bytes, with no terminator, so a
    padded "CT-000123" would otherwise not be the serial it advertises, and its sessions would never be
    pulled)."""
    return bytes(data).decode("utf-8", "replace").rstrip("\x00")
