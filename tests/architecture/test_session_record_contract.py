"""The session record is the one contract between the home gateway and the cloud: the gateway's
CapturedRecord (device_gateway/capture.py) is what the API's SessionRecordSchema accepts and what the
domain's rules (companion/domain/sessions.py) judge; the syncs the link notes (device_gateway/link.py), the
gateway's clock reading (device_gateway/clock.py), its dead-letter reports (device_gateway/uploader.py) and its
units' status (device_gateway/runner.py) are what the API's SyncSchema, GatewayClockSchema, DeadLetterSchema and
DeviceStatusBatchSchema accept. The two programs share no code, so
this pins them together: a field, an end reason or a clock status added on one side only fails here."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import UTC, datetime

from companion.api.ingestion import (
    DeadLetterSchema,
    DeviceStatusBatchSchema,
    GatewayClockSchema,
    SessionRecordSchema,
    SyncSchema,
)
from companion.domain import sessions as server_rules
from device_gateway import capture
from device_gateway.clock import GatewayClock
from device_gateway.profiles.companion_tens import (
    EndReason,
    SessionRecord,
    TransferSummary,
    ValueOutOfRange,
    encode_record,
)

RECEIVED = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


def _captured_record(end_reason: EndReason = EndReason.COMPLETED) -> SessionRecord:
    return SessionRecord(seq=41, device_started_at=int(RECEIVED.timestamp()) - 3600, duration_s=1800, programme=2,
                         frequency_hz=80, pulse_width_us=200, intensity_mean_dma=180, intensity_peak_dma=250,
                         end_reason=end_reason, battery_pct=64)


def _captured(end_reason: EndReason = EndReason.COMPLETED) -> capture.CapturedRecord:
    record = _captured_record(end_reason)
    return capture.capture("CTU-C0001", record, encode_record(record), offset_s=12.5, received_at=RECEIVED,
                           sync_id="0f3c2b1a9e8d7c6b5a4f3e2d1c0b9a88")


def test_the_gateway_sends_exactly_the_fields_the_api_accepts():
    sent = {f.name for f in fields(capture.CapturedRecord)}
    accepted = {name for name, field in SessionRecordSchema().fields.items() if not field.dump_only}
    assert sent == accepted


def test_every_end_reason_a_unit_reports_is_one_the_server_knows():
    assert {reason.label for reason in EndReason} == set(server_rules.END_REASONS)


def test_every_clock_status_the_gateway_assigns_is_one_the_server_knows():
    gateway = {capture.CLOCK_OK, capture.CLOCK_SKEWED, capture.CLOCK_RESET, capture.CLOCK_AHEAD}
    assert gateway == set(server_rules.CLOCK_STATUSES)


def test_a_captured_record_loads_through_the_api_schema_and_passes_the_server_rules():
    for reason in EndReason:
        loaded = SessionRecordSchema().load(_captured(reason).as_api_item())
        assert server_rules.identity_problem(loaded) is None, reason
        assert server_rules.clinical_findings(loaded) == [], reason


def test_a_record_whose_clock_offset_is_beyond_the_apis_limit_still_loads():
    # The unit's clock says 2105, the gateway's 1975 (it lost its time): the correction lands in the API's instants,
    # by an offset of 130 years the API refuses. Sent as it was, the record would be a dead letter for good.
    unit_reads, gateway_reads = datetime(2105, 6, 1, tzinfo=UTC), datetime(1975, 1, 1, tzinfo=UTC)
    record = replace(_captured_record(), device_started_at=int(unit_reads.timestamp()) - 3600)
    item = capture.capture("CTU-C0001", record, encode_record(record), (unit_reads - gateway_reads).total_seconds(),
                           gateway_reads, sync_id="0f3c2b1a9e8d7c6b5a4f3e2d1c0b9a88").as_api_item()
    assert SessionRecordSchema().validate(item) == {}
    too_far = capture.API_OFFSET_LIMIT_S + 1
    assert "clock_offset_s" in SessionRecordSchema().validate({**item, "clock_offset_s": too_far})


def test_the_record_id_the_gateway_assigns_is_the_one_the_server_requires():
    item = _captured().as_api_item()
    assert item["record_id"] == f"{item['device_serial']}:{item['device_seq']}"
    wrong = SessionRecordSchema().load({**item, "record_id": "CTU-C0001:7"})
    assert server_rules.identity_problem(wrong) is not None


def test_the_sequence_numbers_the_profile_allows_are_the_ones_the_api_accepts():
    item = _captured().as_api_item()
    for seq, allowed in ((0, False), (1, True), (2**32 - 1, True)):
        try:
            encode_record(replace(_captured_record(), seq=seq))
            encoded = True
        except ValueOutOfRange:
            encoded = False
        accepted = not SessionRecordSchema().validate({**item, "device_seq": seq, "record_id": f"CTU-C0001:{seq}"})
        assert (encoded, accepted) == (allowed, allowed), seq


def test_the_sync_the_link_notes_and_the_gateways_clock_reading_load_through_the_api_schemas():
    from device_gateway.clock import ServerClock
    from device_gateway.link import GatewayLink

    clock = GatewayClock()
    server_clock = ServerClock(clock)
    server_clock.observe(RECEIVED, clock.read(), clock.read())
    link = GatewayLink(None, [], clock=clock, server_clock=server_clock)  # type: ignore[arg-type]
    reading = clock.read()
    for set_to, vouched in ((None, None), (RECEIVED, server_clock.now())):
        item = link._sync_item("CTU-C0001", TransferSummary(41, 3), RECEIVED, reading, set_to, vouched, RECEIVED)
        loaded = SyncSchema().load(item)
        assert loaded["highest_seq"] == 41 and loaded["serial"] == "CTU-C0001"
    assert SyncSchema().load({**item, "unit_clock": None})["unit_clock"] is None  # an unreadable unit clock
    assert GatewayClockSchema().load(clock.read().as_api())["boot_id"] == reading.boot_id


def test_the_dead_letters_the_gateway_reports_load_through_the_api_schema(tmp_path):
    import httpx

    from device_gateway.buffer import RecordBuffer
    from device_gateway.uploader import Uploader

    buffer = RecordBuffer(tmp_path / "buffer.db")
    buffer.dead_letter_frame("CTU-C0001", b"\x01\x01garbage", "BadChecksum: crc 0x0000 does not match content", 1)
    buffer.record_missing("CTU-C0001", 3, 5)
    sent = []

    class Api:
        def post_dead_letters(self, items):
            sent.extend(items)
            return httpx.Response(200, json={"received": len(items), "new": len(items)})  # the API's answer

    Uploader(buffer, Api()).report_dead_letters()  # type: ignore[arg-type]
    assert [DeadLetterSchema().load(item)["source"] for item in sent] == ["unit", "unit"]
    buffer.close()


def test_the_unit_status_the_gateway_reports_loads_through_the_api_schema():
    import httpx

    from device_gateway.api import ApiClient
    from device_gateway.link import UnitStatus
    from device_gateway.runner import device_report

    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/gateway-token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        sent.append(json.loads(request.content))
        return httpx.Response(204)

    api = ApiClient("https://api.test", "gw-1", "s3cret", transport=httpx.MockTransport(answer))
    api.post_device_status([
        device_report(UnitStatus("CTU-C0001", battery_pct=64, firmware="1.4.2", last_seen_at=RECEIVED,
                                 last_seen_on_server_clock=on_server_clock), None)
        for on_server_clock in (True, False)])
    loaded = DeviceStatusBatchSchema().load(sent[0])
    assert [d["last_seen_clock"] for d in loaded["devices"]] == ["server", "gateway"]
    assert loaded["devices"][0]["last_seen_at"] == RECEIVED and loaded["gateway_clock"]["boot_id"]
