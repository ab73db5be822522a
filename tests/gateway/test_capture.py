"""Clock rules and record ids applied when the gateway captures a record (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from device_gateway.capture import (
    capture,
    clock_status,
    estimate_clock_offset,
    isoformat_utc,
    record_id_for,
)
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAIRED = datetime(2026, 1, 1, tzinfo=UTC)


def test_record_id_is_serial_and_sequence():
    assert record_id_for("CT-000001", 42) == "CT-000001:42"


def test_offset_is_measured_against_the_midpoint_of_the_read():
    offset = estimate_clock_offset(NOW + timedelta(hours=1), NOW - timedelta(seconds=1), NOW + timedelta(seconds=1))
    assert offset == 3600.0


@pytest.mark.parametrize(
    ("device_start", "offset_s", "expected"),
    [
        pytest.param(NOW - timedelta(hours=2), 0.0, "ok", id="in-sync"),
        pytest.param(NOW - timedelta(hours=5), -3 * 3600.0, "skewed", id="three-hours-behind"),
        pytest.param(NOW + timedelta(days=2), 2 * 86400.0, "skewed", id="two-days-ahead-but-corrected"),
        pytest.param(datetime(1970, 1, 1, 0, 5, tzinfo=UTC), -1.77e9, "reset", id="epoch-zero"),
        pytest.param(PAIRED - timedelta(days=1), 0.0, "reset", id="before-pairing"),
        pytest.param(NOW + timedelta(hours=3), 0.0, "ahead", id="future-although-clock-now-in-sync"),
    ],
)
def test_clock_status_flags_per_spec(device_start, offset_s, expected):
    assert clock_status(device_start, offset_s, NOW, PAIRED) == expected


def test_captured_record_keeps_raw_device_time_and_adds_corrected_time():
    record = simulated_session(5, int((NOW - timedelta(hours=1)).timestamp()) + 3600)
    item = capture("CT-1", record, encode_record(record), 3600.0, NOW, PAIRED)
    assert item.device_started_at == isoformat_utc(NOW)
    assert item.started_at == isoformat_utc(NOW - timedelta(hours=1))
    assert (item.clock_offset_s, item.clock_status, item.record_id) == (3600.0, "skewed", "CT-1:5")
    assert item.gateway_received_at == "2026-03-01T12:00:00.000Z"


def test_same_frame_always_has_the_same_content_hash():
    record = simulated_session(1, 1_760_000_000)
    frame = encode_record(record)
    assert capture("CT-1", record, frame, 0, NOW).content_hash == capture("CT-1", record, frame, 9, NOW).content_hash


@pytest.mark.parametrize(("unit_reads", "gateway_reads"), [
    (datetime(2105, 6, 1, tzinfo=UTC), datetime(1975, 1, 1, tzinfo=UTC)),  # a unit far ahead, a gateway in 1975
    (datetime(1970, 1, 2, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)),  # a unit reset to 1970, a gateway far ahead
])
def test_an_offset_beyond_what_the_api_takes_is_not_sent_even_when_the_corrected_start_would_be(unit_reads,
                                                                                             gateway_reads):
    record = simulated_session(5, int((unit_reads - timedelta(hours=1)).timestamp()))
    offset = (unit_reads - gateway_reads).total_seconds()
    assert abs(offset) > 100 * 365 * 86400  # beyond the API's limit, while the start it corrects to is in range
    item = capture("CT-1", record, encode_record(record), offset, gateway_reads, PAIRED)
    assert (item.clock_offset_s, item.started_at) == (0.0, item.device_started_at)
