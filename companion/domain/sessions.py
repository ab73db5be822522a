"""TENS session records as the server accepts them: the rules a record must meet.

The gateway sends what the unit recorded plus the times it knows; the server checks each record on
its own, so one bad record never costs the others (the batch answer lists each one's fate).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

END_REASONS = ("completed", "stopped", "electrode_off", "overload", "battery")
CLOCK_STATUSES = ("ok", "skewed", "reset", "ahead")
MAX_DURATION = timedelta(hours=24)
MAX_AHEAD = timedelta(minutes=5)
OFFLINE_WINDOW = timedelta(days=30)
FREQUENCY_HZ = (1, 250)
PULSE_WIDTH_US = (20, 400)
INTENSITY_MA = (0.0, 100.0)
LOW_BATTERY_PCT = 15


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None


def check_record(record: dict, *, received_at: datetime) -> Verdict:
    """Check one parsed record against the clinical and time rules; the first broken rule is the reason."""
    serial, seq = record["device_serial"], record["device_seq"]
    if record["record_id"] != f"{serial}:{seq}":
        return Verdict(False, "record_id must be '<device_serial>:<device_seq>'")
    duration = timedelta(seconds=record["duration_s"])
    if not timedelta(0) < duration <= MAX_DURATION:
        return Verdict(False, "duration must be more than 0 and at most 24 hours")
    started = record["started_at"]
    if started.tzinfo is None or record["device_started_at"].tzinfo is None:
        return Verdict(False, "times must carry a time zone offset")
    if started > received_at + MAX_AHEAD:
        return Verdict(False, "session starts more than 5 minutes in the future")
    if started < received_at - OFFLINE_WINDOW:
        return Verdict(False, "session is older than the 30-day offline window")
    if record["gateway_received_at"] > received_at + MAX_AHEAD:
        return Verdict(False, "gateway receive time is more than 5 minutes in the future")
    if not FREQUENCY_HZ[0] <= record["frequency_hz"] <= FREQUENCY_HZ[1]:
        return Verdict(False, f"frequency must be {FREQUENCY_HZ[0]}-{FREQUENCY_HZ[1]} Hz")
    if not PULSE_WIDTH_US[0] <= record["pulse_width_us"] <= PULSE_WIDTH_US[1]:
        return Verdict(False, f"pulse width must be {PULSE_WIDTH_US[0]}-{PULSE_WIDTH_US[1]} µs")
    mean, peak = record["intensity_mean_ma"], record["intensity_peak_ma"]
    if not (INTENSITY_MA[0] <= mean <= peak <= INTENSITY_MA[1]):
        return Verdict(False, "intensity must satisfy 0 <= mean <= peak <= 100 mA")
    return Verdict(True)


def device_events_for(record: dict) -> list[str]:
    """The device events a record raises: electrode off, overload, low battery."""
    kinds = []
    if record["end_reason"] in ("electrode_off", "overload"):
        kinds.append(record["end_reason"])
    if record["battery_pct"] < LOW_BATTERY_PCT or record["end_reason"] == "battery":
        kinds.append("battery_low")
    return kinds
