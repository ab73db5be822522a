"""Uploading buffered records: per-item results, dead letters, batches, backoff and Retry-After, and an
upload loop that outlives any single error (5xx or a malformed answer while renewing the token, a malformed
answer to a batch, a full disk while deleting acknowledged records, a refused token, a bug)."""

import logging
import random
import sqlite3
from contextlib import closing
from datetime import UTC, datetime

import pytest

from device_gateway.api import REVOKED_AFTER_REFUSALS, REVOKED_AFTER_S, ApiClient, CredentialsRevoked, pair
from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.health import UPLOAD
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session
from device_gateway.uploader import (
    BACKOFF_CAP_S,
    RETRY_AFTER_CAP_S,
    Uploader,
    backoff_delay,
    item_results,
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
    """An uploader whose injected sleep also moves the API client's clock, so waits count as time passing."""
    clients = []

    def build(buffer=buffer, **kwargs):
        clock = {"now": 0.0}
        sleeps = []

        def sleep(delay: float) -> None:
            sleeps.append(delay)
            clock["now"] += delay

        api = ApiClient(stub.url, "gw-1", "s3cret", clock=lambda: clock["now"])
        clients.append(api)
        uploader = Uploader(buffer, api, sleep=sleep, rng=random.Random(7), **kwargs)
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


def test_a_refusal_from_in_front_of_the_api_keeps_every_record_queued(stub, buffer, make_uploader):
    fill(buffer, 12)
    # A firewall or proxy blocking this home for a while: an HTML page, not the API's problem details.
    stub.answer_hook = lambda records: (403, {"Content-Type": "text/html"}, b"<html>Access denied</html>")
    uploader, sleeps = make_uploader()

    uploader.drain(max_failures=3)

    assert buffer.pending_count() == 12 and buffer.dead_letters() == [] and len(sleeps) == 2
    stub.answer_hook = None  # it lets the home through again
    uploader.drain()
    assert buffer.pending_count() == 0 and len(stub.stored) == 12


def test_expired_token_is_renewed_once_and_the_upload_continues(stub, buffer, make_uploader):
    fill(buffer, 2)
    uploader, _ = make_uploader()
    uploader.api.post_device_status([])
    stub.valid_token = stub.issued_token = "token-2"

    uploader.drain()

    assert stub.tokens_issued == 2 and len(stub.stored) == 2


def test_token_refused_right_after_renewal_is_retried_not_taken_for_revoked_credentials(stub, buffer, make_uploader):
    fill(buffer, 1)
    stub.issued_token = "refused-by-the-records-endpoint"
    uploader, sleeps = make_uploader()

    uploader.drain(max_failures=4)

    assert stub.tokens_issued == 8 and len(sleeps) == 3 and buffer.pending_count() == 1
    assert "refused with 401 after a fresh token" in uploader.health.loops[UPLOAD].last_error


def test_a_refused_token_renewal_is_retried_and_the_upload_resumes(stub, buffer, make_uploader):
    fill(buffer, 3)
    stub.token_scripted = [(401, {}, {"title": "Unauthorized"})]
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert len(sleeps) == 1 and len(stub.stored) == 3 and buffer.pending_count() == 0
    upload = uploader.health.loops[UPLOAD]
    assert not upload.failing and upload.last_error == "ApiAuthError: gateway token: credentials refused (HTTP 401)"


def test_credentials_refused_at_every_renewal_for_a_minute_end_the_drain_as_revoked(stub, buffer, make_uploader):
    fill(buffer, 2)
    stub.refuse_tokens = True
    uploader, sleeps = make_uploader()

    with pytest.raises(CredentialsRevoked, match="times in a row over"):
        uploader.drain()

    assert stub.token_requests >= REVOKED_AFTER_REFUSALS and sum(sleeps) >= REVOKED_AFTER_S
    assert buffer.pending_count() == 2 and stub.batches == []


def test_a_proxy_refusing_the_token_for_minutes_is_an_outage_not_revoked_credentials(stub, buffer, make_uploader):
    fill(buffer, 2)
    stub.token_scripted = [(403, {"Content-Type": "text/html"}, b"<html>Request blocked</html>")] * 10
    uploader, sleeps = make_uploader()

    uploader.drain()  # no CredentialsRevoked: the gateway would exit 77 and never be restarted

    assert sum(sleeps) >= REVOKED_AFTER_S and stub.token_requests == 11
    assert sorted(stub.stored) == [rid(1), rid(2)] and buffer.pending_count() == 0


def test_a_retry_after_date_read_on_a_clock_years_behind_parks_the_uploads_for_an_hour_at_most():
    assert backoff_delay(1, random.Random(1), retry_after_s=56 * 365 * 86400.0) == RETRY_AFTER_CAP_S == 3600


def test_503_while_renewing_the_token_is_retried_after_retry_after_and_the_upload_resumes(stub, buffer, make_uploader):
    fill(buffer, 4)
    stub.token_scripted = [(503, {"Retry-After": "17"}, {"title": "Service Unavailable"})] * 2
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert len(sleeps) == 2 and min(sleeps) >= 17
    assert sorted(stub.stored) == [rid(n) for n in range(1, 5)] and buffer.pending_count() == 0
    upload = uploader.health.loops[UPLOAD]
    assert (upload.failing, upload.last_error) == (False, "RetryLater: token renewal: HTTP 503")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param((200, {}, b"<html>upstream timed out</html>"), id="not-json"),
        pytest.param((200, {}, {"token": "nope"}), id="no-access-token"),
    ],
)
def test_malformed_answer_while_renewing_the_token_is_retried_and_the_upload_resumes(
    stub, buffer, make_uploader, answer
):
    fill(buffer, 3)
    stub.token_scripted = [answer]
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert len(sleeps) == 1 and len(stub.stored) == 3 and buffer.pending_count() == 0
    assert "token renewal: malformed answer" in uploader.health.loops[UPLOAD].last_error


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>Bad gateway</html>", id="not-json"),
        pytest.param({"results": "all good"}, id="results-not-a-list"),
        pytest.param(["created"], id="not-an-object"),
    ],
)
def test_malformed_answer_to_a_batch_keeps_its_records_queued_and_they_are_delivered_once(
    stub, buffer, make_uploader, body
):
    fill(buffer, 5)
    queued_during_failure = []
    stub.scripted = [lambda records: (200, {}, body)]
    uploader, sleeps = make_uploader()
    uploader.sleep = lambda delay: (sleeps.append(delay), queued_during_failure.append(buffer.pending_count()))

    uploader.drain()

    assert queued_during_failure == [5]
    assert sorted(stub.stored) == [rid(n) for n in range(1, 6)] and buffer.pending_count() == 0
    assert "malformed answer from the API" in uploader.health.loops[UPLOAD].last_error


