"""The gateway's clocks and the server's time as it measures them; syncs and the clock reading going up with
every batch; held records leaving the queue like any stored one; dead letters reported to the server, listed
and replayed with ``device-gateway dead-letters``."""

import json
import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.cli import main
from device_gateway.clock import MAX_AGE_S, ClockReading, GatewayClock, ServerClock, parse_server_time
from device_gateway.config import GatewayConfig
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session
from device_gateway.uploader import Uploader
from tests.support.api_server import paired_gateway

SERIAL = "CT-000001"
T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Clocks:
    """A gateway's clocks under the test's control."""

    def __init__(self, wall: datetime = T, boot: str = "boot-a") -> None:
        self.wall, self.mono, self.boot = wall, 100.0, boot

    def gateway_clock(self) -> GatewayClock:
        return GatewayClock(wall=lambda: self.wall, monotonic=lambda: self.mono, boot_id=lambda: self.boot)

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def test_the_servers_time_is_measured_at_the_middle_of_the_round_trip_and_runs_on_the_monotonic_clock():
    clocks = Clocks(wall=T + timedelta(hours=5))  # the gateway's wall clock is 5 hours ahead
    server = ServerClock(clocks.gateway_clock())
    sent = clocks.gateway_clock().read()
    clocks.advance(0.4)
    server.observe(T + timedelta(seconds=0.2), sent, clocks.gateway_clock().read())
    assert server.now().now == T + timedelta(seconds=0.4)
    assert abs(server.wall_offset_s() - 5 * 3600) < 1
    clocks.wall -= timedelta(hours=5)  # NTP steps the wall clock: the server's time does not move with it
    clocks.advance(60)
    measured = server.now()
    assert measured.now == T + timedelta(seconds=60.4) and measured.error_s < 0.3


def test_no_vouched_time_without_a_measurement_of_this_boot_or_once_it_is_stale():
    clocks = Clocks()
    server = ServerClock(clocks.gateway_clock())
    assert server.now() is None
    server.observe(T, clocks.gateway_clock().read(), clocks.gateway_clock().read())
    clocks.advance(MAX_AGE_S + 1)
    assert server.now() is None
    server.observe(T, clocks.gateway_clock().read(), clocks.gateway_clock().read())
    clocks.boot = "boot-b"  # a reboot: the monotonic clock started again
    assert server.now() is None
    other_boot = ClockReading(T, "boot-a", 1.0)
    server.observe(T, other_boot, clocks.gateway_clock().read())  # a request across a reboot tells nothing
    assert server.now() is None


def test_the_x_server_time_header_is_read_strictly():
    assert parse_server_time("2026-03-02T12:00:00.250Z") == T + timedelta(milliseconds=250)
    assert parse_server_time("2026-03-02T12:00:00") is None  # no zone: not a server time
    assert parse_server_time("yesterday") is None and parse_server_time(None) is None


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


def _fill(buffer: RecordBuffer, count: int, sync_id: str | None = None) -> None:
    records = []
    for seq in range(1, count + 1):
        session = simulated_session(seq, 1_760_000_000 + seq * 600)
        records.append(capture(SERIAL, session, encode_record(session), 0.0, T, sync_id=sync_id))
    buffer.store(SERIAL, records)


def _sync(sync_id: str = "0123456789abcdef") -> dict:
    return {"sync_id": sync_id, "serial": SERIAL, "highest_seq": 3, "unit_clock": T.isoformat(),
            "gateway_clock": T.isoformat(), "boot_id": "boot-a", "monotonic_s": 100.0, "clock_set_to": None,
            "vouched_time": None, "vouched_error_s": None}


def test_syncs_and_the_clock_reading_go_up_with_the_records_and_leave_the_queue_once_the_server_has_them(
        stub, buffer):
    buffer.store_sync(SERIAL, _sync())
    _fill(buffer, 3, "0123456789abcdef")
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        Uploader(buffer, api, sleep=lambda s: None, rng=random.Random(1)).drain(max_failures=2)
        assert api.server_clock.now() is not None  # measured from the answers' X-Server-Time
    finally:
        api.close()
    assert list(stub.syncs) == ["0123456789abcdef"] and buffer.pending_sync_count() == 0
    assert {r["sync_id"] for r in stub.stored.values()} == {"0123456789abcdef"}
    assert stub.clock_readings and {"wall", "boot_id", "monotonic_s"} <= set(stub.clock_readings[0])


