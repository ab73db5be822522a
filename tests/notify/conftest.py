"""Fixtures for the push layer: one loopback FCM emulator per session and a real firebase-admin app."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from companion.notify.fcm_emulator import FcmEmulator, write_service_account
from companion.notify.push import PushSender, TransportRetry

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand; it can also note something each time the sender reads it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.on_read = None

    def __call__(self) -> datetime:
        if self.on_read is not None:
            self.on_read()
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(scope="session")
def fcm() -> Iterator[FcmEmulator]:
    emulator = FcmEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def service_account(fcm: FcmEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account(tmp_path_factory.mktemp("fcm") / "service-account.json", fcm.token_uri)


@pytest.fixture
def emulator(fcm: FcmEmulator) -> FcmEmulator:
    """The session emulator with no scripts and no deliveries left over from other tests."""
    fcm.reset()
    return fcm


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
