"""The gateway's BLE link, with the real bleak against the fake BlueZ on a private bus."""

import asyncio
import dataclasses
import logging
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from device_gateway.buffer import RecordBuffer
from device_gateway.clock import GatewayClock, ServerClock
from device_gateway.link import BluetoothUnavailable, GatewayLink
from device_gateway.profiles import companion_tens as profile
from device_gateway.profiles.companion_tens import ControlOp
from device_gateway.simulator.unit import FakeTensUnit
from tests.support.scenario import run_with_units

UNIT_A = ("CT-000001", "C0:FF:EE:00:00:01")
UNIT_B = ("CT-000002", "C0:FF:EE:00:00:02")
STRANGER = ("CT-999999", "C0:FF:EE:00:00:99")


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


def make_link(buffer, serials, **kwargs) -> GatewayLink:
    kwargs.setdefault("backoff_base_s", 0.05)
    kwargs.setdefault("idle_timeout_s", 3.0)
    return GatewayLink(buffer, serials, **kwargs)


def stored_seqs(buffer: RecordBuffer, serial: str) -> list[int]:
    return [int(p.record_id.split(":")[1]) for p in buffer.pending(10_000) if p.record_id.startswith(serial + ":")]


def test_full_pull_stores_every_record_and_acks_them_to_the_unit(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=12)
    link = make_link(buffer, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert [(r.serial, r.completed, r.stored) for r in results] == [(unit.serial, True, 12)]
    assert stored_seqs(buffer, unit.serial) == list(range(1, 13))
    assert (unit.acked_up_to, unit.records) == (12, [])


def vouched_server_clock(offset: timedelta = timedelta(0)) -> ServerClock:
    """A server clock measured just now (as the API client does from an answer's X-Server-Time)."""
    server_clock = ServerClock()
    reading = server_clock.clock.read()
    server_clock.observe(datetime.now(UTC) + offset, reading, server_clock.clock.read())
    return server_clock


def test_pull_reads_device_information_and_sets_the_unit_clock_from_the_servers_time(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2, clock_offset_s=-3 * 3600, battery_pct=41, firmware="2.0.1")
    link = make_link(buffer, [unit.serial], server_clock=vouched_server_clock())

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    status = link.statuses[unit.serial]
    assert (status.battery_pct, status.firmware, status.last_error) == (41, "2.0.1", None)
    assert status.clock_offset_s == pytest.approx(-3 * 3600, abs=5)
    assert unit.clock_sets == 1 and abs(unit.clock_offset_s) < 5
    assert {p.payload["clock_status"] for p in buffer.pending(10)} == {"skewed"}
    [sync] = buffer.pending_syncs(10)
    assert sync["highest_seq"] == 2 and sync["clock_set_to"] is not None and sync["vouched_time"] is not None
    assert {p.payload["sync_id"] for p in buffer.pending(10)} == {sync["sync_id"]}


def test_a_unit_that_pads_its_serial_and_firmware_with_nuls_is_recognised_and_pulled(system_bus, buffer):
    # Some units send Device Information strings (and the advertised serial) as fixed-length, NUL-filled
    # fields: "CT-000001" plus eleven NULs is still unit CT-000001, not a stranger.
    unit = FakeTensUnit.with_history(*UNIT_A, count=3, firmware="2.0.1", text_field_length=20)
    assert unit.padded(unit.serial).endswith(b"\x00" * 11)
    link = make_link(buffer, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert [(r.serial, r.completed, r.stored) for r in results] == [(unit.serial, True, 3)]
    assert link.statuses[unit.serial].firmware == "2.0.1"
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3]


def test_a_gateway_whose_clock_the_server_has_not_vouched_for_never_sets_a_units_clock(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2, clock_offset_s=-3 * 3600)
    wrong_gateway = GatewayClock(wall=lambda: datetime.now(UTC) + timedelta(hours=5))
    link = make_link(buffer, [unit.serial], clock=wrong_gateway)

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert unit.clock_sets == 0 and unit.clock_offset_s == -3 * 3600
    [sync] = buffer.pending_syncs(10)
    assert sync["clock_set_to"] is None and sync["vouched_time"] is None
    # The gateway's readings go up as they are, with its monotonic clock: the server ties them to its own.
    assert sync["gateway_clock"] > datetime.now(UTC).isoformat() and sync["monotonic_s"] > 0


def test_a_gateway_with_a_wrong_clock_sets_the_unit_from_the_servers_time_not_its_own(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2, clock_offset_s=7200)
    wrong_gateway = GatewayClock(wall=lambda: datetime.now(UTC) - timedelta(hours=4))
    server_clock = ServerClock(wrong_gateway)
    sent = wrong_gateway.read()
    server_clock.observe(datetime.now(UTC), sent, wrong_gateway.read())
    link = make_link(buffer, [unit.serial], clock=wrong_gateway, server_clock=server_clock)

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert unit.clock_sets == 1 and abs(unit.clock_offset_s) < 5


def test_a_units_last_contact_is_the_servers_time_not_a_wrong_gateway_clock(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=1)
    three_days_behind = lambda: datetime.now(UTC) - timedelta(days=3)  # noqa: E731 - a Pi without RTC, no NTP
    link = make_link(buffer, [unit.serial], now=three_days_behind, server_clock=vouched_server_clock())

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    # Reported so, the server's silent-unit alert would call a unit seen just now silent for three days.
    status = link.statuses[unit.serial]
    assert abs((status.last_seen_at - datetime.now(UTC)).total_seconds()) < 60, status.last_seen_at
    assert status.last_seen_on_server_clock


def test_without_the_servers_time_a_units_last_contact_is_reported_as_the_gateways_own_clock(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=1)
    link = make_link(buffer, [unit.serial], now=lambda: datetime.now(UTC) - timedelta(days=3))

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    # Said to be the gateway's clock: the server moves it by the offset it measures, and never past its own now.
    status = link.statuses[unit.serial]
    assert status.last_seen_at < datetime.now(UTC) - timedelta(days=2) and not status.last_seen_on_server_clock


def test_a_unit_whose_clock_is_right_is_left_alone_and_syncs_without_news_are_not_noted(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2)
    link = make_link(buffer, [unit.serial], server_clock=vouched_server_clock())

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)
        await link.run_once(scan_timeout_s=5)

    run_with_units([unit], scenario)

    assert unit.clock_sets == 0
    assert len(buffer.pending_syncs(10)) == 1  # the second connection brought nothing new


