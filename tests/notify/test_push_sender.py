"""PushSender against the loopback FCM emulator, through the real firebase-admin."""

from __future__ import annotations

import uuid
import warnings
from datetime import timedelta

import pytest
from firebase_admin import messaging

from companion.domain.notifications import collapse_key_for, texts_for, ttl_for
from companion.notify.push import Address, Outcome, PushItem, PushSender, TransportRetry, build_message
from tests.notify.clock import T0
from tests.notify.test_notification_templates import EXPECTED, snapshot_row

WINDOW = timedelta(hours=1)


def item(token: str, *, kind: str = "therapy_reminder", expires_at=T0 + WINDOW, attempt: int = 1,
         address: Address = Address.TOKEN) -> PushItem:
    return PushItem(outbox_id=f"ob-{token}", token=token, kind=kind, expires_at=expires_at,
                    collapse_key=f"therapy_reminder-{token}", attempt=attempt, address=address)


def test_1234_messages_go_out_in_send_each_calls_of_500_500_234(sender, emulator, clock):
    # send_each is synchronous, so the request count FCM has seen each time the sender reads its
    # clock (before and after every chunk) marks the chunk boundaries.
    seen_at_clock_reads = []
    clock.on_read = lambda: seen_at_clock_reads.append(len(emulator.requests))
    results = sender.send([item(f"phone-{n}") for n in range(1234)])
    assert sorted(set(seen_at_clock_reads)) == [0, 500, 1000, 1234]
    assert [r.outcome for r in results] == [Outcome.SENT] * 1234
    assert len({d.token for d in emulator.deliveries}) == 1234


def test_sent_result_carries_fcm_message_name(sender, emulator):
    [result] = sender.send([item("phone-a")])
    assert result.message_name == emulator.deliveries[0].name


@pytest.mark.parametrize("fault", ["UNREGISTERED", "INVALID_TOKEN"])
def test_dead_token_is_reported_and_the_patients_other_phones_still_get_the_message(sender, emulator, fault):
    emulator.script(fault, token="phone-2")
    results = sender.send([item("phone-1"), item("phone-2"), item("phone-3")])
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.TOKEN_DEAD, Outcome.SENT]
    assert {d.token for d in emulator.deliveries} == {"phone-1", "phone-3"}


def test_a_sender_id_mismatch_fails_and_keeps_the_token_for_it_may_be_our_setup(sender, emulator, caplog):
    # Every token answers SENDER_ID_MISMATCH when the server runs with another project's credentials: pruning
    # on it would forget every patient's phone after one misconfigured deploy.
    emulator.script("SENDER_ID_MISMATCH", token="phone-2")
    [result] = sender.send([item("phone-2")])
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "SENDER_ID_MISMATCH")
    assert any("SENDER_ID_MISMATCH" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


@pytest.mark.parametrize("fault", ["BAD_GATEWAY", "GATEWAY_TIMEOUT"])
def test_a_gateway_error_in_front_of_fcm_is_retried_not_lost(sender, emulator, fault):
    # The transport retries it first; after those, it is scheduled again, never marked failed.
    emulator.script(fault, token="phone-1", times=50)
    [result] = sender.send([item("phone-1")])
    assert result.outcome is Outcome.RETRY and result.retry_at is not None


def test_dead_token_result_names_fcm_error_code(sender, emulator):
    emulator.script("UNREGISTERED", token="phone-2")
    [result] = sender.send([item("phone-2")])
    assert (result.error_code, result.retry_at) == ("UNREGISTERED", None)


def test_dead_token_is_not_retried(sender, emulator):
    emulator.script("UNREGISTERED", token="phone-2")
    sender.send([item("phone-2")])
    assert emulator.hits_for("phone-2") == 1


def test_invalid_argument_about_the_payload_fails_without_killing_the_token(sender, emulator):
    emulator.script("INVALID_PAYLOAD", token="phone-1")
    [result] = sender.send([item("phone-1")])
    assert (result.outcome, result.error_code) == (Outcome.FAILED, "INVALID_ARGUMENT")


def test_503_burst_is_retried_by_firebase_admin_itself_and_delivered(emulator, service_account, clock):
    # firebase-admin's default transport retries (4, backoff 0.5 s): a burst of 2 costs about 1 s.
    sender = PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"push-{uuid.uuid4()}",
                        transport_retry=TransportRetry(), clock=clock)
    try:
        emulator.script("UNAVAILABLE", times=2)
        [result] = sender.send([item("phone-1")])
    finally:
        sender.close()
    assert (result.outcome, emulator.hits_for("phone-1")) == (Outcome.SENT, 3)


def test_persistent_503_uses_up_transport_retries_then_is_scheduled_for_retry(sender, emulator, clock):
    emulator.script("UNAVAILABLE", token="phone-1")
    [result] = sender.send([item("phone-1")])
    assert (result.outcome, result.error_code, emulator.hits_for("phone-1")) == (Outcome.RETRY, "UNAVAILABLE", 5)
    assert T0 + timedelta(seconds=10) <= result.retry_at <= T0 + timedelta(seconds=20)


def test_internal_error_is_scheduled_for_retry(sender, emulator):
    emulator.script("INTERNAL", token="phone-1")
    [result] = sender.send([item("phone-1")])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "INTERNAL")


def test_429_is_not_retried_in_transport_and_waits_at_least_retry_after(sender, emulator):
    emulator.script("QUOTA_EXCEEDED", token="phone-1", retry_after=120)
    [result] = sender.send([item("phone-1")])
    assert (result.outcome, result.error_code, emulator.hits_for("phone-1")) == (
        Outcome.RETRY, "QUOTA_EXCEEDED", 1)
    assert result.retry_at >= T0 + timedelta(seconds=120)


