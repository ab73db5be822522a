"""Faults during reminder dispatch: the real outbox dispatcher, firebase-admin and the loopback FCM emulator.

FCM answers 503 for a while; the database server is SIGKILLed between FCM's answers and the
dispatcher's `sent` writes and restarted. Every notification ends sent; none goes out twice except,
after the kill, the ones that were in flight (at most one extra each, folded by the collapse key, as
companion/services/push_delivery.py documents).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from pymongo.errors import PyMongoError

from companion.notify.push import PushSender, TransportRetry
from companion.services.push_delivery import OutboxDispatcher
from companion.store.db import ensure_indexes, make_client
from companion.store.outbox import Outbox
from companion.store.push_tokens import PushTokens
from tests.notify.clock import T0

LEASE = timedelta(minutes=5)
PEOPLE = 40
PER_PERSON = 3


def delivered(emulator) -> Counter:
    return Counter(d.body["message"]["data"]["notification_id"] for d in emulator.deliveries)


def schedule_reminders(db, clock) -> list[str]:
    tokens, outbox = PushTokens(db, clock=clock), Outbox(db, clock=clock)
    ids = []
    for n in range(PEOPLE):
        tokens.register(f"u-{n}", "phone", f"tok-{n}", "android")
        for k in range(PER_PERSON):
            doc, _ = outbox.schedule(source_key=f"reminder:r-{n}-{k}:2026-03-09T12:00", recipient_user_id=f"u-{n}",
                                     patient_id=f"u-{n}", kind="therapy_reminder", send_at=T0)
            ids.append(doc["_id"])
    return ids


def make_sender(emulator, service_account, clock) -> PushSender:
    return PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"push-{uuid.uuid4()}",
                      transport_retry=TransportRetry(retries=4, backoff_factor=0.01), clock=clock,
                      rng=random.Random(3))


def dispatch_until_done(dispatcher, outbox, clock, passes: int = 40) -> None:
    for _ in range(passes):
        with contextlib.suppress(PyMongoError):  # the database is away; the next tick tries again
            dispatcher.run_once()
        if outbox.count_unfinished() == 0:
            return
        clock.advance(timedelta(minutes=1))
    raise AssertionError("notifications still unfinished")


@pytest.mark.slow
def test_fcm_failing_for_a_while_still_delivers_each_notification_exactly_once(
        mongo_client, db_name, emulator, service_account, clock):
    db = mongo_client[db_name]
    ensure_indexes(db)
    ids = schedule_reminders(db, clock)
    emulator.script("UNAVAILABLE")  # FCM down: every request 503, beyond firebase-admin's own retries
    sender = make_sender(emulator, service_account, clock)
    outbox = Outbox(db, clock=clock)
    dispatcher = OutboxDispatcher(outbox, PushTokens(db, clock=clock), sender, owner="worker-1", lease=LEASE)
    try:
        for _ in range(2):
            assert dispatcher.run_once().states == {"scheduled": len(ids)}
            clock.advance(timedelta(minutes=2))
        emulator.reset()  # FCM is back
        dispatch_until_done(dispatcher, outbox, clock)
    finally:
        sender.close()
    counts = delivered(emulator)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    assert db.push_outbox.count_documents({"state": "sent"}) == len(ids)


@pytest.mark.slow
def test_database_killed_between_fcm_answers_and_sent_writes_costs_at_most_one_extra_each(
        own_ferretdb, emulator, service_account, clock):
    client = make_client(own_ferretdb.uri, timeout_ms=1500, server_selection_timeout_ms=1000)
    db = client["push_faults"]
    ensure_indexes(db)
    ids = schedule_reminders(db, clock)
    sender = make_sender(emulator, service_account, clock)
    in_flight: list[str] = []
    real_send = sender.send

    def send_then_lose_the_database(items):
        results = real_send(items)
        if not in_flight:
            in_flight.extend(item.outbox_id for item in items)
            own_ferretdb.kill()
        return results

    sender.send = send_then_lose_the_database
    outbox = Outbox(db, clock=clock)
    dispatcher = OutboxDispatcher(outbox, PushTokens(db, clock=clock), sender, owner="worker-1", lease=LEASE,
                                  batch_size=50)
    try:
        with pytest.raises(PyMongoError):
            dispatcher.run_once()
        own_ferretdb.start()
        dispatch_until_done(dispatcher, outbox, clock)
    finally:
        sender.close()
        client.close()
    counts = delivered(emulator)
    assert set(counts) == set(ids)
    twice = {i for i, n in counts.items() if n > 1}
    assert twice <= set(in_flight)
    assert max(counts.values()) <= 2
    assert {i for i, n in counts.items() if n == 1} >= set(ids) - set(in_flight)
