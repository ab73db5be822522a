"""A dispatch pass: many due notifications found once and sent a batch at a time; scheduling in bulk."""

from __future__ import annotations

from contextlib import contextmanager

import pymongo

from companion.services.notifications import DeliveryConsent
from companion.services.push_delivery import OutboxDispatcher
from companion.store.outbox import NotificationRequest, Outbox, notification_id
from companion.store.push_tokens import PushTokens
from companion.store.stores import Stores
from tests.notify.clock import T0
from tests.notify.test_outbox import LEASE, delivered_ids, run_two_dispatchers
from tests.scheduler.test_today_row import _Finds


def requests_for(people: list[str], per_person: int) -> list[NotificationRequest]:
    return [NotificationRequest(f"reminder:{user}:{k}", user, user, "therapy_reminder", T0)
            for user in people for k in range(per_person)]


@contextmanager
def _watched_outbox(mongo_uri, store_db, clock, listener, people: list[str], per_person: int):
    """Stores on a client that ``listener`` watches, each person with one phone and ``per_person`` notifications
    due."""
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        stores = Stores(client[store_db.name], clock)
        for user in people:
            stores.push_tokens.register(user, "phone", f"tok-{user}", "android")
        stores.outbox.schedule_many(requests_for(people, per_person))
        yield stores
    finally:
        client.close()


def test_scheduling_in_bulk_creates_each_notification_once_and_says_which_existed(store_db, clock):
    outbox = Outbox(store_db, clock=clock)
    first = outbox.schedule_many(requests_for(["u-1", "u-2"], 3))
    again = outbox.schedule_many(requests_for(["u-1", "u-2", "u-3"], 3))
    assert (first, again) == ([True] * 6, [False] * 6 + [True] * 3)
    assert store_db.push_outbox.count_documents({}) == 9


def test_a_notification_is_found_by_its_source_and_recipient(store_db, clock):
    outbox = Outbox(store_db, clock=clock)
    doc, _ = outbox.schedule(source_key="reminder:r-1:x", recipient_user_id="u-1", patient_id="u-1",
                             kind="therapy_reminder", send_at=T0)
    found = outbox.existing([("reminder:r-1:x", "u-1"), ("reminder:r-1:x", "u-2"), ("reminder:r-2:x", "u-1")])
    assert (list(found), doc["_id"]) == ([("reminder:r-1:x", "u-1")], notification_id("reminder:r-1:x", "u-1"))


def test_one_pass_sends_every_due_notification_in_batches(store_db, clock, sender, emulator):
    people = [f"u-{n}" for n in range(60)]
    tokens = PushTokens(store_db, clock=clock)
    for user in people:
        tokens.register(user, "phone", f"tok-{user}", "android")
    outbox = Outbox(store_db, clock=clock)
    outbox.schedule_many(requests_for(people, 4))
    dispatcher = OutboxDispatcher(outbox, tokens, sender, owner="worker-1", lease=LEASE, batch_size=50)
    report = dispatcher.run_pass(1000)
    counts = delivered_ids(emulator)
    assert (report.claimed, report.states, len(counts), set(counts.values())) == (240, {"sent": 240}, 240, {1})
    assert dispatcher.run_pass(1000).claimed == 0


def test_a_pass_stops_at_its_limit_and_the_next_pass_takes_the_rest(store_db, clock, sender, emulator):
    tokens = PushTokens(store_db, clock=clock)
    tokens.register("u-1", "phone", "tok-1", "android")
    outbox = Outbox(store_db, clock=clock)
    outbox.schedule_many(requests_for(["u-1"], 30))
    dispatcher = OutboxDispatcher(outbox, tokens, sender, owner="worker-1", lease=LEASE, batch_size=10)
    assert [dispatcher.run_pass(25).claimed, dispatcher.run_pass(25).claimed] == [25, 5]
    assert len(delivered_ids(emulator)) == 30


def test_a_token_fcm_reports_dead_is_not_addressed_again_later_in_the_same_pass(store_db, clock, sender, emulator):
    tokens = PushTokens(store_db, clock=clock)
    tokens.register("u-1", "phone-a", "tok-dead", "android")
    tokens.register("u-1", "phone-b", "tok-live", "android")
    emulator.script("UNREGISTERED", token="tok-dead")
    outbox = Outbox(store_db, clock=clock)
    outbox.schedule_many(requests_for(["u-1"], 4))
    OutboxDispatcher(outbox, tokens, sender, owner="worker-1", lease=LEASE, batch_size=2).run_pass(100)
    # The first batch (two notifications, sent together) addresses it twice; the second batch not at all.
    assert (emulator.hits_for("tok-live"), emulator.hits_for("tok-dead")) == (4, 2)


def test_a_batch_reads_its_people_once_for_both_consent_and_their_language(store_db, mongo_uri, clock, sender,
                                                                          emulator):
    people = [f"p-{n}" for n in range(6)]
    store_db.users.insert_many([{"_id": p, "email": f"{p}@example.org", "role": "patient", "password_hash": "-",
                                 "display_name": p, "time_zone": "Europe/Berlin", "locale": "de"} for p in people])
    finds = _Finds()
    with _watched_outbox(mongo_uri, store_db, clock, finds, people, 1) as stores:
        finds.collections.clear()
        report = OutboxDispatcher(stores.outbox, stores.push_tokens, sender, owner="worker-1", lease=LEASE,
                                  batch_size=2, consent=DeliveryConsent(stores), users=stores.users).run_pass(100)
    assert (report.claimed, report.states, len(delivered_ids(emulator))) == (6, {"sent": 6}, 6)
    assert finds.collections.count("users") == 3  # one read per batch of two, not one for consent and one more
    titles = {d.body["message"]["notification"]["title"] for d in emulator.deliveries}
    assert titles == {"Zeit für Ihre Therapiesitzung"}  # each in the account's language, read in the same read


