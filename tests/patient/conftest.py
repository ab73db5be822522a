"""The patient's-day tests run on a controlled clock: "now" is frozen at a known moment and moved
by the test (time_machine), and access tokens outlive the simulated days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from tests.support.world import build_world

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def settings_overrides(settings_overrides):
    return {**settings_overrides, "access_token_ttl_s": 60 * 24 * 3600, "refresh_token_ttl_s": 90 * 24 * 3600}


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def world(clock, client, services):
    return build_world(client, services)
