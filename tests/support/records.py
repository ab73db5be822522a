"""TENS session records as a gateway uploads them (see companion/api/ingestion.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta


def session_record(serial: str, seq: int, *, started_at: datetime | None = None, duration_s: int = 1800,
                   end_reason: str = "completed", battery_pct: int = 80, offset_s: float = 12.0, **extra) -> dict:
    started = started_at or datetime.now(UTC) - timedelta(hours=2) + timedelta(minutes=seq)
    record_id = f"{serial}:{seq}"
    record = {
        "record_id": record_id, "device_serial": serial, "device_seq": seq,
        "device_started_at": (started + timedelta(seconds=offset_s)).isoformat(),
        "started_at": started.isoformat(), "clock_offset_s": offset_s, "clock_status": "ok",
        "gateway_received_at": (started + timedelta(minutes=40)).isoformat(), "duration_s": duration_s,
        "programme": 1, "frequency_hz": 100, "pulse_width_us": 200, "intensity_mean_ma": 18.5,
        "intensity_peak_ma": 24.0, "end_reason": end_reason, "battery_pct": battery_pct,
        "content_hash": hashlib.sha256(f"{record_id}:{duration_s}".encode()).hexdigest()[:32],
    }
    record.update(extra)
    return record


def captured_records(serial: str, count: int, first_seq: int = 1, spacing_s: int = 60) -> list:
    """Records as the gateway captures them (device_gateway.capture), recent enough for the offline window."""
    from device_gateway.capture import capture
    from device_gateway.profiles.companion_tens import encode_record
    from device_gateway.simulator.sessions import simulated_session

    received = datetime.now(UTC)
    first = int((received - timedelta(days=20)).timestamp())
    out = []
    for seq in range(first_seq, first_seq + count):
        session = simulated_session(seq, first + seq * spacing_s)
        out.append(capture(serial, session, encode_record(session), 0.0, received))
    return out