def test_answer_that_settles_none_of_the_batch_backs_off_instead_of_resending_at_once(stub, buffer, make_uploader):
    fill(buffer, 3)
    stub.scripted = [lambda records: (200, {}, {"results": [{"record_id": 7, "status": "created"}]})]
    uploader, sleeps = make_uploader()

    uploader.drain()

    assert len(sleeps) == 1 and len(stub.batches) == 2
    assert len(stub.stored) == 3 and buffer.pending_count() == 0


class DiskFullOnDelete(RecordBuffer):
    """The real buffer, except that deleting acknowledged records fails as SQLite does on a full disk."""

    failures_left = 2

    def mark_sent(self, record_ids):
        if self.failures_left:
            self.failures_left -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().mark_sent(record_ids)


def test_full_disk_while_deleting_acknowledged_records_keeps_them_until_the_delete_succeeds(
    stub, tmp_path, make_uploader
):
    buffer = DiskFullOnDelete(tmp_path / "full.db")
    fill(buffer, 6)
    queued_during_failure = []
    uploader, sleeps = make_uploader(buffer=buffer)
    uploader.sleep = lambda delay: (sleeps.append(delay), queued_during_failure.append(buffer.pending_count()))

    uploader.drain()

    assert queued_during_failure == [6, 6]
    assert sorted(stub.stored) == [rid(n) for n in range(1, 7)] and buffer.pending_count() == 0
    assert len(stub.batches) == 3, "the batch is sent again; the API answers its records as duplicates"
    upload = uploader.health.loops[UPLOAD]
    assert (upload.failing, upload.last_error) == (False, "OperationalError: database or disk is full")
    buffer.close()


class FailsOnceWithContent(RecordBuffer):
    """A bug whose message carries session content: the log and the health must not repeat it."""

    failed = False

    def pending(self, limit):
        if not self.failed:
            self.failed = True
            raise ValueError("intensity_mean_ma=37.219 out of range")
        return super().pending(limit)


def test_unexpected_error_is_logged_by_type_and_place_without_its_message_and_the_upload_resumes(
    stub, tmp_path, make_uploader, caplog
):
    buffer = FailsOnceWithContent(tmp_path / "bug.db")
    fill(buffer, 2)
    uploader, sleeps = make_uploader(buffer=buffer)

    with caplog.at_level(logging.INFO):
        uploader.drain()

    assert len(sleeps) == 1 and len(stub.stored) == 2
    assert "37.219" not in caplog.text and "ValueError at test_uploader.py:" in caplog.text
    assert uploader.health.loops[UPLOAD].last_error.startswith("ValueError at test_uploader.py:")
    buffer.close()


def test_item_results_keep_only_items_with_a_record_id_and_a_status():
    body = {"results": [{"record_id": "a", "status": "created"}, {"record_id": 1, "status": "created"},
                        {"record_id": "b"}, "c", {"record_id": "d", "status": ["created"]}]}
    assert item_results(body) == [{"record_id": "a", "status": "created"}]


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


def test_a_stored_record_that_no_longer_opens_is_dead_lettered_and_the_others_are_uploaded(
    stub, tmp_path, make_uploader
):
    buffer = RecordBuffer(tmp_path / "buffer.db")
    fill(buffer, 5)
    with closing(sqlite3.connect(tmp_path / "buffer.db")) as raw, raw:
        sealed = raw.execute("SELECT sealed FROM records WHERE device_seq = 2").fetchone()[0]
        raw.execute("UPDATE records SET sealed = ? WHERE device_seq = 2", (sealed[:-1] + bytes([sealed[-1] ^ 1]),))
    uploader, sleeps = make_uploader(buffer=buffer)

    uploader.drain()

    assert sorted(stub.stored) == [rid(n) for n in (1, 3, 4, 5)] and buffer.pending_count() == 0 and sleeps == []
    [dead] = buffer.dead_letters()
    assert (dead["record_id"], dead["source"]) == (rid(2), "buffer")
    assert dead["reason"].startswith("stored content unreadable: sealed field does not open")
    buffer.close()


def test_a_record_the_server_discards_leaves_the_queue_and_is_not_dead_lettered(stub, buffer, make_uploader):
    """'discarded': recorded while the unit was worn by a patient whose record has since been deleted; the
    server keeps it for nobody, and the gateway has nothing more to do with it."""
    fill(buffer, 3)
    stub.answer_hook = lambda records: (200, {}, {"results": [
        {"record_id": r["record_id"], "status": "discarded", "reason": "worn by an erased patient"}
        for r in records]})
    uploader, _ = make_uploader()
    uploader.drain(max_failures=2)
    assert buffer.pending_count() == 0 and buffer.dead_letters() == []
