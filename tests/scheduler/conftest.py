"""Fixtures for the scheduler tests: a fresh database with indexes, the loopback FCM emulator, a real
firebase-admin sender, and a clock moved by the test (time_machine, so that every layer, including
the occurrence materialization and firebase-admin's token expiry, sees the same simulated time)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from companion.clock import now
from companion.notify.fcm_emulator import FcmEmulator
from companion.notify.push import PushSender, TransportRetry
from companion.settings import Settings, load_settings
from companion.store.db import ensure_indexes
from tests.conftest import FAST_PASSWORDS

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def traveller():
    with time_machine.travel(START, tick=False) as moving:
        yield moving


@pytest.fixture
def clock(traveller):
    """The jobs' clock: the (travelled) wall clock."""
    return now


@pytest.fixture
def sender(emulator: FcmEmulator, service_account: Path, traveller) -> Iterator[PushSender]:
    push_sender = PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"jobs-{uuid.uuid4()}",
                             transport_retry=TransportRetry(retries=4, backoff_factor=0.01), rng=random.Random(7))
    yield push_sender
    push_sender.close()


@pytest.fixture
def settings(mongo_uri, db_name) -> Settings:
    """The worker's settings as shipped (defaults), on the test's database."""
    return load_settings({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "j" * 48, **FAST_PASSWORDS},
                         environ={})


@pytest.fixture
def jobs_db(mongo_client, db_name):
    db = mongo_client[db_name]
    ensure_indexes(db)
    return db