def test_link_dropped_mid_transfer_resumes_without_gap_or_duplicate(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=20, drop_link_after=7)
    link = make_link(buffer, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert results[0].completed and results[0].attempts == 2
    assert stored_seqs(buffer, unit.serial) == list(range(1, 21))
    first, resumed = [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM]
    # Frames still in flight when the link dropped may be lost with it (on a busy machine, all seven): the unit
    # resends them, from the first not stored.
    assert first == 1 and 1 <= resumed <= 8
    assert unit.notified == list(range(1, 8)) + list(range(resumed, 21))


def test_two_units_are_pulled_at_once_and_strangers_are_ignored(system_bus, buffer):
    unit_a = FakeTensUnit.with_history(*UNIT_A, count=6)
    unit_b = FakeTensUnit.with_history(*UNIT_B, count=9)
    stranger = FakeTensUnit.with_history(*STRANGER, count=3)
    link = make_link(buffer, [unit_a.serial, unit_b.serial])

    results = run_with_units([unit_a, unit_b, stranger], lambda fake: link.run_once(scan_timeout_s=5))

    assert sorted((r.serial, r.stored) for r in results) == [(unit_a.serial, 6), (unit_b.serial, 9)]
    assert stored_seqs(buffer, unit_a.serial) == list(range(1, 7))
    assert stored_seqs(buffer, unit_b.serial) == list(range(1, 10))
    assert stranger.commands == [] and len(stranger.records) == 3


def test_corrupt_record_is_dead_lettered_and_the_rest_are_stored(system_bus, buffer, caplog):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5, corrupt_seqs={3})
    link = make_link(buffer, [unit.serial])

    with caplog.at_level(logging.WARNING):
        results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert results[0].completed and results[0].undecodable == 1
    assert stored_seqs(buffer, unit.serial) == [1, 2, 4, 5]
    dead = buffer.dead_letters()
    assert [(d["source"], d["reason"].split(":")[0]) for d in dead] == [("unit", "BadChecksum")]
    assert "undecodable frame" in caplog.text


