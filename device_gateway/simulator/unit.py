"""A simulated Companion TENS unit: its stored sessions, its own clock, and how it answers the gateway.

The model knows nothing about D-Bus; :mod:`device_gateway.simulator.fake_bluez` exposes it over a fake
BlueZ. Tests steer it: offset or reset its clock (to its epoch, 1970 or 2000, or to a plausible wrong date),
corrupt a record, or drop the link mid-transfer. Its battery drains with each session it finishes and is
recharged when low, as a patient does: a charge lasts days.
"""

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_gateway.profiles import companion_tens as profile
from device_gateway.profiles.companion_tens import ControlOp, SessionRecord, TransferSummary
from device_gateway.simulator.sessions import simulated_history, simulated_session

EPOCH_2000 = 946_684_800  # some units count from 2000-01-01 instead of 1970
SESSION_DRAIN_PCT = 9  # battery used by one 30-60 minute session
RECHARGE_BELOW_PCT = 25  # the patient charges the unit when it gets this low


@dataclass
class FakeTensUnit:
    """One unit. ``clock_offset_s`` is how far its clock is ahead of real time."""

    serial: str
    address: str
    firmware: str = "1.4.2"
    battery_pct: int = 87
    clock_offset_s: float = 0.0
    records: list[SessionRecord] = field(default_factory=list)
    corrupt_seqs: set[int] = field(default_factory=set)
    drop_link_after: int | None = None
    highest_seq: int = 0
    acked_up_to: int = 0
    commands: list[tuple[ControlOp, int]] = field(default_factory=list)
    notified: list[int] = field(default_factory=list)
    clock_sets: int = 0
    real_clock: Callable[[], float] = time.time
    text_field_length: int = 0  # > 0: its serial and firmware fill fixed-length fields, padded with NULs
    running_seq: int | None = None  # a session numbered when it started, its record not stored yet (start_session)

    def padded(self, text: str) -> bytes:
        """``text`` as the unit sends it (advertisement, Device Information): its bytes, NUL-padded to
        ``text_field_length`` when that is set."""
        return text.encode().ljust(self.text_field_length, b"\x00")

    def __post_init__(self) -> None:
        self.highest_seq = max([self.highest_seq, *(r.seq for r in self.records)])

    @classmethod
    def with_history(cls, serial: str, address: str, count: int, **kwargs: object) -> "FakeTensUnit":
        """A unit holding ``count`` sessions recorded over the past days by its own clock."""
        unit = cls(serial=serial, address=address, **kwargs)  # type: ignore[arg-type]
        unit.record_sessions(count)
        return unit

    def now(self) -> float:
        """The unit's clock, in seconds since 1970."""
        return self.real_clock() + self.clock_offset_s

    def reset_clock(self, to: float = 60.0) -> None:
        """Lose the time, as after a battery swap: the clock restarts at ``to`` seconds since 1970 (default
        1970-01-01 plus a minute; ``EPOCH_2000`` for a unit counting from 2000; or any plausible wrong date)."""
        self.clock_offset_s = to - self.real_clock()

    def record_sessions(self, count: int, spacing_s: int | None = None) -> None:
        """Add ``count`` new sessions ending before now by the unit's clock (within the last 20 days,
        so the API's 30-day offline window accepts them)."""
        if spacing_s is None:
            spacing_s = min(3 * 3600, 20 * 86400 // max(count, 1))
        first_start = int(self.now()) - count * spacing_s - 3600
        self.records.extend(
            simulated_history(count, max(first_start, 0), first_seq=self.highest_seq + 1, spacing_s=spacing_s)
        )
        self.highest_seq += count

    def start_session(self) -> int:
        """Start a session on a unit that numbers its sessions when they start: the number is assigned (its
        summary's highest) while no record holds it until the session ends (``finish_session``) or is aborted
        (``abort_session``: the number stays assigned, never kept)."""
        self.highest_seq += 1
        self.running_seq = self.highest_seq
        return self.running_seq

    def abort_session(self) -> None:
        """The session running ends without a record (switched off mid-session, say): its number is never used."""
        self.running_seq = None

    def finish_session(self, duration_s: int | None = None) -> SessionRecord:
        """Record a session that has just ended (started 30-60 minutes ago by the unit's clock, or
        ``duration_s`` ago), under the number it was given when it started if it was (``start_session``); the
        battery drains by a session's worth, and is recharged first if it was low."""
        if self.running_seq is None:
            self.highest_seq += 1
        seq, self.running_seq = self.running_seq or self.highest_seq, None
        record = simulated_session(seq, int(self.now()))
        if duration_s is not None:
            record = dataclasses.replace(record, duration_s=duration_s)
        if self.battery_pct < RECHARGE_BELOW_PCT:
            self.battery_pct = 100
        self.battery_pct = max(0, self.battery_pct - SESSION_DRAIN_PCT)
        record = dataclasses.replace(record, device_started_at=max(0, int(self.now()) - record.duration_s),
                                     battery_pct=self.battery_pct)
        self.records.append(record)
        return record

    def current_time(self) -> bytes:
        """The Current Time characteristic value (0x2A2B)."""
        return profile.encode_current_time(datetime.fromtimestamp(self.now(), UTC))

    def summary(self) -> bytes:
        """The transfer-summary frame (also the value read from the session-record characteristic)."""
        return profile.encode_summary(TransferSummary(self.highest_seq, len(self.records)))

    def frame_for(self, record: SessionRecord) -> bytes:
        """A record's frame; corrupted (one flipped byte, stale CRC) when the test asked for it."""
        frame = profile.encode_record(record)
        if record.seq in self.corrupt_seqs:
            return frame[:10] + bytes([frame[10] ^ 0xFF]) + frame[11:]
        return frame

    def records_from(self, seq: int) -> list[SessionRecord]:
        """Stored records at or after ``seq``, in order."""
        return sorted((r for r in self.records if r.seq >= seq), key=lambda r: r.seq)

    def apply(self, raw: bytes) -> tuple[ControlOp, int]:
        """Apply a control command written by the gateway; returns it (the caller starts transfers)."""
        command = profile.decode_command(raw)
        self.commands.append((command.op, command.arg))
        if command.op is ControlOp.ACK_UP_TO:
            self.acked_up_to = max(self.acked_up_to, command.arg)
            self.records = [r for r in self.records if r.seq > command.arg]
        elif command.op is ControlOp.SET_CLOCK:
            self.clock_offset_s = command.arg - self.real_clock()
            self.clock_sets += 1
        return command.op, command.arg