def test_a_batch_refused_for_one_sync_dead_letters_that_sync_alone(stub, buffer):
    """A unit moved away from this gateway's patient makes the server refuse a batch carrying its sync (403):
    the other units' syncs still reach the server, and their records are placed by them."""
    ids = [f"{n:016x}" for n in range(1, 6)]
    for sync_id in ids:
        buffer.store_sync(SERIAL, _sync(sync_id))
    _fill(buffer, 3, ids[0])
    stub.poison_syncs.add(ids[3])
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        Uploader(buffer, api, sleep=lambda s: None, rng=random.Random(1)).drain(max_failures=2)
    finally:
        api.close()
    assert sorted(stub.syncs) == sorted(set(ids) - {ids[3]}) and buffer.pending_sync_count() == 0
    dead = buffer.dead_letters()
    assert [(d["record_id"], json.loads(d["payload"])["sync_id"]) for d in dead] == [(None, ids[3])]
    assert "403" in dead[0]["reason"]
    assert len(stub.stored) == 3


def test_a_stored_sync_that_no_longer_opens_is_dead_lettered_and_reported_not_dropped(stub, buffer, tmp_path):
    """A damaged row: the server is told the unit lost a reading of its clock (source ``sync``, as a sync it
    refused), where the sync was deleted with a log line; the other syncs and the records still go up."""
    ids = [f"{n:016x}" for n in range(1, 4)]
    for sync_id in ids:
        buffer.store_sync(SERIAL, _sync(sync_id))
    _fill(buffer, 3, ids[0])
    with closing(sqlite3.connect(tmp_path / "buffer.db")) as raw, raw:
        sealed = raw.execute("SELECT sealed FROM syncs WHERE sync_id = ?", (ids[1],)).fetchone()[0]
        raw.execute("UPDATE syncs SET sealed = ? WHERE sync_id = ?", (sealed[:-1] + bytes([sealed[-1] ^ 1]), ids[1]))
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        uploader = Uploader(buffer, api, sleep=lambda s: None, rng=random.Random(1))
        uploader.drain(max_failures=2)
        uploader.report_dead_letters()
    finally:
        api.close()
    assert sorted(stub.syncs) == [ids[0], ids[2]] and buffer.pending_sync_count() == 0 and len(stub.stored) == 3
    [dead] = buffer.dead_letters()
    assert (dead["record_id"], dead["device_serial"], dead["source"]) == (None, SERIAL, "sync")
    assert dead["reason"].startswith("stored sync unreadable: sealed field does not open")
    assert json.loads(dead["payload"]) == {"sync_id": ids[1], "unreadable_sealed_hex": sealed[:-1].hex()
                                          + bytes([sealed[-1] ^ 1]).hex()}
    assert [(d["source"], d["reason"]) for d in stub.dead_letters.values()] == [("sync", dead["reason"])]


def test_a_record_the_server_stores_held_leaves_the_queue_like_any_stored_one(stub, buffer):
    _fill(buffer, 2)

    def held(records):
        return 200, {}, {"results": [{"record_id": r["record_id"], "status": "created", "reason": None,
                                      "flags": ["time_uncertain"], "held": True} for r in records]}

    stub.scripted.append(held)
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        progress = Uploader(buffer, api, sleep=lambda s: None).drain(max_failures=2)
    finally:
        api.close()
    assert (progress.sent, progress.held, progress.dead_lettered) == (2, 2, 0)
    assert buffer.pending_count() == 0 and buffer.dead_letters() == []


def test_dead_letters_are_reported_to_the_server_once_the_queue_is_empty_and_only_once(stub, buffer):
    buffer.dead_letter_frame(SERIAL, b"\x01\x01garbage", "BadChecksum: crc 0x0000 does not match content", 1)
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        uploader = Uploader(buffer, api, sleep=lambda s: None)
        assert uploader.drain(max_failures=2).reported == 1
        assert uploader.drain(max_failures=2).reported == 1  # nothing new to report
    finally:
        api.close()
    [reported] = stub.dead_letters.values()
    assert (reported["source"], reported["payload"]) == ("unit", b"\x01\x01garbage".hex())
    assert all(d["reported_at"] for d in buffer.dead_letters())


def _report_a_loss(stub, buffer, max_failures: int):
    """Note records a unit no longer holds, and drain the buffer to the stub; the drain's progress."""
    buffer.record_missing(SERIAL, 3, 5)
    return _drain(stub, buffer, max_failures)


def _drain(stub, buffer, max_failures: int):
    api = ApiClient(stub.url, "gw-1", "s3cret")
    try:
        return Uploader(buffer, api, sleep=lambda s: None).drain(max_failures=max_failures)
    finally:
        api.close()


def test_a_server_that_takes_no_reports_is_not_asked_in_a_loop(stub, buffer):
    stub.take_dead_letters = False
    progress = _report_a_loss(stub, buffer, 2)
    assert progress.retries == 0 and buffer.dead_letters(unreported_only=True)


def test_a_proxys_404_to_a_report_is_an_outage_not_a_server_without_reports(stub, buffer):
    stub.dead_letters_scripted = [(404, {"Content-Type": "text/html"}, b"<html>Not Found</html>")]  # a deploy
    progress = _report_a_loss(stub, buffer, 3)
    assert progress.retries == 1 and buffer.dead_letters(unreported_only=True) == []
    assert [item["reason"] for item in stub.dead_letters.values()] == ["unit no longer holds these records"]