class UnitCutShortOnce(FakeTensUnit):
    """A unit whose first transfer stops after the record ``cut_short_after`` (then its summary); it sends
    everything it holds when asked again. The numbers it did not send after the last it sent may be a session
    still running: neither skipped nor acknowledged, they are asked for again at the next pull."""

    cut_short_after: int | None = None

    def records_from(self, seq: int) -> list:
        held, cut = super().records_from(seq), self.cut_short_after
        self.cut_short_after = None
        return held if cut is None else [record for record in held if record.seq <= cut]


def test_an_undecodable_frame_sent_again_after_a_transfer_cut_short_is_one_dead_letter(system_bus, buffer):
    unit = UnitCutShortOnce.with_history(*UNIT_A, count=6, corrupt_seqs={4})
    unit.cut_short_after = 4  # the unit sends 1..4 and stops: 4 is kept, not yet covered by an acknowledgement
    corrupt = unit.frame_for(unit.records[3])
    link = make_link(buffer, [unit.serial])

    async def two_pulls(fake):
        first = await link.run_once(scan_timeout_s=5)
        kept = (unit.acked_up_to, [r.seq for r in unit.records])
        return first, kept, await link.run_once(scan_timeout_s=5)

    first, kept, second = run_with_units([unit], two_pulls)

    assert kept == (3, [4, 5, 6])  # 4 not acknowledged: nothing sent after it told what the numbers above were
    assert all(r.completed for r in first + second) and stored_seqs(buffer, unit.serial) == [1, 2, 3, 5, 6]
    assert [op_arg for op_arg in unit.commands if op_arg[0] is ControlOp.SEND_FROM] == [
        (ControlOp.SEND_FROM, 1), (ControlOp.SEND_FROM, 4)]  # asked again from 4: its frame came twice
    assert [d["payload"] for d in buffer.dead_letters()] == [corrupt.hex()]


class ErasedSectorUnit(FakeTensUnit):
    """A unit whose records ``corrupt_seqs`` sit in erased flash: each comes as the same frame of 0xFF bytes."""

    def frame_for(self, record) -> bytes:
        return b"\xff" * 27 if record.seq in self.corrupt_seqs else super().frame_for(record)


class ErasedSectorCutShortOnce(ErasedSectorUnit, UnitCutShortOnce):
    """An erased-sector unit whose first transfer stops early."""


def test_each_record_acknowledged_away_undecoded_leaves_a_dead_letter(system_bus, buffer):
    """Byte-identical frames from different records (erased flash) each fill a gap and are acknowledged away:
    each is a loss of its own for the care team, not one."""
    unit = ErasedSectorUnit.with_history(*UNIT_A, count=6, corrupt_seqs={2, 3, 4})
    link = make_link(buffer, [unit.serial])

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert unit.acked_up_to == 6 and unit.records == []
    assert stored_seqs(buffer, unit.serial) == [1, 5, 6]
    assert [d["payload"] for d in buffer.dead_letters()] == [(b"\xff" * 27).hex()] * 3


def test_identical_frames_sent_again_after_a_transfer_cut_short_are_each_kept_once(system_bus, buffer):
    unit = ErasedSectorCutShortOnce.with_history(*UNIT_A, count=6, corrupt_seqs={2, 3, 4})
    unit.cut_short_after = 3  # 1..3 sent, then the summary: 2 and 3 kept, then sent again with 4
    link = make_link(buffer, [unit.serial])

    async def two_pulls(fake):
        return [await link.run_once(scan_timeout_s=5) for _ in range(2)]

    first, second = run_with_units([unit], two_pulls)

    assert all(r.completed for r in first + second) and stored_seqs(buffer, unit.serial) == [1, 5, 6]
    assert [op_arg for op_arg in unit.commands if op_arg[0] is ControlOp.SEND_FROM] == [
        (ControlOp.SEND_FROM, 1), (ControlOp.SEND_FROM, 2)]
    assert (unit.acked_up_to, unit.records) == (6, [])
    assert len(buffer.dead_letters()) == 3


