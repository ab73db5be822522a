"""Uploading buffered records: per-item results, dead letters, batches, backoff and Retry-After."""

import random
from datetime import UTC, datetime

import pytest

from device_gateway.api import ApiAuthError, ApiClient, pair
from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session
from device_gateway.uploader import (
    BACKOFF_CAP_S,
    Uploader,
    backoff_delay,
    parse_retry_after,
)

SERIAL = "CT-000001"


def rid(seq: int) -> str:
    return f"{SERIAL}:{seq}"


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    yield buf
    buf.close()


def fill(buffer: RecordBuffer, count: int) -> None:
    items = []
    for seq in range(1, count + 1):
        record = simulated_session(seq, 1_760_000_000 + seq * 600)
        items.append(capture(SERIAL, record, encode_record(record), 0.0, datetime(2026, 1, 1, tzinfo=UTC)))
    buffer.store(SERIAL, items)


@pytest.fixture
def make_uploader(stub, buffer):
    clients = []

    def build(**kwargs):
        api = ApiClient(stub.url, "gw-1", "s3cret")
        clients.append(api)
        sleeps = []
        uploader = Uploader(buffer, api, sleep=sleeps.append, rng=random.Random(7), **kwargs)
        return uploader, sleeps

    yield build
    for client in clients:
        client.close()


def service_unavailable(retry_after: str | None = None):
    headers = {"Retry-After": retry_after} if retry_after else {}
    return lambda records: (503, headers, {"title": "Service Unavailable"})


def test_created_and_duplicate_leave_the_queue_and_rejected_is_dead_lettered(stub, buffer, make_uploader):
    fill(buffer, 8)
    stub.stored[rid(2)] = {}
    stub.reject[rid(3)] = "device time more than 5 min in the future"
    uploader, _ = make_uploader()

    uploader.drain()

    assert buffer.pending_count() == 0
    assert [(d["record_id"], d["reason"]) for d in buffer.dead_letters()] == [
        (rid(3), "device time more than 5 min in the future")
    ]
    assert (uploader.progress.sent, uploader.progress.dead_lettered) == (7, 1)


def test_rejected_record_is_sent_once_and_never_retried(stub, buffer, make_uploader):
    fill(buffer, 5)
    stub.reject[rid(3)] = "invalid"
    uploader, _ = make_uploader()

    uploader.drain()
    uploader.drain()

    assert sum(batch.count(rid(3)) for batch in stub.batches) == 1


def test_record_without_a_result_stays_queued_and_is_delivered_later(stub, buffer, make_uploader):
    fill(buffer, 8)
    stub.omit.add(rid(7))
    uploader, _ = make_uploader()

    uploader.upload_batch()
    assert [p.record_id for p in buffer.pending(10)] == [rid(7)]

    stub.omit.clear()
    uploader.drain()
    assert buffer.pending_count() == 0 and rid(7) in stub.stored


def test_backlog_goes_up_in_batches_of_at_most_500(stub, buffer, make_uploader):
    fill(buffer, 1234)
    uploader, _ = make_uploader()

    uploader.drain()

    assert [len(batch) for batch in stub.batches] == [500, 500, 234]
    assert len(stub.stored) == 1234 and buffer.pending_count() == 0


def test_503_keeps_records_queued_and_backs_off_until_the_server_recovers(stub, buffer, make_uploader):
    fill(buffer, 4)
    stub.scripted = [service_unavailable()] * 5
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert len(sleeps) == 5
    assert all(0 <= delay <= min(BACKOFF_CAP_S, 2 ** n) for n, delay in enumerate(sleeps))
    assert len(stub.stored) == 4 and buffer.pending_count() == 0


