"""Turning a decoded session record into the record the gateway keeps and uploads (pure).

Three times are kept for every record: the unit's own clock reading (``device_started_at``), the
gateway's receive time, and (on the server) the server's receive time. The gateway estimates the
unit's clock offset when it connects (against the server's time when it has measured it, else its own
clock) and records it beside a ``clock_status`` flag; it never overwrites the unit's reading, it adds a
corrected one (``started_at``). Each record names the sync that captured it (``sync_id``): the server places
the session in time from the syncs' readings of the unit's clock, not from the gateway's correction.
"""

import hashlib
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from device_gateway.profiles.companion_tens import SessionRecord

# A unit whose clock reads earlier than this has lost its time (RTC reset, e.g. back to 1970).
CLOCK_RESET_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
# The instants the API takes (companion.http.schemas INSTANT): a record outside them would be refused.
API_EARLIEST, API_LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
# The clock offsets it takes (companion.api.ingestion SessionRecordSchema.clock_offset_s), either way.
API_OFFSET_LIMIT_S = 100 * 365 * 86400
# Beyond this difference from the gateway's clock, a unit's clock counts as skewed.
SKEW_LIMIT_S = 300.0

CLOCK_OK = "ok"
CLOCK_SKEWED = "skewed"
CLOCK_RESET = "reset"
CLOCK_AHEAD = "ahead"


@dataclass(frozen=True, slots=True)
class CapturedRecord:
    """A session record as the gateway stores it and sends it to the API (field names = API names)."""

    record_id: str
    device_serial: str
    device_seq: int
    device_started_at: str
    started_at: str
    clock_offset_s: float
    clock_status: str
    gateway_received_at: str
    duration_s: int
    programme: int
    frequency_hz: int
    pulse_width_us: int
    intensity_mean_ma: float
    intensity_peak_ma: float
    end_reason: str
    battery_pct: int
    content_hash: str
    sync_id: str | None = None

    def as_api_item(self) -> dict:
        """The record as one item of ``POST /api/v1/gateway/session-records``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # flat: asdict's deep copies cost a fifth


def record_id_for(serial: str, seq: int) -> str:
    """The stable id of a record: assigned once at capture and reused on every resend."""
    return f"{serial}:{seq}"


def isoformat_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix and millisecond precision."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def estimate_clock_offset(device_now: datetime, sent_at: datetime, received_at: datetime) -> float:
    """Seconds the unit's clock is ahead of the gateway's (negative if behind).

    The unit's reading is compared with the midpoint of the request's round trip.
    """
    midpoint = sent_at + (received_at - sent_at) / 2
    return (device_now - midpoint).total_seconds()


def clock_status(
    device_started_at: datetime, offset_s: float, gateway_received_at: datetime, paired_at: datetime | None
) -> str:
    """Classify the unit's clock for one record.

    ``reset``: the unit's reading is before 2020 or before the gateway was paired (RTC lost).
    ``ahead``: even after correction the session would have started in the future.
    ``skewed``: the unit's clock differs from the gateway's by more than five minutes.
    ``ok``: otherwise.
    """
    floor = max(CLOCK_RESET_FLOOR, paired_at) if paired_at else CLOCK_RESET_FLOOR
    if device_started_at < floor:
        return CLOCK_RESET
    corrected = device_started_at - timedelta(seconds=offset_s)
    if corrected > gateway_received_at + timedelta(seconds=SKEW_LIMIT_S):
        return CLOCK_AHEAD
    if abs(offset_s) > SKEW_LIMIT_S:
        return CLOCK_SKEWED
    return CLOCK_OK


def content_hash(serial: str, frame: bytes) -> str:
    """SHA-256 over the unit's serial and the record's raw bytes, as hex."""
    return hashlib.sha256(serial.encode() + b"\x00" + bytes(frame)).hexdigest()


def capture(
    serial: str,
    record: SessionRecord,
    frame: bytes,
    offset_s: float,
    received_at: datetime,
    paired_at: datetime | None = None,
    sync_id: str | None = None,
) -> CapturedRecord:
    """Build the record the gateway keeps from a decoded record and what the link knows (``sync_id``: the sync
    of the connection that received it)."""
    device_started = datetime.fromtimestamp(record.device_started_at, UTC)
    if abs(offset_s) > API_OFFSET_LIMIT_S or not API_EARLIEST <= device_started - timedelta(seconds=offset_s) < API_LATEST:
        # A correction the API cannot take (a start outside its instants, or an offset beyond its limit: a unit
        # whose clock says 2105 read by a gateway that says 1975 corrects to 1975, but by 130 years) comes from a
        # gateway clock that lost its time (a Pi without a battery clock, booted offline, reads 1970) or a unit
        # clock set wildly wrong: the unit's own reading is sent, and the server places the session from the
        # syncs, as it does every session. Refused, the record would stay a dead letter for good.
        offset_s = 0.0
    return CapturedRecord(
        record_id=record_id_for(serial, record.seq),
        device_serial=serial,
        device_seq=record.seq,
        device_started_at=isoformat_utc(device_started),
        started_at=isoformat_utc(device_started - timedelta(seconds=offset_s)),
        clock_offset_s=round(offset_s, 3),
        clock_status=clock_status(device_started, offset_s, received_at, paired_at),
        gateway_received_at=isoformat_utc(received_at),
        duration_s=record.duration_s,
        programme=record.programme,
        frequency_hz=record.frequency_hz,
        pulse_width_us=record.pulse_width_us,
        intensity_mean_ma=record.intensity_mean_ma,
        intensity_peak_ma=record.intensity_peak_ma,
        end_reason=record.end_reason.label,
        battery_pct=record.battery_pct,
        content_hash=content_hash(serial, frame),
        sync_id=sync_id,
    )