@pytest.mark.parametrize("answer", [
    (302, {"Location": "https://sso.example.org/", "Content-Type": "text/html"}, b""),  # a sign-in proxy
    (200, {"Content-Type": "text/html"}, b"<html>Welcome to the hotel Wi-Fi</html>"),  # a captive portal
    (200, {"Content-Type": "application/json"}, {"ok": True}),  # JSON, but not the API's answer
    (200, {}, {"received": 0, "new": 0}),  # the API's shape, but not for what was sent
], ids=["redirect", "html-page", "other-json", "received-none"])
def test_a_report_answered_by_something_else_than_the_api_is_not_marked_reported(stub, buffer, answer):
    stub.dead_letters_scripted = [answer, answer]
    progress = _report_a_loss(stub, buffer, 2)
    assert progress.retries == 2 and progress.reported == 0
    assert buffer.dead_letters(unreported_only=True) and not stub.dead_letters

    progress = _drain(stub, buffer, 1)  # once the API itself answers, they are reported
    assert progress.reported == 1 and buffer.dead_letters(unreported_only=True) == []
    assert [item["reason"] for item in stub.dead_letters.values()] == ["unit no longer holds these records"]


def test_dead_letters_are_listed_and_replayed_with_the_command(tmp_path, capsys):
    config = GatewayConfig(state_dir=str(tmp_path))
    buffer = config.open_buffer()
    session = simulated_session(9, 1_760_000_000)
    good_frame = encode_record(session)
    buffer.dead_letter_frame(SERIAL, good_frame, "UnknownVersion: format version 1", 9)  # an older gateway's verdict
    buffer.dead_letter_frame(SERIAL, b"\x01\x01garbage", "BadChecksum: crc 0x0000 does not match content", 10)
    _fill(buffer, 1)
    buffer.dead_letter([(f"{SERIAL}:1", "record_id must be '<device_serial>:<device_seq>'")])
    buffer.close()

    assert main(["--state-dir", str(tmp_path), "dead-letters"]) == 0
    listing = capsys.readouterr().out
    assert "3 dead letter(s)" in listing and "BadChecksum" in listing and "not yet reported" in listing

    assert main(["--state-dir", str(tmp_path), "dead-letters", "--replay-all"]) == 0
    replayed = capsys.readouterr().out
    assert "#1: decoded and queued" in replayed and "#2: still undecodable (TruncatedFrame" in replayed
    assert "#3: queued again" in replayed and "2 queued for upload" in replayed
    buffer = config.open_buffer()
    try:
        queued = {p.record_id: p.payload for p in buffer.pending(10)}
        assert set(queued) == {f"{SERIAL}:9", f"{SERIAL}:1"}
        assert queued[f"{SERIAL}:9"]["clock_status"] == "reset" and queued[f"{SERIAL}:9"]["sync_id"] is None
        assert [d["source"] for d in buffer.dead_letters()] == ["unit"] and buffer.status().replayed == 2
    finally:
        buffer.close()


def test_a_gateway_over_its_report_rate_keeps_its_dead_letters_and_reports_them_after_the_retry_after(
        tmp_path, client, services, db, api_server, monkeypatch):
    """Against the real API over loopback: reports past the gateway's per-minute limit are answered 429; the
    gateway marks nothing reported that the server did not keep, waits as told, then reports the rest."""
    monkeypatch.setattr(services.ingestion, "settings", services.settings.with_changes(gateway_uploads_per_min=2))
    gateway = paired_gateway(client, services, [SERIAL], key="patient_reports")
    buffer = RecordBuffer(tmp_path / "buffer.db")
    for n in range(250):  # three reports: 100, 100 and 50
        buffer.dead_letter_frame(SERIAL, b"\x01\x01" + n.to_bytes(2, "big"), "BadChecksum: crc does not match", n + 1)
    api = ApiClient(api_server.url, gateway.gateway_id, gateway.gateway_secret)
    waits: list[float] = []
    uploader = Uploader(buffer, api, sleep=waits.append)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=5)
    try:
        with time_machine.travel(start) as clock:  # the first drain within one minute's window
            uploader.drain(max_failures=2)  # two reports taken, the third refused twice
            assert len(buffer.dead_letters(unreported_only=True)) == 50
            assert db.gateway_dead_letters.count_documents({}) == 200
            assert len(waits) == 1 and 30 <= waits[0] <= 60, waits  # the server's Retry-After: the minute's rest
            clock.shift(waits[0])
            uploader.drain(max_failures=1)
    finally:
        api.close()
    assert buffer.dead_letters(unreported_only=True) == [] and uploader.progress.reported == 250
    assert db.gateway_dead_letters.count_documents({}) == 250
    buffer.close()
