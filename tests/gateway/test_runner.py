"""The runner's two loops with the real bleak against the fake BlueZ, and the uploader against the API stub:
the radio loop outlives BlueZ going away, credentials refused for good stop the gateway, and units of a
profile the gateway cannot pull are named, not pulled."""

import asyncio
import itertools
import logging
import random
from datetime import UTC, datetime

import pytest

from device_gateway.api import ApiClient, CredentialsRevoked
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.capture import capture
from device_gateway.cli import EXIT_NEEDS_ATTENTION, main
from device_gateway.config import GatewayConfig
from device_gateway.health import RADIO, GatewayHealth, read_unit_health
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.runner import GatewayRunner
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.sessions import simulated_session
from device_gateway.simulator.unit import FakeTensUnit
from tests.support.scenario import run_with_units

SERIAL, ADDRESS = "CT-000001", "C0:FF:EE:00:00:01"


async def until(condition, timeout_s: float = 60.0) -> bool:
    """Poll ``condition`` in the event loop (so bleak and the fake keep running) until it holds or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


@pytest.fixture
def make_runner(stub, buffer, tmp_path):
    clients = []

    def build(api_clock=None, buffer=buffer, **kwargs):
        config = GatewayConfig(state_dir=str(tmp_path), api_url=stub.url, gateway_id="gw-1", gateway_secret="s3cret",
                               device_serials=[SERIAL])
        api = ApiClient(stub.url, "gw-1", "s3cret", **({"clock": api_clock} if api_clock else {}))
        clients.append(api)
        kwargs.setdefault("health", GatewayHealth(tmp_path / "health.json"))
        return GatewayRunner(config, buffer, api, interval_s=0.2, scan_timeout_s=2.0, rng=random.Random(3),
                             backoff_start_s=0.05, backoff_cap_s=0.5, **kwargs)

    yield build
    for client in clients:
        client.close()


def reported_errors(stub) -> list[str]:
    return [unit["last_error"] for report in stub.statuses for unit in report if unit.get("last_error")]


def test_radio_loop_outlives_bluez_going_away_and_resumes_by_itself_when_it_returns(
    system_bus, stub, buffer, make_runner
):
    unit = FakeTensUnit.with_history(SERIAL, ADDRESS, count=5)
    runner = make_runner()
    radio = runner.health.loops[RADIO]

    async def scenario():
        fake = await FakeBluez().start()
        fake.add_unit(unit)
        stop = asyncio.Event()
        running = asyncio.create_task(runner.run(stop))
        try:
            first_five = await until(lambda: len(stub.stored) == 5)
            await fake.stop()
            noticed = await until(lambda: radio.failing)
            unit.record_sessions(3)
            told_the_server = await until(lambda: any(e.startswith("gateway radio loop: ") for e in reported_errors(stub)))
            fake = await FakeBluez().start()
            fake.add_unit(unit)
            all_eight = await until(lambda: len(stub.stored) == 8 and buffer.pending_count() == 0)
            return first_five, noticed, told_the_server, all_eight
        finally:
            stop.set()
            await running
            await fake.stop()

    assert asyncio.run(scenario()) == (True, True, True, True)
    assert sorted(stub.stored) == [f"{SERIAL}:{seq}" for seq in range(1, 9)]
    assert unit.acked_up_to == 8
    assert not radio.failing and "org.bluez" in radio.last_error


def test_credentials_refused_for_over_a_minute_stop_both_loops_and_keep_the_records(
    system_bus, stub, buffer, make_runner
):
    record = simulated_session(1, 1_760_000_000)
    buffer.store(SERIAL, [capture(SERIAL, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC))])
    stub.refuse_tokens = True
    refusal_times = itertools.count(0, 31)
    runner = make_runner(api_clock=lambda: next(refusal_times))

    async def scenario():
        fake = await FakeBluez().start()
        try:
            await asyncio.wait_for(runner.run(asyncio.Event()), timeout=60)
        finally:
            await fake.stop()

    with pytest.raises(CredentialsRevoked, match="credentials refused \\(HTTP 401\\), [0-9]+ times in a row"):
        asyncio.run(scenario())
    assert runner.upload_stop.is_set() and buffer.pending_count() == 1 and stub.batches == []


class DamageFoundOnDelete(RecordBuffer):
    """The real buffer, except that SQLite finds the file corrupt when acknowledged records are deleted."""

    def mark_sent(self, record_ids):
        raise BufferDamaged(self.path, "is damaged: database disk image is malformed")


def test_damage_found_by_the_upload_loop_stops_the_gateway_instead_of_retrying_forever(
    system_bus, stub, tmp_path, make_runner
):
    damaged = DamageFoundOnDelete(tmp_path / "damaged.db")
    record = simulated_session(1, 1_760_000_000)
    damaged.store(SERIAL, [capture(SERIAL, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC))])
    runner = make_runner(buffer=damaged)

    async def scenario():
        fake = await FakeBluez().start()
        try:
            await asyncio.wait_for(runner.run(asyncio.Event()), timeout=60)
        finally:
            await fake.stop()

    with pytest.raises(BufferDamaged, match="damaged.db is damaged"):
        asyncio.run(scenario())
    assert len(stub.batches) == 1 and damaged.pending_count() == 1
    damaged.close()


def test_units_of_a_profile_the_gateway_cannot_pull_are_named_once_and_not_pulled(stub, make_runner, caplog):
    stub.devices = [SERIAL, "EM-000002"]
    stub.profiles = {"EM-000002": "beurer-em70"}
    runner = make_runner()

    with caplog.at_level(logging.WARNING):
        first = asyncio.run(runner.refresh_bound_units())
        second = asyncio.run(runner.refresh_bound_units())

    assert first == second == {SERIAL}
    assert caplog.text.count("not pulling EM-000002 (beurer-em70): this gateway drives only the companion-tens") == 1


def _records(count: int) -> list:
    sessions = [simulated_session(seq, 1_760_000_000 + seq * 3600) for seq in range(1, count + 1)]
    return [capture(SERIAL, s, encode_record(s), 0.0, datetime(2026, 1, 1, tzinfo=UTC)) for s in sessions]


def _status(tmp_path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["status", "--state-dir", str(tmp_path)])
    return code, capsys.readouterr().out


def test_status_shows_a_unit_refused_every_cycle_and_since_when(system_bus, stub, buffer, make_runner, tmp_path,
                                                                 capsys):
    """The link ends a refused unit's pull alone and the radio loop goes on working: the unit's error and since
    when it lasts are kept in health.json for ``status``, across cycles and a restart."""
    buffer.store(SERIAL, _records(10))
    unit = FakeTensUnit.with_history(SERIAL, ADDRESS, count=3)  # its counter restarted below what is stored
    runner = make_runner()
    runner.config.save()

    run_with_units([unit], lambda fake: runner._radio_cycle())
    assert runner.link.statuses[SERIAL].last_error.startswith("sequence went back")
    first = read_unit_health(tmp_path / "health.json")[SERIAL]
    run_with_units([unit], lambda fake: make_runner()._radio_cycle())  # the gateway restarted

    refused = read_unit_health(tmp_path / "health.json")[SERIAL]
    assert (refused.failing_since, refused.failures) == (first.failing_since, 2)
    assert refused.last_error.startswith("sequence went back: its highest sequence number (3) is below")
    assert not runner.health.loops[RADIO].failing  # the radio itself works
    code, out = _status(tmp_path, capsys)
    assert code == EXIT_NEEDS_ATTENTION and "radio loop:     no error reported" in out
    assert (f"  {SERIAL}: last stored sequence 10; NOT COLLECTED for less than a minute (since "
            f"{first.failing_since}, at least 2 pull(s), the last noted at {refused.last_error_at}): sequence went "
            "back: ") in out
    assert unit.acked_up_to == 0 and len(unit.records) == 3


def test_a_full_disk_while_storing_is_noted_in_health_and_cleared_once_the_unit_is_collected(
        system_bus, stub, buffer, make_runner, tmp_path, capsys):
    """SQLite's own "database or disk is full", while the records of a unit are stored: the unit keeps them,
    health.json says why, and the unit's line says so until a pull collects it."""
    unit = FakeTensUnit.with_history(SERIAL, ADDRESS, count=30)  # more than the pages it has room in
    runner = make_runner()
    buffer.pragma(f"max_page_count = {buffer.pragma('page_count')}")  # not one page more

    run_with_units([unit], lambda fake: runner._radio_cycle())

    stored = buffer.last_stored_seq(SERIAL)  # the batches that fitted
    assert stored < 30 and unit.acked_up_to == stored
    full = read_unit_health(tmp_path / "health.json")[SERIAL]
    assert full.last_error == "OperationalError: database or disk is full"
    code, out = _status(tmp_path, capsys)
    position = f"last stored sequence {stored}" if stored else "nothing stored yet"
    assert code == EXIT_NEEDS_ATTENTION
    assert (f"  {SERIAL}: {position}; NOT COLLECTED for less than a minute (since "
            f"{full.failing_since}, at least 1 pull(s), the last noted at {full.last_error_at}): OperationalError: "
            "database or disk is full") in out

    buffer.pragma("max_page_count = 1073741823")  # room again
    run_with_units([unit], lambda fake: runner._radio_cycle())

    assert unit.acked_up_to == 30 and read_unit_health(tmp_path / "health.json") == {}
    code, out = _status(tmp_path, capsys)
    assert code == 0 and f"  {SERIAL}: last stored sequence 30\n" in out and "NOT COLLECTED" not in out


