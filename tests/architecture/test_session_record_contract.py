"""The session record is the one contract between the home gateway and the cloud: the gateway's
CapturedRecord (device_gateway/capture.py) is what the API's SessionRecordSchema accepts and what the
domain's rules (companion/domain/sessions.py) judge. The two programs share no code, so this pins them
together: a field, an end reason or a clock status added on one side only fails here."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

from companion.api.ingestion import SessionRecordSchema
from companion.domain import sessions as server_rules
from device_gateway import capture
from device_gateway.profiles.companion_tens import EndReason, SessionRecord, encode_record

RECEIVED = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


def _captured(end_reason: EndReason = EndReason.COMPLETED) -> capture.CapturedRecord:
    record = SessionRecord(seq=41, device_started_at=int(RECEIVED.timestamp()) - 3600, duration_s=1800, programme=2,
                           frequency_hz=80, pulse_width_us=200, intensity_mean_dma=180, intensity_peak_dma=250,
                           end_reason=end_reason, battery_pct=64)
    return capture.capture("CTU-C0001", record, encode_record(record), offset_s=12.5, received_at=RECEIVED)


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
        assert server_rules.check_record(loaded, received_at=RECEIVED).ok, reason


def test_the_record_id_the_gateway_assigns_is_the_one_the_server_requires():
    item = _captured().as_api_item()
    assert item["record_id"] == f"{item['device_serial']}:{item['device_seq']}"
    wrong = SessionRecordSchema().load({**item, "record_id": "CTU-C0001:7"})
    assert not server_rules.check_record(wrong, received_at=RECEIVED).ok