def test_retryable_failure_on_the_last_attempt_of_a_kind_without_a_window_is_final(sender, emulator):
    # Was attempt 3 of a therapy reminder: reminders are now retried while their window is open (below), and
    # only the kinds with a lifetime rather than a window (alerts, summaries) stop after 10 attempts.
    emulator.script("QUOTA_EXCEEDED", token="phone-1", retry_after=1)
    [result] = sender.send([item("phone-1", kind="caregiver_low_adherence", attempt=10)])
    assert (result.outcome, result.error_code, result.retry_at) == (Outcome.FAILED, "QUOTA_EXCEEDED", None)


@pytest.mark.parametrize("kind", ["therapy_reminder", "reminder_repeat", "planned_reminder", "practice_nudge"])
def test_a_reminder_is_retried_while_its_window_is_open_however_many_attempts_failed(sender, emulator, kind):
    emulator.script("QUOTA_EXCEEDED", token="phone-1", retry_after=1)
    [result] = sender.send([item("phone-1", kind=kind, attempt=40)])
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "QUOTA_EXCEEDED")
    assert T0 + timedelta(seconds=1) <= result.retry_at <= T0 + timedelta(minutes=5)


def test_retry_that_would_land_after_the_ttl_is_expired(sender, emulator):
    emulator.script("QUOTA_EXCEEDED", token="phone-1", retry_after=600)
    [result] = sender.send([item("phone-1", expires_at=T0 + timedelta(minutes=5))])
    assert result.outcome is Outcome.EXPIRED


def test_message_past_its_ttl_is_expired_and_never_sent(sender, emulator, clock):
    clock.advance(WINDOW)
    results = sender.send([item("phone-1"), item("phone-2", expires_at=T0 + 2 * WINDOW)])
    assert [r.outcome for r in results] == [Outcome.EXPIRED, Outcome.SENT]
    assert emulator.hits_for("phone-1") == 0


def test_ttl_sent_to_fcm_is_what_remains_of_the_window(sender, emulator, clock):
    clock.advance(timedelta(minutes=20))
    sender.send([item("phone-1")])
    android = emulator.deliveries[0].body["message"]["android"]
    assert android["ttl"] == "2400s"


def test_building_a_message_for_a_registration_token_raises_no_deprecation_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = build_message(item("phone-1"), T0)
    assert (message.token, message.fid) == ("phone-1", None)


def test_installation_id_goes_out_as_fid(sender, emulator):
    sender.send([item("fid-1", address=Address.FID)])
    message = emulator.deliveries[0].body["message"]
    assert (message.get("fid"), "token" in message) == ("fid-1", False)


def test_fcm_url_applies_only_to_the_sender_app(sender):
    assert messaging._MessagingService.FCM_URL.startswith("https://fcm.googleapis.com/")


def test_one_notification_to_three_phones_is_answered_per_phone(sender, emulator):
    emulator.script("UNREGISTERED", token="phone-2")
    phones = [PushItem(outbox_id="ob-1", token=f"phone-{n}", kind="therapy_reminder", expires_at=T0 + WINDOW,
                       collapse_key="k") for n in (1, 2, 3)]
    assert [r.outcome for r in sender.send(phones)] == [Outcome.SENT, Outcome.TOKEN_DEAD, Outcome.SENT]


def test_fcm_url_may_name_the_project_placeholder_as_the_run_script_does(emulator, service_account, clock):
    sender = PushSender(service_account, fcm_url=emulator.url + "/v1/projects/{project_id}/messages:send",
                        app_name=f"push-{uuid.uuid4()}", clock=clock)
    try:
        [result] = sender.send([item("phone-1")])
    finally:
        sender.close()
    assert result.message_name.startswith("projects/companion-local/messages/")


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_reaches_fcm_with_its_priority_ttl_collapse_label_and_loc_keys(sender, emulator, kind):
    """What FCM receives on the wire for each kind, sent by the real firebase-admin: the snapshot row of
    test_notification_templates (texts, Android priority, APNs priority and interruption level, data kind,
    analytics label, TTL) plus the collapse key on both platforms, APNs push type and expiry, loc keys."""
    ttl = ttl_for(kind)
    key = collapse_key_for(kind, "patient-1")
    token = f"wire-{kind}"
    [result] = sender.send([PushItem(outbox_id="ob-1", token=token, kind=kind, expires_at=T0 + ttl,
                                     collapse_key=key, locales=("en-GB",), zone="Europe/London",
                                     planned_at=T0 - timedelta(minutes=5))])
    assert result.outcome is Outcome.SENT
    (delivery,) = emulator.delivered_to(token)
    message = delivery.body["message"]
    assert snapshot_row(message) == EXPECTED[kind]
    android, apns = message["android"], message["apns"]
    assert android["collapse_key"] == apns["headers"]["apns-collapse-id"] == key
    assert apns["headers"]["apns-push-type"] == "alert"
    assert apns["headers"]["apns-expiration"] == str(int((T0 + ttl).timestamp()))
    title, body = texts_for(kind, has_time=True)
    assert android["notification"]["title_loc_key"] == apns["payload"]["aps"]["alert"]["title-loc-key"] == title.loc_key
    assert android["notification"]["body_loc_key"] == apns["payload"]["aps"]["alert"]["loc-key"] == body.loc_key
    args = android["notification"].get("body_loc_args", [])
    assert args == apns["payload"]["aps"]["alert"].get("loc-args", []) == (["11:55"] if body.arguments else [])