def test_a_unit_no_longer_bound_leaves_the_health_file(stub, make_runner, tmp_path):
    runner = make_runner()
    runner.health.unit_failed("CT-000009", "sequence went back: its counter restarted")
    runner.health.unit_failed(SERIAL, "PositionNotCheckedYet")

    asyncio.run(runner.refresh_bound_units())
    runner._note_units([])

    assert set(read_unit_health(tmp_path / "health.json")) == {SERIAL}


def test_review_a_real_full_disk_still_shows_the_unit_not_collected(system_bus, stub, buffer, make_runner, tmp_path,
                                                                     capsys, monkeypatch):
    """A full disk is full for health.json too (it lives beside buffer.db in the state directory): the unit's
    NOT COLLECTED must not depend on writing a new file there."""
    import errno

    import device_gateway.health as health_module

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    unit = FakeTensUnit.with_history(SERIAL, ADDRESS, count=30)
    runner = make_runner()
    buffer.pragma(f"max_page_count = {buffer.pragma('page_count')}")  # SQLite cannot grow the buffer...
    monkeypatch.setattr(health_module, "write_atomically", disk_full)  # ...nor can any file be written there

    run_with_units([unit], lambda fake: runner._radio_cycle())

    assert buffer.last_stored_seq(SERIAL) < 30  # the unit was not collected
    code, out = _status(tmp_path, capsys)
    assert code == EXIT_NEEDS_ATTENTION and "NOT COLLECTED" in out, (code, out)
