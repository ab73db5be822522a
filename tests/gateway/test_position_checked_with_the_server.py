"""A unit's position with no record of the gateway's own to compare (it moved past records the unit no longer held:
the patient's other hub took them) is checked against the record the server holds there, as a gateway of the
patient's delivered it: a lost acknowledgement is told from a restarted counter even then.

The real parts: two paired hubs of one patient (real link with the real bleak against the fake BlueZ, real buffer,
uploader and API client) and the real API on FerretDB, served over loopback.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from companion.services.gateways import digest
from device_gateway.buffer import RecordBuffer
from device_gateway.profiles.companion_tens import ControlOp
from device_gateway.runner import device_report
from tests.support.scenario import HomeGateway, Timeline, Unit
from tests.support.world import make_user

SERIAL = "CTU-P0001"


@pytest.fixture
def timeline():
    return Timeline(timedelta(0))


@pytest.fixture
def patient(client, services):
    patient = make_user(client, services, key="moved", role="patient", time_zone="Europe/London")
    services.gateways.bind_unit(patient.id, SERIAL, "companion-tens")
    return patient


@pytest.fixture
def hubs(tmp_path, api_server, services, timeline, patient):
    """Make a hub of the patient's: a paired gateway's real link, buffer, API client and uploader."""
    made = []

    def hub(name: str, **options) -> HomeGateway:
        secret = secrets.token_urlsafe(16)
        gateway = services.stores.gateways.create(patient_id=patient.id, secret_hash=digest(secret), name=name)
        home = HomeGateway(tmp_path / name, api_server.url, gateway.id, secret, timeline, [SERIAL], **options)
        made.append(home)
        return home

    yield hub
    for home in made:
        home.close()


def move_past(hub: HomeGateway, first: int, last: int) -> None:
    """The position a gateway from before the link asked from its own position kept: finding the unit holding
    none of ``first``..``last`` (by its summary's counts), it noted them missing and moved its position past them,
    with no record stored there. A gateway now moves only past numbers the unit skipped in a transfer, storing the
    record it sent after them, but a buffer may still hold such a position."""
    hub.buffer.record_missing(SERIAL, first, last)


def moved_past_what_the_other_hub_took(hub_a: HomeGateway, hub_b: HomeGateway, unit: Unit) -> list:
    """Hub A stores 1..2; the patient's other hub, B, takes 3..5 and uploads them; A (of an earlier release) then
    finds the unit holding none of them: it notes them missing and moves its position to 5, with no record stored
    there. Returns the records 3..5 as the unit held them."""
    unit.fake.record_sessions(2)
    hub_a.visit(unit)
    unit.fake.record_sessions(3)
    taken = list(unit.fake.records)
    hub_b.visit(unit)  # its first contact: 3..5, acknowledged
    hub_b.go_online()
    hub_a.visit(unit)
    assert hub_a.buffer.position(SERIAL).seq == 2  # nothing sent above 2: not known to be missing (now)
    move_past(hub_a, 3, 5)
    position = hub_a.buffer.position(SERIAL)
    assert (position.seq, position.last_hash, position.moved_without_record) == (5, None, True)
    return taken


def ids_on_server(services) -> list[str]:
    return sorted(d["_id"] for d in services.db.session_records.find({"device_serial": SERIAL}))


def send_from(unit: Unit) -> list[int]:
    return [arg for op, arg in unit.fake.commands if op is ControlOp.SEND_FROM]


def test_what_the_other_hub_took_is_noted_once_the_unit_sent_a_later_record_and_a_lost_acknowledgement_costs_nothing(
        services, hubs, timeline, system_bus):
    hub_a, hub_b = hubs("a"), hubs("b")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:06")
    unit.fake.record_sessions(2)
    hub_a.visit(unit)
    unit.fake.record_sessions(3)
    taken = list(unit.fake.records)
    hub_b.visit(unit)  # B takes 3..5 and uploads them
    hub_b.go_online()
    hub_a.visit(unit)
    # The unit holds nothing above 2 and sent nothing: 5 might be a session still running. A stays where it was.
    position = hub_a.buffer.position(SERIAL)
    assert (position.seq, position.moved_without_record, hub_a.buffer.dead_letters()) == (2, False, [])
    unit.fake.records = taken  # the unit lost B's acknowledgement: it holds 3..5 again
    unit.fake.record_sessions(1)

    [result] = hub_a.visit(unit)

    # Asked from 3: A takes them too (the server keeps each record once), and nothing is noted missing.
    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert send_from(unit)[-1] == 3 and (unit.fake.acked_up_to, unit.fake.records) == (6, [])
    assert hub_a.buffer.dead_letters() == []
    hub_a.go_online()
    assert ids_on_server(services) == [f"{SERIAL}:{n}" for n in range(1, 7)]
    assert services.db.session_conflicts.count_documents({}) == 0

    unit.fake.record_sessions(2)  # 7, 8: B takes them; A sees 9 next
    hub_b.visit(unit)
    unit.fake.record_sessions(1)
    hub_a.visit(unit)
    hub_a.visit(unit)
    assert [d["payload"] for d in hub_a.buffer.dead_letters()] == ['{"missing_from_seq": 7, "missing_to_seq": 8}']


def test_a_unit_moved_past_whose_acknowledgement_was_lost_resumes_and_nothing_is_stored_twice(
        services, hubs, timeline, system_bus):
    hub_a, hub_b = hubs("a"), hubs("b")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:01")
    taken = moved_past_what_the_other_hub_took(hub_a, hub_b, unit)
    # The unit lost the acknowledgement that freed 3..5 (a power cut before it kept it): it holds them again.
    unit.fake.records = taken
    unit.fake.record_sessions(2)

    [result] = hub_a.visit(unit)

    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert send_from(unit)[-1] == 5  # asked from the record at its position, which came back as B delivered it
    assert (unit.fake.acked_up_to, unit.fake.records) == (7, [])
    assert [p.record_id for p in hub_a.buffer.pending(100)] == [f"{SERIAL}:{n}" for n in (1, 2, 6, 7)]
    position = hub_a.buffer.position(SERIAL)
    assert (position.seq, position.moved_without_record) == (7, False)
    hub_a.go_online()
    assert ids_on_server(services) == [f"{SERIAL}:{n}" for n in range(1, 8)]
    assert services.db.session_conflicts.count_documents({}) == 0
    delivered_by = {d["device_seq"]: d["gateway_id"] for d in services.db.session_records.find()}
    assert {seq for seq, gateway in delivered_by.items() if gateway == hub_b.gateway_id} == {3, 4, 5}


def test_a_unit_moved_past_that_was_reflashed_is_refused_as_a_restarted_counter(services, hubs, timeline, system_bus):
    hub_a, hub_b = hubs("a"), hubs("b")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:02")
    moved_past_what_the_other_hub_took(hub_a, hub_b, unit)
    unit.fake.highest_seq, unit.fake.records = 0, []  # reflashed: new 1..8, its new 5 another record
    unit.fake.record_sessions(8)

    results = [hub_a.visit(unit)[0] for _ in range(2)]

    assert [r.completed for r in results] == [False, False]
    assert [r.seq for r in unit.fake.records] == list(range(1, 9))  # nothing acknowledged away
    assert hub_a.buffer.last_stored_seq(SERIAL) == 5 and hub_a.buffer.pending_count() == 2
    assert "record 5 is not the one stored under that number" in hub_a.link.statuses[SERIAL].last_error
    # Compared with the record B delivered: the hash the gateway makes of a frame is the one the server keeps.
    on_server = services.db.session_records.find_one({"_id": f"{SERIAL}:5"})
    assert hub_a.buffer.position(SERIAL).last_hash == on_server["content_hash"]


@pytest.mark.parametrize("refused_by", ["a gateway from before the check", "a server that held nothing yet"])
def test_a_unit_refused_for_want_of_a_hash_is_cleared_once_the_server_confirms_its_record(
        services, hubs, timeline, system_bus, refused_by):
    hub_a, hub_b = hubs("a", server_recheck_s=0), hubs("b")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:03")
    unit.fake.record_sessions(2)
    hub_a.visit(unit)
    unit.fake.record_sessions(3)
    taken = list(unit.fake.records)
    hub_b.visit(unit)  # B takes 3..5 but has not uploaded them yet
    hub_a.visit(unit)
    move_past(hub_a, 3, 5)  # A, of an earlier release, moved past them
    unit.fake.records = taken  # the unit lost the acknowledgement that freed them
    unit.fake.record_sessions(1)
    if refused_by == "a gateway from before the check":
        hub_b.go_online()
        hub_a.link.delivered_record = None
    [refused] = hub_a.visit(unit)
    assert not refused.completed and [r.seq for r in unit.fake.records] == [3, 4, 5, 6]
    hub_a.link.delivered_record = hub_a.api.delivered_record
    hub_b.go_online()

    [result] = hub_a.visit(unit)

    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert (unit.fake.acked_up_to, unit.fake.records) == (6, [])
    assert [p.record_id for p in hub_a.buffer.pending(100)] == [f"{SERIAL}:{n}" for n in (1, 2, 6)]
    assert hub_a.link.statuses[SERIAL].last_error is None


def test_a_server_that_cannot_be_reached_leaves_the_unit_refused_this_cycle_and_is_asked_again_the_next(
        services, hubs, timeline, system_bus, api_server):
    hub_a, hub_b = hubs("a"), hubs("b")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:04")
    taken = moved_past_what_the_other_hub_took(hub_a, hub_b, unit)
    unit.fake.records = taken
    unit.fake.record_sessions(2)
    api_server.stop()
    try:
        [while_down] = hub_a.visit(unit)
    finally:
        api_server.start()

    # As before the check: nothing stored, nothing acknowledged, and the unit's status says why.
    assert not while_down.completed
    assert [r.seq for r in unit.fake.records] == [3, 4, 5, 6, 7] and unit.fake.acked_up_to == 5
    assert hub_a.buffer.last_stored_seq(SERIAL) == 5 and hub_a.buffer.position(SERIAL).moved_without_record
    said = hub_a.link.statuses[SERIAL].last_error
    assert "server unreachable" in said
    # What the server shows of it (the status report keeps 200 characters) still says what happened and why.
    assert "counter restarted" in device_report(hub_a.link.statuses[SERIAL], None)["last_error"][:200]

    [result] = hub_a.visit(unit)  # the next cycle, the server back

    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert (unit.fake.acked_up_to, unit.fake.records) == (7, [])
    assert [p.record_id for p in hub_a.buffer.pending(100)] == [f"{SERIAL}:{n}" for n in (1, 2, 6, 7)]


def test_a_position_buffer_recover_gave_is_checked_against_the_server_not_passed_unchecked(
        services, hubs, timeline, system_bus):
    hub_a = hubs("a")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:05")
    unit.fake.record_sessions(5)
    kept = list(unit.fake.records)
    hub_a.visit(unit)
    hub_a.go_online()
    unit.fake.records = kept  # the unit keeps what it was acknowledged (or never heard it)
    unit.fake.record_sessions(2)
    hub_a.buffer.close()  # the buffer is lost; buffer-recover gives the unit the ledger's position, no hash
    (hub_a.state_dir / "buffer.db").rename(hub_a.state_dir / "lost.db")
    RecordBuffer(hub_a.state_dir / "buffer.db", replacing_lost=True).close()
    hub_a.crash_and_restart()
    assert hub_a.buffer.position(SERIAL).recovered_unchecked

    [result] = hub_a.visit(unit)

    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert send_from(unit)[-1] == 5 and (unit.fake.acked_up_to, unit.fake.records) == (7, [])
    assert [p.record_id for p in hub_a.buffer.pending(100)] == [f"{SERIAL}:6", f"{SERIAL}:7"]
    # Checked, so no dead letter saying the records at or below the position could not be.
    assert hub_a.buffer.dead_letters() == []


def recovered_without_a_hash(hub: HomeGateway, unit: Unit) -> list:
    """The hub stores and uploads the unit's records 1..5; its buffer is then lost, and buffer-recover gives the unit
    the ledger's position, 5, without the hash of the record stored there. Returns the records 1..5 as the unit held
    them."""
    unit.fake.record_sessions(5)
    kept = list(unit.fake.records)
    hub.visit(unit)
    hub.go_online()
    hub.buffer.close()
    (hub.state_dir / "buffer.db").rename(hub.state_dir / "lost.db")
    RecordBuffer(hub.state_dir / "buffer.db", replacing_lost=True).close()
    hub.crash_and_restart()
    assert hub.buffer.position(SERIAL).recovered_unchecked
    return kept


def visit_with_the_server_down(hub: HomeGateway, unit: Unit, api_server):
    api_server.stop()
    try:
        [result] = hub.visit(unit)
    finally:
        api_server.start()
    return result


def assert_left_for_the_cycle(hub: HomeGateway, unit: Unit, visit) -> None:
    """``visit`` left the unit for the cycle: nothing read or acknowledged, the position still the one
    buffer-recover gave (to be checked with the server), and the unit's status, as the server shows it, says why,
    conclusion first."""
    held, acked_up_to, commands = list(unit.fake.records), unit.fake.acked_up_to, len(unit.fake.commands)
    result = visit()
    assert not result.completed and result.attempts == 1  # not retried as a lost link within the cycle
    assert (unit.fake.records, unit.fake.acked_up_to) == (held, acked_up_to)
    assert unit.fake.commands[commands:] == []  # not even asked to send
    position = hub.buffer.position(SERIAL)
    assert (position.seq, position.last_hash, position.recovered_unchecked) == (5, None, True)
    assert hub.buffer.dead_letters() == [] and hub.buffer.pending_count() == 0
    shown = device_report(hub.link.statuses[SERIAL], None)["last_error"]
    assert shown.startswith("not collected this cycle") and "server unreachable" in shown
    assert len(hub.link.statuses[SERIAL].last_error) <= 200


def test_a_recovered_position_waits_for_the_server_when_it_cannot_be_reached_and_a_reflashed_unit_is_then_refused(
        services, hubs, timeline, system_bus, api_server):
    """docs/device-gateway.md: a server that cannot be reached leaves the unit for the cycle and is asked again the
    next. For a position buffer-recover gave, the rule where the server cannot tell (asked from the record after, the
    note cleared) would have let a unit reflashed meanwhile have its new records at or below the position
    acknowledged away, never compared with the server's."""
    hub_a = hubs("a")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:09")
    recovered_without_a_hash(hub_a, unit)
    unit.fake.highest_seq, unit.fake.records = 0, []  # reflashed meanwhile: new records 1..7
    unit.fake.record_sessions(7)

    assert_left_for_the_cycle(hub_a, unit, lambda: visit_with_the_server_down(hub_a, unit, api_server))

    [result] = hub_a.visit(unit)  # the next cycle, the server back: it holds record 5 as this hub delivered it

    assert not result.completed
    assert [r.seq for r in unit.fake.records] == list(range(1, 8)) and unit.fake.acked_up_to == 5  # the old ack
    assert hub_a.link.statuses[SERIAL].last_error.startswith("sequence went back: record 5 is not the one stored")
    on_server = services.db.session_records.find_one({"_id": f"{SERIAL}:5"})
    assert hub_a.buffer.position(SERIAL).last_hash == on_server["content_hash"]
    assert hub_a.buffer.dead_letters() == [] and hub_a.buffer.pending_count() == 0


def test_a_recovered_position_waits_for_the_server_when_it_cannot_be_reached_and_a_unit_keeping_its_records_resumes(
        services, hubs, timeline, system_bus, api_server):
    hub_a = hubs("a")
    unit = Unit(timeline, SERIAL, "C0:FF:EE:00:07:0A")
    kept = recovered_without_a_hash(hub_a, unit)
    unit.fake.records = kept  # the unit keeps what it was acknowledged (or never heard it)
    unit.fake.record_sessions(2)

    assert_left_for_the_cycle(hub_a, unit, lambda: visit_with_the_server_down(hub_a, unit, api_server))

    [result] = hub_a.visit(unit)  # the next cycle, the server back: its record 5 is the unit's

    assert result.completed, hub_a.link.statuses[SERIAL].last_error
    assert send_from(unit)[-1] == 5 and (unit.fake.acked_up_to, unit.fake.records) == (7, [])
    assert [p.record_id for p in hub_a.buffer.pending(100)] == [f"{SERIAL}:6", f"{SERIAL}:7"]
    assert hub_a.buffer.dead_letters() == [] and hub_a.link.statuses[SERIAL].last_error is None