def test_unit_whose_clock_was_reset_has_its_records_flagged(system_bus, buffer):
    unit = FakeTensUnit(serial=UNIT_A[0], address=UNIT_A[1])
    unit.reset_clock()
    unit.record_sessions(3, spacing_s=1)
    link = make_link(buffer, [unit.serial], paired_at=datetime(2026, 1, 1, tzinfo=UTC))

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    payloads = [p.payload for p in buffer.pending(10)]
    assert {p["clock_status"] for p in payloads} == {"reset"}
    assert all(p["device_started_at"].startswith("1970-01-01") for p in payloads)
    assert all(p["started_at"] > "2026" for p in payloads)


def test_second_run_pulls_only_new_records(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=4)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)
        unit.record_sessions(3)
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    assert results[0].stored == 3
    assert stored_seqs(buffer, unit.serial) == list(range(1, 8))
    assert [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM] == [1, 5]


def test_a_unit_whose_sequence_restarted_keeps_its_records_and_says_why(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    link = make_link(buffer, [unit.serial])

    before_reset = []

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # stores 1..5, acknowledges them
        before_reset.append(len(unit.commands))
        unit.highest_seq = 0  # reflashed, or replaced under the same serial: its counter starts again
        unit.record_sessions(3)  # three new sessions, numbered 1..3
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    assert [r.seq for r in unit.records] == [1, 2, 3]  # not acknowledged: the unit keeps them
    assert [op for op, _ in unit.commands[before_reset[0]:]] == []  # neither asked to send nor to free
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3, 4, 5] and not results[0].completed
    assert "counter restarted" in link.statuses[unit.serial].last_error  # reported with the unit's status


def test_a_unit_whose_restarted_counter_overtook_the_gateway_keeps_its_new_records_and_says_why(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # stores 1..5, acknowledges them
        unit.highest_seq = 0  # its counter starts again...
        unit.record_sessions(8)  # ... and counts past 5 before the unit is back in range: new 1..8
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    # Record 5 came back as another record: nothing of the new counter is stored or acknowledged away.
    assert [r.seq for r in unit.records] == list(range(1, 9))
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3, 4, 5] and not results[0].completed
    assert "counter restarted" in link.statuses[unit.serial].last_error


