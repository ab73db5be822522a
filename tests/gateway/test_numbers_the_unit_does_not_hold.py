"""A unit whose numbers are not all held up to its highest: a session numbered when it started and still running
(the highest number assigned, no record yet), or a number assigned to a session never kept (aborted). The gateway
asks from the record after the one it stored last, never from where the summary's counts put the unit's records:
every record the unit holds is stored, once; nothing is acknowledged that was not stored, dead-lettered undecodable,
or skipped by the unit's own transfer; a number is noted missing only once the unit sent a higher one.

Real bleak against the fake BlueZ on a private bus, a real buffer.
"""

import pytest

from device_gateway.buffer import RecordBuffer
from device_gateway.profiles.companion_tens import ControlOp
from device_gateway.simulator.unit import FakeTensUnit
from tests.gateway.test_link import UNIT_A, make_link, stored_seqs
from tests.support.scenario import run_with_units


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


def acks(unit: FakeTensUnit) -> list[int]:
    return [arg for op, arg in unit.commands if op is ControlOp.ACK_UP_TO]


def asked_from(unit: FakeTensUnit) -> list[int]:
    return [arg for op, arg in unit.commands if op is ControlOp.SEND_FROM]


def missing(kept: RecordBuffer) -> list[str]:
    return [d["payload"] for d in kept.dead_letters()]


def clean(results) -> bool:
    return all(r.completed and not r.errors for r in results)


def test_a_session_running_while_the_gateway_connects_is_neither_lost_nor_acknowledged(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=10)
    link = make_link(buffer, [unit.serial])
    seen = {}

    async def scenario(fake):
        seen["first"] = await link.run_once(scan_timeout_s=5)  # 1..10
        unit.record_sessions(10)  # 11..20
        unit.start_session()  # 21: numbered, running, no record yet
        seen["second"] = await link.run_once(scan_timeout_s=5)
        seen["after_second"] = (stored_seqs(buffer, unit.serial), unit.acked_up_to, missing(buffer))
        seen["syncs"] = buffer.pending_sync_count()
        seen["while_running"] = await link.run_once(scan_timeout_s=5)  # the session still runs: nothing new
        seen["syncs_while_running"] = buffer.pending_sync_count()
        unit.finish_session()  # 21 is stored on the unit
        seen["after_it_ended"] = await link.run_once(scan_timeout_s=5)

    run_with_units([unit], scenario)

    # Every record the unit held is stored; 21, assigned and not stored, is neither acknowledged nor a loss.
    assert seen["after_second"] == (list(range(1, 21)), 20, [])
    assert asked_from(unit)[1] == 11  # after the record stored last, not from "highest minus held"
    # A connection while it runs takes nothing and notes no sync of its own (none every cycle of the session).
    assert seen["syncs_while_running"] == seen["syncs"]
    # Once it ended and was stored, it is the next record, not a counter that went back.
    assert clean(seen["first"] + seen["second"] + seen["while_running"] + seen["after_it_ended"])
    assert stored_seqs(buffer, unit.serial) == list(range(1, 22))
    assert (unit.acked_up_to, unit.records, missing(buffer)) == (21, [], [])
    assert link.statuses[unit.serial].last_error is None
    assert acks(unit) == sorted(acks(unit)) and max(acks(unit)[:-1]) == 20  # 21 acknowledged only once stored


def test_first_contact_while_a_session_is_running_collects_every_record_it_holds(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=10)
    unit.start_session()  # 11: running when the gateway first reaches the unit
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        first = await link.run_once(scan_timeout_s=5)
        held = stored_seqs(buffer, unit.serial), unit.acked_up_to, [r.seq for r in unit.records]
        unit.finish_session()
        return first, held, await link.run_once(scan_timeout_s=5)

    first, held, later = run_with_units([unit], scenario)

    assert held == (list(range(1, 11)), 10, [])  # record 1 stored, not acknowledged away unread
    assert asked_from(unit)[0] == 1
    assert clean(first + later) and stored_seqs(buffer, unit.serial) == list(range(1, 12))
    assert (unit.acked_up_to, unit.records, missing(buffer)) == (11, [], [])


def test_a_number_assigned_to_a_session_never_kept_is_noted_once_the_unit_sent_a_higher_one(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=10)
    link = make_link(buffer, [unit.serial])
    seen = {}

    async def scenario(fake):
        await link.run_once(scan_timeout_s=5)  # 1..10
        unit.record_sessions(4)  # 11..14
        unit.start_session()
        unit.abort_session()  # 15: assigned, never kept
        unit.record_sessions(5)  # 16..20
        seen["gap"] = await link.run_once(scan_timeout_s=5)
        seen["after_gap"] = (stored_seqs(buffer, unit.serial), unit.acked_up_to, missing(buffer))
        unit.start_session()
        unit.abort_session()  # 21: never kept, and nothing after it yet
        seen["aborted_last"] = await link.run_once(scan_timeout_s=5)
        seen["after_aborted_last"] = (unit.acked_up_to, missing(buffer))
        unit.finish_session()  # 22
        for _ in range(2):
            seen.setdefault("later", []).extend(await link.run_once(scan_timeout_s=5))

    run_with_units([unit], scenario)

    # 11 and the rest are stored (asked from 11, not from "20 - 9 + 1"), 15 noted once: the unit sent 16 and not it.
    assert seen["after_gap"] == ([*range(1, 15), *range(16, 21)], 20, ['{"missing_from_seq": 15, "missing_to_seq": 15}'])
    # 21, with nothing sent after it, might be a session still running: not yet a loss, not acknowledged.
    assert seen["after_aborted_last"] == (20, ['{"missing_from_seq": 15, "missing_to_seq": 15}'])
    assert clean(seen["gap"] + seen["aborted_last"] + seen["later"])
    assert stored_seqs(buffer, unit.serial) == [*range(1, 15), *range(16, 21), 22]
    assert missing(buffer) == ['{"missing_from_seq": 15, "missing_to_seq": 15}',
                               '{"missing_from_seq": 21, "missing_to_seq": 21}']
    assert (unit.acked_up_to, unit.records) == (22, [])


def test_an_undecodable_record_before_a_running_session_is_kept_once_and_not_acknowledged_past(system_bus, buffer):
    unit = FakeTensUnit.with_history(*UNIT_A, count=12, corrupt_seqs={12})
    unit.start_session()  # 13 running
    link = make_link(buffer, [unit.serial])

    async def scenario(fake):
        first = [*await link.run_once(scan_timeout_s=5), *await link.run_once(scan_timeout_s=5)]
        kept = unit.acked_up_to, [r.seq for r in unit.records], len(buffer.dead_letters())
        unit.finish_session()
        return first, kept, await link.run_once(scan_timeout_s=5)

    first, kept, later = run_with_units([unit], scenario)

    # One frame for the two numbers after 11: it cannot tell which is running; nothing past 11 is acknowledged,
    # and the frame is kept once, however often it comes.
    assert kept == (11, [12], 1)
    assert clean(first + later) and stored_seqs(buffer, unit.serial) == [*range(1, 12), 13]
    assert (unit.acked_up_to, unit.records) == (13, [])
    [frame] = buffer.dead_letters()
    assert (frame["source"], frame["frame_slot"]) == ("unit", 12)
