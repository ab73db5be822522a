"""The push outbox and its dispatcher against the real database and the FCM emulator."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest

from companion.domain.alerts import AlertKind
from companion.domain.notifications import TEMPLATES, caregiver_kind, ttl_for
from companion.notify.push import PushSender, TransportRetry
from companion.services.notifications import DeliveryConsent
from companion.services.push_delivery import CLAIMS_KEPT, OutboxDispatcher
from companion.store.outbox import Outbox
from companion.store.push_tokens import PushTokens
from companion.store.stores import Stores
from tests.notify.clock import T0

LEASE = timedelta(minutes=5)


@pytest.fixture
def outbox(store_db, clock):
    return Outbox(store_db, clock=clock)


@pytest.fixture
def tokens(store_db, clock):
    return PushTokens(store_db, clock=clock)


@pytest.fixture
def dispatcher(outbox, tokens, sender):
    return OutboxDispatcher(outbox, tokens, sender, owner="worker-1", lease=LEASE)


def remind(outbox, user="u-1", source="reminder:r-1:2026-03-09T12:00", send_at=T0, **kw):
    doc, _ = outbox.schedule(source_key=source, recipient_user_id=user, patient_id=user,
                             kind=kw.pop("kind", "therapy_reminder"), send_at=send_at, **kw)
    return doc


def delivered_ids(emulator) -> Counter:
    return Counter(d.body["message"]["data"]["notification_id"] for d in emulator.deliveries)


def test_scheduling_the_same_occurrence_twice_creates_one_notification(outbox, store_db):
    first, created = outbox.schedule(source_key="reminder:r-1:x", recipient_user_id="u-1", patient_id="u-1",
                                     kind="therapy_reminder", send_at=T0)
    again, created_again = outbox.schedule(source_key="reminder:r-1:x", recipient_user_id="u-1",
                                           patient_id="u-1", kind="therapy_reminder", send_at=T0)
    assert (created, created_again, again["_id"]) == (True, False, first["_id"])
    assert store_db.push_outbox.count_documents({}) == 1


def test_notification_expires_when_its_completion_window_ends(outbox):
    doc = remind(outbox, completion_window=timedelta(minutes=30))
    assert doc["expires_at"] == T0 + timedelta(minutes=30)


def test_due_notification_is_pushed_and_marked_sent_with_fcm_message_name(outbox, tokens, dispatcher, emulator):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox)
    dispatcher.run_once()
    [attempt] = outbox.attempts_of(doc["_id"])
    assert (outbox.get(doc["_id"])["state"], attempt["phones"][0]["message_name"]) == (
        "sent", emulator.deliveries[0].name)


def test_notification_not_yet_due_stays_scheduled(outbox, tokens, dispatcher, emulator):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox, send_at=T0 + timedelta(minutes=1))
    dispatcher.run_once()
    assert (outbox.get(doc["_id"])["state"], len(emulator.requests)) == ("scheduled", 0)


def test_three_phones_one_dead_two_get_it_and_the_dead_token_is_removed(outbox, tokens, dispatcher, emulator):
    for n in range(3):
        tokens.register("u-1", f"phone-{n}", f"tok-{n}", "android")
    emulator.script("UNREGISTERED", token="tok-1")
    doc = remind(outbox)
    dispatcher.run_once()
    assert sorted(d.token for d in emulator.deliveries) == ["tok-0", "tok-2"]
    assert sorted(p["token"] for p in tokens.for_users(["u-1"])["u-1"]) == ["tok-0", "tok-2"]
    assert outbox.get(doc["_id"])["state"] == "sent"


def test_retryable_failure_waits_for_its_retry_time_then_is_sent(outbox, tokens, dispatcher, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    emulator.script("QUOTA_EXCEEDED", token="tok-a", times=1, retry_after=60)
    doc = remind(outbox)
    dispatcher.run_once()
    waiting = outbox.get(doc["_id"])
    assert (waiting["state"], waiting["attempts"], waiting["not_before"] >= T0 + timedelta(seconds=60)) == (
        "scheduled", 1, True)
    dispatcher.run_once()
    assert emulator.hits_for("tok-a") == 1
    clock.now = waiting["not_before"]
    dispatcher.run_once()
    assert (outbox.get(doc["_id"])["state"], outbox.get(doc["_id"])["attempts"]) == ("sent", 2)


def _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator) -> dict:
    """A reminder to a phone and a tablet: the tablet gets it, the phone answers 429 once (retry in 60 s)."""
    tokens.register("u-1", "phone", "tok-phone", "android")
    tokens.register("u-1", "tablet", "tok-tablet", "android")
    emulator.script("QUOTA_EXCEEDED", token="tok-phone", times=1, retry_after=60)
    doc = remind(outbox)
    # Not final (the phone is still owed it), but counted sent: a phone has it, and it is never counted sent again.
    assert dispatcher.run_once().states == {"sent": 1}
    return outbox.get(doc["_id"])


def test_a_phone_that_answered_not_now_is_retried_after_the_other_phone_got_it(
        outbox, tokens, dispatcher, emulator, clock):
    waiting = _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator)
    assert (waiting["state"], waiting["pending_phones"], waiting["sent_at"]) == ("scheduled", ["phone"], T0)
    assert outbox.count_unfinished() == 1
    tokens.register("u-1", "new-phone", "tok-new", "android")  # registered after the first send
    clock.now = waiting["not_before"]
    assert dispatcher.run_once().states == {}  # counted sent in the round the tablet got it
    final = outbox.get(doc_id := waiting["_id"])
    assert (final["state"], final["attempts"], final["sent_at"], "pending_phones" in final) == ("sent", 2, T0, False)
    assert sorted(d.token for d in emulator.deliveries) == ["tok-phone", "tok-tablet"]  # each once
    assert (emulator.hits_for("tok-tablet"), emulator.hits_for("tok-new")) == (1, 0)  # no old push to a new phone
    assert [a["state"] for a in outbox.attempts_of(doc_id)] == ["scheduled", "sent"]


def test_a_crash_while_retrying_the_phone_owed_it_sends_the_extra_copy_to_that_phone_alone(
        outbox, tokens, dispatcher, sender, emulator, clock):
    waiting = _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator)
    clock.now = waiting["not_before"]
    [claimed] = outbox.claim([waiting], "worker-that-dies", LEASE)
    sender.send([_item_for(claimed, "tok-phone")])  # FCM answered 200, then the worker died
    clock.advance(LEASE + timedelta(seconds=1))
    dispatcher.run_once()
    assert (len(emulator.delivered_to("tok-phone")), len(emulator.delivered_to("tok-tablet"))) == (2, 1)
    assert outbox.get(waiting["_id"])["state"] == "sent"


def test_a_notification_withdrawn_while_a_phone_is_owed_it_ends_sent_and_goes_no_further(
        outbox, tokens, dispatcher, emulator, clock):
    waiting = _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator)
    outbox.withdraw_sources("u-1", [waiting["source_key"]], "reminder_answered")  # the patient did the session
    clock.now = waiting["not_before"]
    assert dispatcher.run_once().claimed == 0
    final = outbox.get(waiting["_id"])
    assert (final["state"], final["sent_at"], final.get("withdrawn_reason"), "pending_phones" in final) == (
        "sent", T0, None, False)
    assert emulator.hits_for("tok-phone") == 1  # only the first answer, 429


def test_consent_ended_while_a_phone_is_owed_it_ends_sent_and_the_phone_gets_nothing(
        outbox, tokens, dispatcher, sender, emulator, clock, store_db):
    waiting = _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator)
    clock.now = waiting["not_before"]  # u-1 has no account any more: the sender refuses the retry
    checking = OutboxDispatcher(outbox, tokens, sender, owner="worker-2", lease=LEASE,
                                consent=DeliveryConsent(Stores(store_db, clock)))
    assert checking.run_once().states == {}  # counted sent in the round the tablet got it
    final = outbox.get(waiting["_id"])
    assert (final["state"], final["attempts"], emulator.hits_for("tok-phone")) == ("sent", 1, 1)
    assert outbox.attempts_of(waiting["_id"])[-1]["reason"] == "recipient_inactive"


def test_a_two_minute_fcm_outage_does_not_lose_a_reminder_whose_window_is_still_open(
        outbox, tokens, dispatcher, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox, completion_window=timedelta(minutes=60))
    emulator.script("UNAVAILABLE")  # FCM (or this host's route to it) down for about two minutes
    for _ in range(3):  # push-send runs every 10 s: three of its passes fail (it was three attempts, then failed)
        dispatcher.run_once()
        clock.now = max(clock.now, outbox.get(doc["_id"])["not_before"]) + timedelta(seconds=1)
    emulator.reset()  # FCM is back; 58 minutes of the window are left
    clock.now = max(clock.now, T0 + timedelta(minutes=2))
    dispatcher.run_once()
    final = outbox.get(doc["_id"])
    assert (final["state"], final["attempts"], len(emulator.deliveries)) == ("sent", 4, 1)


def test_a_reminder_failing_until_its_window_closes_is_expired_not_failed(outbox, tokens, dispatcher, emulator,
                                                                           clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox, completion_window=timedelta(minutes=15))
    emulator.script("QUOTA_EXCEEDED", retry_after=1)
    while (current := outbox.get(doc["_id"]))["state"] == "scheduled":
        clock.now = max(clock.now, current["not_before"])
        dispatcher.run_once()
    assert current["state"] == "expired" and current["attempts"] > 3, (current["state"], current["attempts"])


def test_notification_past_its_window_is_expired_not_sent(outbox, tokens, dispatcher, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox)
    clock.advance(timedelta(hours=2))
    dispatcher.run_once()
    assert (outbox.get(doc["_id"])["state"], len(emulator.requests)) == ("expired", 0)


def test_person_without_a_phone_fails_with_no_device(outbox, dispatcher):
    doc = remind(outbox)
    dispatcher.run_once()
    assert (outbox.get(doc["_id"])["state"], outbox.attempts_of(doc["_id"])[0]["error_codes"]) == (
        "failed", ["NO_DEVICE"])


def test_sent_notification_is_never_claimed_again(outbox, tokens, dispatcher, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    remind(outbox)
    dispatcher.run_once()
    clock.advance(LEASE * 2)
    assert dispatcher.run_once().claimed == 0
    assert len(emulator.deliveries) == 1


def test_claim_is_resent_only_after_its_lease_ran_out_without_sent(outbox, tokens, dispatcher, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox)
    assert len(outbox.claim([doc], "worker-that-dies", LEASE)) == 1
    dispatcher.run_once()
    assert len(emulator.requests) == 0
    clock.advance(LEASE + timedelta(seconds=1))
    dispatcher.run_once()
    assert (delivered_ids(emulator)[doc["_id"]], outbox.get(doc["_id"])["state"]) == (1, "sent")


def test_crash_between_fcm_answer_and_sent_write_costs_at_most_one_extra_delivery(
        outbox, tokens, dispatcher, sender, emulator, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    doc = remind(outbox)
    [claimed] = outbox.claim([doc], "worker-that-dies", LEASE)
    sender.send([_item_for(claimed, "tok-a")])  # FCM answered 200, then the worker died
    clock.advance(LEASE + timedelta(seconds=1))
    dispatcher.run_once()
    dispatcher.run_once()
    assert delivered_ids(emulator)[doc["_id"]] == 2
    assert {d.body["message"]["android"]["collapse_key"] for d in emulator.deliveries} == {doc["collapse_key"]}


def _item_for(doc, token):
    from companion.notify.push import PushItem
    return PushItem(outbox_id=doc["_id"], token=token, kind=doc["kind"], expires_at=doc["expires_at"],
                    collapse_key=doc["collapse_key"])


def test_receipts_record_the_first_delivery_and_open_for_the_recipient_only(outbox, clock):
    doc = remind(outbox)
    assert outbox.record_receipt(doc["_id"], "u-2", "delivered") is False
    assert outbox.record_receipt(doc["_id"], "u-1", "delivered") is True
    clock.advance(timedelta(minutes=1))
    outbox.record_receipt(doc["_id"], "u-1", "delivered")
    outbox.record_receipt(doc["_id"], "u-1", "opened")
    stored = outbox.get(doc["_id"])
    assert (stored["delivered_at"], stored["opened_at"]) == (T0, T0 + timedelta(minutes=1))


def run_two_dispatchers(store_db, clock, emulator, service_account, batch_size: int,
                        work: Callable[[OutboxDispatcher], None]) -> None:
    """Run ``work`` with each of two dispatchers (own sender, own owner name) in its own thread."""
    senders = [PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"push-{uuid.uuid4()}",
                          transport_retry=TransportRetry(backoff_factor=0.01), clock=clock) for _ in range(2)]
    dispatchers = [OutboxDispatcher(Outbox(store_db, clock=clock), PushTokens(store_db, clock=clock), s,
                                    owner=f"worker-{n}", lease=LEASE, batch_size=batch_size)
                   for n, s in enumerate(senders)]
    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    try:
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        [s.close() for s in senders]


def test_two_dispatchers_over_500_notifications_deliver_each_exactly_once(
        store_db, clock, emulator, service_account):
    people = [f"u-{n}" for n in range(100)]
    tokens = PushTokens(store_db, clock=clock)
    outbox = Outbox(store_db, clock=clock)
    for user in people:
        tokens.register(user, "phone", f"tok-{user}", "android")
        for k in range(5):
            remind(outbox, user=user, source=f"reminder:{user}:{k}")
    claimed = Counter()

    def work(d: OutboxDispatcher) -> None:
        for _ in range(200):
            claimed[d.owner] += d.run_once().claimed
            if outbox.count_unfinished() == 0:
                return

    run_two_dispatchers(store_db, clock, emulator, service_account, 100, work)
    counts = delivered_ids(emulator)
    assert (len(counts), set(counts.values())) == (500, {1})
    assert store_db.push_outbox.count_documents({"state": "sent"}) == 500


def test_purge_drops_only_claims_whose_lease_ended_before_the_cutoff(outbox, tokens, dispatcher, store_db, clock):
    tokens.register("u-1", "phone-a", "tok-a", "android")
    old = remind(outbox, source="reminder:old")
    dispatcher.run_once()
    clock.advance(timedelta(hours=1))
    remind(outbox, source="reminder:new", send_at=clock.now)
    dispatcher.run_once()
    assert outbox.purge_claims(leases_ended_before=T0 + timedelta(minutes=30)) == 1
    assert store_db.push_claims.count_documents({"outbox_id": old["_id"]}) == 0
    assert store_db.push_claims.count_documents({}) == 1


def test_nudges_and_summaries_spread_over_their_window_reminders_go_on_the_minute(
        outbox, tokens, dispatcher, emulator, clock):
    nudges = [remind(outbox, user=f"u-{n}", source=f"reminder:m-{n}:2026-03-09T12:00", kind="practice_nudge",
                     completion_window=timedelta(hours=2)) for n in range(40)]
    reminder = remind(outbox, user="u-r")
    assert reminder["not_before"] == T0
    offsets = [doc["not_before"] - T0 for doc in nudges]
    assert all(timedelta(0) <= o < timedelta(minutes=10) for o in offsets)  # the nudge spread, 10 minutes
    assert len(set(offsets)) >= 35 and max(offsets) - min(offsets) >= timedelta(minutes=7)
    assert all(doc["expires_at"] == T0 + timedelta(hours=2) for doc in nudges)  # the window is kept whole
    for n in range(40):
        tokens.register(f"u-{n}", "phone-1", f"tok-u-{n}", "android")
    tokens.register("u-r", "phone-1", "tok-u-r", "android")
    dispatcher.run_once()
    due_by_now = sum(1 for o in offsets if o == timedelta(0))
    assert len(emulator.deliveries) == 1 + due_by_now  # the reminder, and no nudge before its place
    clock.advance(timedelta(minutes=10))
    dispatcher.run_once()
    assert len({d.token for d in emulator.deliveries}) == 41


def test_a_withdrawn_notification_is_revived_once_and_never_while_a_dispatcher_may_have_sent_it(outbox, store_db):
    """Its cause holds again (an alert reopened): revived in a round of its own, once however many processes
    revive it; not one withdrawn while a dispatcher held its round unsettled (it may be at FCM, or gone)."""
    quiet = remind(outbox, user="c-1", source="alert:a-1", kind="caregiver_low_adherence")
    outbox.withdraw(reason="alert_resolved", source_key="alert:a-1")
    [withdrawn] = outbox.withdrawn_for("alert:a-1", "alert_resolved")
    assert outbox.revive(withdrawn, T0 + timedelta(hours=1)) is True
    assert outbox.revive(withdrawn, T0 + timedelta(hours=1)) is False  # a second process, the same snapshot
    revived = store_db.push_outbox.find_one({"_id": quiet["_id"]})
    assert (revived["state"], revived["round"], revived["not_before"]) == ("scheduled", 1, T0 + timedelta(hours=1))
    assert revived["expires_at"] == quiet["expires_at"]  # the lifetime it had
    at_fcm = remind(outbox, user="c-2", source="alert:a-2", kind="caregiver_low_adherence")
    assert outbox.claim([at_fcm], "worker-1", LEASE)  # a dispatcher holds round 0...
    outbox.withdraw(reason="alert_resolved", source_key="alert:a-2")  # ... when the alert is resolved
    [held] = outbox.withdrawn_for("alert:a-2", "alert_resolved")
    assert outbox.revive(held, T0 + timedelta(hours=1)) is False
    assert outbox.revive(quiet, quiet["expires_at"]) is False  # (nor past its lifetime)


def test_no_alert_push_outlives_the_claims_that_keep_a_revival_from_sending_it_twice():
    """Outbox.revive refuses a notification whose round a dispatcher held unsettled, which it knows from the
    claim; claims are purged after CLAIMS_KEPT. An alert push living longer could be revived, and sent twice,
    once its claim is gone."""
    alert_kinds = [kind for alert in AlertKind for kind in (alert.value, caregiver_kind(alert)) if kind in TEMPLATES]
    assert alert_kinds and max(ttl_for(kind) for kind in alert_kinds) <= CLAIMS_KEPT


def test_a_push_a_phone_had_is_counted_sent_once_whichever_way_it_settles(outbox, tokens, dispatcher, emulator, clock):
    """A withdrawal (the reminder answered) ends a push a phone already had ``sent`` outside any round: it was
    counted sent in the round the tablet got it, and no round counts it again."""
    waiting = _one_phone_got_it_the_other_answered_not_now(outbox, tokens, dispatcher, emulator)
    outbox.withdraw_sources("u-1", [waiting["source_key"]], "reminder_answered")
    assert outbox.get(waiting["_id"])["state"] == "sent"
    clock.now = waiting["not_before"]
    assert dispatcher.run_once().states == {}