def test_a_restarted_counter_after_a_noted_gap_keeps_its_new_records_and_says_why(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # stores 1..2
        unit.record_sessions(3)
        unit.records = []  # the patient's other gateway took 3..5: the position moves to 5, no record stored there
        await link.run_once(scan_timeout_s=5)
        unit.highest_seq = 0  # reflashed: its counter restarts and passes 5 before it is back in range
        unit.record_sessions(8)  # new 1..8
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    # Asked from 6, it would have stored 6..8 and acknowledged 1..8: the new 1..5 freed unread.
    assert [r.seq for r in unit.records] == list(range(1, 9))
    assert stored_seqs(buffer, unit.serial) == [1, 2] and not results[0].completed
    assert "counter restarted" in link.statuses[unit.serial].last_error


def _as_a_buffer_from_before_the_hash(path) -> None:
    """The units table as a gateway from before the hash of the record stored last was kept leaves it: the
    serial and the position only (opening it adds the other columns, empty)."""
    db = sqlite3.connect(path)
    try:
        for column in [row[1] for row in db.execute("PRAGMA table_info(units)")]:
            if column not in ("serial", "last_stored_seq"):
                db.execute(f"ALTER TABLE units DROP COLUMN {column}")
        db.commit()
    finally:
        db.close()


def test_a_lost_ack_in_a_buffer_from_before_last_hash_is_not_a_restarted_counter(system_bus, tmp_path):
    path = tmp_path / "buffer.db"
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    upgraded = []

    async def scenario(fake):
        held = list(unit.records)
        before = RecordBuffer(path)
        await make_link(before, [unit.serial]).run_once(scan_timeout_s=5)  # stores 1..5 and acknowledges them...
        before.close()
        unit.records = held  # ... but the unit never heard it (or keeps what it was acknowledged)
        _as_a_buffer_from_before_the_hash(path)
        buffer = RecordBuffer(path)  # the gateway upgraded: its position 5 has no hash, and is a record stored
        upgraded.append(buffer)
        link = make_link(buffer, [unit.serial])
        unit.record_sessions(2)
        return link, await link.run_once(scan_timeout_s=5)

    try:
        link, (result,) = run_with_units([unit], scenario)
        buffer = upgraded[0]
        # Taken for a restarted counter, it would never be read or acknowledged again.
        assert result.completed, link.statuses[unit.serial].last_error
        assert stored_seqs(buffer, unit.serial) == list(range(1, 8))
        assert unit.acked_up_to == 7 and unit.records == []
        assert [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM][-1] == 6  # after it, as before
    finally:
        for buffer in upgraded:
            buffer.close()


def test_a_restarted_counter_is_seen_even_when_its_record_under_the_last_stored_number_does_not_decode(
        system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    link = make_link(buffer, [unit.serial])

    def frame_with_an_end_reason_this_gateway_lacks(record):  # a sound frame (newer firmware), its number readable
        return profile._with_crc(profile._RECORD.pack(
            profile.FORMAT_VERSION, profile.FRAME_SESSION_RECORD, record.seq, record.device_started_at,
            record.duration_s, record.programme, record.frequency_hz, record.pulse_width_us,
            record.intensity_mean_dma, record.intensity_peak_dma, 5 if record.seq == 5 else int(record.end_reason),
            record.battery_pct))

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # stores 1..5, acknowledges them
        unit.highest_seq = 0  # reflashed: new 1..8, and its new 5 is a frame this gateway cannot decode
        unit.record_sessions(8)
        unit.frame_for = frame_with_an_end_reason_this_gateway_lacks
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    # Taken for the record stored last, it let 6..8 be stored and 1..8 acknowledged: the new 1..4 freed unread.
    assert [r.seq for r in unit.records] == list(range(1, 9))
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3, 4, 5] and not results[0].completed
    assert buffer.dead_letters() == []
    assert "counter restarted" in link.statuses[unit.serial].last_error


def test_a_lost_acknowledgement_is_told_from_a_restarted_counter_by_the_record_stored_last(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        held = list(unit.records)
        await link.run_once(scan_timeout_s=5)  # stores 1..5, acknowledges them...
        unit.records = held  # ... but the unit never heard it: it still holds 1..5
        unit.record_sessions(2)
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    assert results[0].completed and stored_seqs(buffer, unit.serial) == list(range(1, 8))
    assert unit.records == []  # all acknowledged once 5 came back the same
    assert [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM][-1] == 5


def test_a_unit_whose_copy_of_the_record_stored_last_is_corrupt_keeps_its_records_and_says_why_once_a_cycle(
        system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=5)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        held = list(unit.records)
        await link.run_once(scan_timeout_s=5)  # stores 1..5, acknowledges them...
        unit.records = held  # ... but the unit never heard it
        unit.corrupt_seqs = {5}  # and its copy of 5 no longer reads: 5 cannot come back the same
        unit.record_sessions(2)
        return await link.run_once(scan_timeout_s=5)

    results = run_with_units([unit], scenario)

    # Nothing to tell a lost acknowledgement from a restarted counter by: nothing stored, nothing acknowledged,
    # and not asked again and again within the cycle (each time the same frame, the same failure).
    assert [r.seq for r in unit.records] == list(range(1, 8)) and stored_seqs(buffer, unit.serial) == [1, 2, 3, 4, 5]
    assert (results[0].completed, results[0].attempts) == (False, 1)
    assert [d["source"] for d in buffer.dead_letters()] == ["unit"]
    assert "record stored last unreadable" in link.statuses[unit.serial].last_error


def test_unit_that_leaves_range_is_retried_then_given_up_without_stopping_the_gateway(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=3)
    link = make_link(buffer, [unit.serial], max_attempts=2, connect_timeout_s=2)

    async def scenario(fake):
        found = await link.scan(timeout_s=5)
        fake.remove_unit(unit.serial)
        return await link.pull(found[0])

    result = run_with_units([unit], scenario)

    assert (result.completed, result.attempts, result.stored) == (False, 2, 0)
    assert link.statuses[unit.serial].last_error


def test_corrupt_last_record_does_not_stall_the_transfer(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=4, corrupt_seqs={4})
    link = make_link(buffer, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert (results[0].completed, results[0].attempts) == (True, 1)
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3]
    assert unit.acked_up_to == 4


def test_a_corrupt_last_record_acknowledged_is_one_dead_letter_and_the_next_connection_reports_no_loss(
        system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=4, corrupt_seqs={4})
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # stores 1..3, dead-letters 4, acknowledges 4
        await link.run_once(scan_timeout_s=5)  # nothing new: the unit freed 4, which the gateway let go itself
        between = buffer.last_stored(unit.serial)
        unit.record_sessions(1)
        return between, await link.run_once(scan_timeout_s=5)

    between, results = run_with_units([unit], scenario)

    assert results[0].completed and stored_seqs(buffer, unit.serial) == [1, 2, 3, 5]
    # One dead letter, the frame; not a second one saying the unit no longer holds a record never stored.
    assert [d["source"] for d in buffer.dead_letters()] == ["unit"] and "missing" not in buffer.dead_letters()[0][
        "payload"]
    # The record stored last keeps its hash (a NULL hash would stop telling a restarted counter apart).
    assert between[0] == 3 and between[1] is not None


def test_records_the_unit_no_longer_holds_are_noted_not_silently_skipped(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)
        unit.record_sessions(6)
        unit.records = unit.records[3:]
        return await link.run_once(scan_timeout_s=5)

    run_with_units([unit], scenario)

    assert stored_seqs(buffer, unit.serial) == [1, 2, 6, 7, 8]
    assert [(d["reason"], d["payload"]) for d in buffer.dead_letters()] == [
        ("unit no longer holds these records", '{"missing_from_seq": 3, "missing_to_seq": 5}')
    ]


def test_records_another_gateway_took_are_noted_once_not_at_every_connection(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=2)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)
        unit.record_sessions(3)
        unit.records = []  # the patient's other gateway pulled 3..5 and the unit freed them
        for _ in range(3):
            await link.run_once(scan_timeout_s=5)
        before = buffer.dead_letters(), buffer.last_stored_seq(unit.serial), unit.acked_up_to
        unit.record_sessions(1)
        for _ in range(3):
            await link.run_once(scan_timeout_s=5)
        return before

    before = run_with_units([unit], scenario)

    # With nothing sent above them, 3..5 might hold a session still running (5): not yet a loss, not acknowledged.
    assert before == ([], 2, 2)  # no dead letter, the position at 2, nothing acknowledged past it
    # Once the unit sent 6, it does not hold 3..5: noted once, however many connections follow.
    assert [d["payload"] for d in buffer.dead_letters()] == ['{"missing_from_seq": 3, "missing_to_seq": 5}']
    assert buffer.last_stored_seq(unit.serial) == 6 and stored_seqs(buffer, unit.serial) == [1, 2, 6]


def test_a_session_outside_the_clinical_ranges_is_stored_and_sent_not_dead_lettered(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=3)
    unit.records[1] = dataclasses.replace(unit.records[1], duration_s=25 * 3600)  # left running for 25 hours

    def frame_as_the_unit_sends_it(record):  # (the simulator's encoder refuses to make such a frame)
        return profile._with_crc(profile._RECORD.pack(
            profile.FORMAT_VERSION, profile.FRAME_SESSION_RECORD, record.seq, record.device_started_at,
            record.duration_s, record.programme, record.frequency_hz, record.pulse_width_us,
            record.intensity_mean_dma, record.intensity_peak_dma, int(record.end_reason), record.battery_pct))

    unit.frame_for = frame_as_the_unit_sends_it
    link = make_link(buffer, [unit.serial])
    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    # Stored for the server, which holds it back from the figures with its finding; nothing dead-lettered.
    assert stored_seqs(buffer, unit.serial) == [1, 2, 3] and buffer.dead_letters() == []
    assert [p.payload["duration_s"] for p in buffer.pending(10)][1] == 25 * 3600


def test_first_contact_with_a_unit_starts_at_its_oldest_record_without_a_dead_letter(system_bus, buffer):
    unit = FakeTensUnit(serial=UNIT_A[0], address=UNIT_A[1], highest_seq=500)
    unit.record_sessions(3)
    link = make_link(buffer, [unit.serial])

    run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert stored_seqs(buffer, unit.serial) == [501, 502, 503]
    assert buffer.dead_letters() == []


def test_full_buffer_leaves_unstored_records_on_the_unit(system_bus, tmp_path):
    small = RecordBuffer(tmp_path / "small.db", max_bytes=2_000)
    unit = FakeTensUnit.with_history(*UNIT_A, count=10)
    link = make_link(small, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    stored = small.last_stored_seq(unit.serial)
    assert results[0].completed is False and results[0].refused > 0
    assert 0 < stored < 10
    assert unit.acked_up_to == stored
    assert [r.seq for r in unit.records] == list(range(stored + 1, 11))
    assert link.statuses[unit.serial].last_error == "local buffer full; the unit keeps the rest"
    small.close()


class GarbledSummaryUnit(FakeTensUnit):
    def summary(self) -> bytes:
        return b"\x01\x02garbage"


def test_unit_with_an_unreadable_summary_fails_alone_and_the_other_unit_is_pulled(system_bus, buffer):
    garbled = GarbledSummaryUnit.with_history(*UNIT_A, count=3)
    healthy = FakeTensUnit.with_history(*UNIT_B, count=3)
    link = make_link(buffer, [garbled.serial, healthy.serial], max_attempts=2)

    results = {r.serial: r for r in run_with_units([garbled, healthy], lambda fake: link.run_once(scan_timeout_s=5))}

    assert (results[garbled.serial].completed, results[healthy.serial].completed) == (False, True)
    assert "unreadable transfer summary" in results[garbled.serial].errors[0]
    assert stored_seqs(buffer, healthy.serial) == [1, 2, 3]
    assert len(garbled.records) == 3


class FullDisk(RecordBuffer):
    """The real buffer, except that storing fails as SQLite does on a full disk while ``full`` is set."""

    full = True

    def store(self, serial, records):
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return super().store(serial, records)


def test_records_that_cannot_be_stored_on_a_full_disk_stay_on_the_unit_until_there_is_room(system_bus, tmp_path):
    buffer = FullDisk(tmp_path / "buffer.db")
    unit = FakeTensUnit.with_history(*UNIT_A, count=6)
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        while_full = await link.run_once(scan_timeout_s=5)
        held = (unit.acked_up_to, len(unit.records), link.statuses[unit.serial].last_error)
        buffer.full = False
        return while_full, held, await link.run_once(scan_timeout_s=5)

    while_full, held, with_room = run_with_units([unit], scenario)

    assert while_full[0].completed is False
    assert held == (0, 6, "OperationalError: database or disk is full")
    assert with_room[0].completed and link.statuses[unit.serial].last_error is None
    assert stored_seqs(buffer, unit.serial) == list(range(1, 7)) and unit.acked_up_to == 6
    buffer.close()


def test_scan_without_bluez_on_the_system_bus_says_bluetooth_is_unavailable(system_bus, buffer):
    link = make_link(buffer, [UNIT_A[0]])

    with pytest.raises(BluetoothUnavailable, match=r"BlueZ \(org.bluez\) is not running on the D-Bus system bus"):
        asyncio.run(link.scan(timeout_s=1))


class UnitNotifyingACorruptFrameTwice(FakeTensUnit):
    """A unit (or a BLE stack) that notifies each of its ``corrupt_seqs`` frames twice in one transfer: the
    duplicate notification TransferWindow.note_undecodable's docstring guards against for a named frame."""

    def records_from(self, seq: int) -> list:
        held = super().records_from(seq)
        return [r for r in held for _ in range(2 if r.seq in self.corrupt_seqs else 1)]


def test_review_an_undecodable_frame_notified_twice_in_one_transfer_is_one_dead_letter(system_bus, buffer):
    unit = UnitNotifyingACorruptFrameTwice.with_history(*UNIT_A, count=4, corrupt_seqs={2})
    link = make_link(buffer, [unit.serial])

    results = run_with_units([unit], lambda fake: link.run_once(scan_timeout_s=5))

    assert results[0].completed and stored_seqs(buffer, unit.serial) == [1, 3, 4]
    # One record (2) was lost; record 3 was stored. The care team must be told of one loss, not two.
    assert [(d["frame_slot"], d["source"]) for d in buffer.dead_letters()] == [(2, "unit")]
