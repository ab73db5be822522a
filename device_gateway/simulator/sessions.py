"""Plausible therapy sessions for simulated units (deterministic for a given seed)."""

import dataclasses
import random

from device_gateway.profiles.companion_tens import EndReason, SessionRecord

_END_REASONS = [EndReason.COMPLETED] * 7 + [
    EndReason.STOPPED, EndReason.ELECTRODE_OFF, EndReason.OVERLOAD, EndReason.BATTERY,
]


def simulated_session(seq: int, device_started_at: int, rng: random.Random | None = None) -> SessionRecord:
    """One session of 30-60 minutes at conventional or low-frequency settings."""
    rng = rng or random.Random(seq)
    peak = rng.randint(150, 450)
    return SessionRecord(
        seq=seq,
        device_started_at=device_started_at,
        duration_s=rng.randint(30, 60) * 60,
        programme=rng.randint(1, 8),
        frequency_hz=rng.choice([2, 4, 10, 80, 100, 120, 150]),
        pulse_width_us=rng.choice([50, 100, 150, 200, 250]),
        intensity_mean_dma=rng.randint(peak // 2, peak),
        intensity_peak_dma=peak,
        end_reason=rng.choice(_END_REASONS),
        battery_pct=max(0, 100 - seq % 100),
    )


def simulated_history(count: int, first_started_at: int, first_seq: int = 1, spacing_s: int = 3 * 3600) -> list[
    SessionRecord
]:
    """``count`` consecutive sessions, ``spacing_s`` apart by the unit's clock. One unit is in one session at a
    time: when sessions are closer than their length (a dense history for a volume test), each ends a minute
    before the next begins."""
    longest = max(60, spacing_s - 60)
    sessions = []
    for i in range(count):
        session = simulated_session(first_seq + i, first_started_at + i * spacing_s)
        if session.duration_s > longest:
            session = dataclasses.replace(session, duration_s=longest)
        sessions.append(session)
    return sessions