def test_phones_of_a_large_set_of_people_read_in_one_go_match_the_indexed_lookup(store_db, clock):
    tokens = PushTokens(store_db, clock=clock)
    people = [f"u-{n}" for n in range(12)]
    for n, user in enumerate(people):
        for phone in range(n % 3):
            tokens.register(user, f"phone-{phone}", f"tok-{user}-{phone}", "ios")
    tokens.register("someone-else", "phone", "tok-other", "android")
    looked_up = tokens.for_users(people)
    tokens.read_all_over = 5
    read_in_one_go = tokens.for_users(people)

    def view(phones):
        return {user: sorted(p["token"] for p in ps) for user, ps in phones.items()}

    assert view(read_in_one_go) == view(looked_up)
    assert (len(looked_up), "someone-else" in read_in_one_go) == (8, False)


def test_two_workers_running_passes_at_once_deliver_each_notification_exactly_once(
        store_db, clock, emulator, service_account):
    people = [f"u-{n}" for n in range(80)]
    tokens = PushTokens(store_db, clock=clock)
    for user in people:
        tokens.register(user, "phone", f"tok-{user}", "android")
    Outbox(store_db, clock=clock).schedule_many(requests_for(people, 5))
    run_two_dispatchers(store_db, clock, emulator, service_account, 50, lambda d: d.run_pass(1000))
    counts = delivered_ids(emulator)
    assert (len(counts), set(counts.values())) == (400, {1})
    assert store_db.push_outbox.count_documents({"state": "sent"}) == 400


class _PhoneReads(pymongo.monitoring.CommandListener):
    """The people whose phones each find on push_tokens asked for."""

    def __init__(self):
        self.asked: list[list[str]] = []

    def started(self, event):
        if event.command_name == "find" and event.command["find"] == "push_tokens":
            self.asked.append(list(event.command["filter"]["user_id"]["$in"]))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_a_dispatcher_reads_the_phones_of_what_it_claims_each_person_once(store_db, mongo_uri, clock, sender,
                                                                          emulator):
    """Another dispatcher holds part of the due set: this one reads none of those people's phones, and reads its
    own recipients' with each batch that claims them (a phone signed out during the pass is not addressed)."""
    people = [f"u-{n}" for n in range(8)]
    reads = _PhoneReads()
    with _watched_outbox(mongo_uri, store_db, clock, reads, people, 3) as stores:
        taken = [d for d in store_db.push_outbox.find() if d["recipient_user_id"] in people[:3]]
        assert len(stores.outbox.claim(taken, "worker-2", LEASE)) == 9
        reads.asked.clear()
        report = OutboxDispatcher(stores.outbox, stores.push_tokens, sender, owner="worker-1", lease=LEASE,
                                  batch_size=4).run_pass(100)
    asked = [person for read in reads.asked for person in read]
    assert (report.claimed, report.states) == (15, {"sent": 15})
    assert set(asked) == set(people[3:])  # its recipients, no one of the other dispatcher's
    assert len(reads.asked) >= 2  # with the batches that claimed them, not one read of the whole due set


def test_a_sender_told_to_stop_stops_after_the_batch_in_hand_not_once_its_backlog_is_sent(
        store_db, mongo_uri, service_account, emulator, monkeypatch):
    import os
    import signal
    from datetime import UTC, datetime, timedelta

    from companion.jobs import sender as sender_job
    from tests.support.due_reminders import seed_due_reminders

    due = datetime.now(UTC) - timedelta(minutes=1)
    seed_due_reminders(store_db, 30, due)  # 30 active patients, one phone each: six batches of 5
    Outbox(store_db).schedule_many([NotificationRequest(f"missed-summary:p{n}:2026-03-02", f"p{n}", f"p{n}",
                                                        "generic_update", due, spread=False) for n in range(30)])
    for name, value in {"MONGODB_URI": mongo_uri, "MONGODB_DB": store_db.name,
                        "FCM_SERVICE_ACCOUNT": str(service_account), "FCM_URL": emulator.fcm_url,
                        "COMPANION_DISPATCH_BATCH": "5", "COMPANION_SENDER_POLL_S": "1"}.items():
        monkeypatch.setenv(name, value)
    original, batches = OutboxDispatcher._send_and_settle, []

    def send_and_settle_then_sigterm(self, prepared, phones):
        report = original(self, prepared, phones)
        batches.append(len(prepared.items))
        if len(batches) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # a deploy stops the sender once its first batch is out
        return report

    monkeypatch.setattr(OutboxDispatcher, "_send_and_settle", send_and_settle_then_sigterm)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        sender_job.main()
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    # The batch at FCM, and at most the one claimed beside it, go; the rest stays scheduled, unclaimed.
    assert len(emulator.deliveries) <= 10, (len(emulator.deliveries), batches)
    assert store_db.push_outbox.count_documents({"state": "scheduled"}) >= 20
