"""Fixtures for the push layer: one loopback FCM emulator per session and a real firebase-admin app."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from companion.notify.fcm_emulator import FcmEmulator
from companion.notify.push import PushSender, TransportRetry
from companion.store.db import ensure_indexes
from tests.notify.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sender(emulator: FcmEmulator, service_account: Path, clock: FakeClock) -> Iterator[PushSender]:
    # firebase-admin's 500/503 transport retries keep their count (4) but back off in milliseconds.
    push_sender = PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"push-{uuid.uuid4()}",
                             transport_retry=TransportRetry(retries=4, backoff_factor=0.01),
                             clock=clock, rng=random.Random(7))
    yield push_sender
    push_sender.close()


@pytest.fixture
def store_db(mongo_client, db_name):
    """A fresh database on the session's FerretDB (or MONGODB_URI) with every index in place."""
    db = mongo_client[db_name]
    ensure_indexes(db)
    return db