def test_half_hour_outage_follows_the_backoff_envelope_and_recovery_drains_in_batches_of_500(
    stub, buffer, make_uploader
):
    outage_s, retry_after_s = 30 * 60, 120
    fill(buffer, 1234)
    clock = {"now": 0.0}
    attempts: list[float] = []

    def unavailable_for_half_an_hour(records):
        attempts.append(clock["now"])
        if clock["now"] >= outage_s:
            return None
        headers = {"Retry-After": str(retry_after_s)} if clock["now"] >= outage_s / 2 else {}
        return 503, headers, {"title": "Service Unavailable"}

    def advance(delay: float) -> None:
        clock["now"] += delay

    stub.answer_hook = unavailable_for_half_an_hour
    uploader, _ = make_uploader()
    uploader.sleep = advance

    uploader.drain()

    failed = [t for t in attempts if t < outage_s]
    gaps = [later - earlier for earlier, later in zip(failed, failed[1:] + [attempts[len(failed)]], strict=True)]
    for failures, (at, gap) in enumerate(zip(failed, gaps, strict=True), start=1):
        ceiling = min(BACKOFF_CAP_S, 2 ** (failures - 1))
        if at < outage_s / 2:
            assert 0 <= gap <= ceiling
        else:
            assert retry_after_s <= gap <= max(ceiling, retry_after_s)
    assert any(gap < min(BACKOFF_CAP_S, 2 ** n) / 2 for n, gap in enumerate(gaps)), "full jitter, not a fixed ladder"
    assert max(gaps) > 64 and 10 <= len(failed) <= 40
    after_recovery = stub.batches[len(failed):]
    assert [len(batch) for batch in after_recovery] == [500, 500, 234]
    assert len(stub.stored) == 1234 and buffer.pending_count() == 0


def test_429_retry_after_is_honoured(stub, buffer, make_uploader):
    fill(buffer, 3)
    stub.scripted = [lambda records: (429, {"Retry-After": "42"}, {"title": "Too Many Requests"})]
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert sleeps[0] >= 42
    assert len(stub.stored) == 3


def test_unreachable_api_keeps_everything_queued(buffer, make_uploader, stub):
    fill(buffer, 3)
    stub.stop()
    uploader, sleeps = make_uploader()

    uploader.drain(max_failures=3)

    assert buffer.pending_count() == 3 and len(sleeps) == 2
    assert buffer.dead_letters() == []


def test_batch_refused_as_a_whole_is_split_until_only_the_culprit_is_dead_lettered(stub, buffer, make_uploader):
    fill(buffer, 10)
    stub.poison.add(rid(6))
    uploader, _ = make_uploader()

    uploader.drain()

    assert [d["record_id"] for d in buffer.dead_letters()] == [rid(6)]
    assert "422" in buffer.dead_letters()[0]["reason"]
    assert set(stub.stored) == {rid(n) for n in range(1, 11)} - {rid(6)}


def test_expired_token_is_renewed_once_and_the_upload_continues(stub, buffer, make_uploader):
    fill(buffer, 2)
    uploader, _ = make_uploader()
    uploader.api.post_device_status([])
    stub.valid_token = stub.issued_token = "token-2"

    uploader.drain()

    assert stub.tokens_issued == 2 and len(stub.stored) == 2


def test_credentials_refused_after_renewal_raise_auth_error(stub, buffer, make_uploader):
    fill(buffer, 1)
    stub.issued_token = "revoked"
    uploader, _ = make_uploader()

    with pytest.raises(ApiAuthError):
        uploader.drain()
    assert stub.tokens_issued == 2 and buffer.pending_count() == 1


def test_progress_callback_reports_what_remains(stub, buffer, make_uploader):
    fill(buffer, 12)
    seen = []
    uploader, _ = make_uploader(batch_size=5, progress=lambda p: seen.append((p.sent, p.remaining)))

    uploader.drain()

    assert seen == [(5, 7), (10, 2), (12, 0)]


def test_pairing_returns_the_gateway_credentials(stub):
    pairing = pair(stub.url, "ABC-123", "kitchen gateway")
    assert (pairing.gateway_id, pairing.gateway_secret, pairing.device_serials) == ("gw-1", "s3cret", ["CT-000001"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), (None, None), ("soon", None), ("Wed, 01 Jan 2031 00:00:30 GMT", 30.0)],
)
def test_retry_after_accepts_seconds_and_http_dates(header, expected):
    assert parse_retry_after(header, now=datetime(2031, 1, 1, tzinfo=UTC)) == expected


def test_backoff_is_capped_at_five_minutes_and_never_below_retry_after():
    rng = random.Random(1)
    assert all(0 <= backoff_delay(n, rng) <= BACKOFF_CAP_S for n in range(1, 40))
    assert backoff_delay(1, rng, retry_after_s=30) >= 30
