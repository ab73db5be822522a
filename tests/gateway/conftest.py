"""Fixtures for the gateway tests: a private D-Bus system bus per test, for the fake BlueZ and real bleak."""

import pytest

from device_gateway.simulator.bus import PrivateSystemBus
from tests.support.gateway_api_stub import ContractStub


@pytest.fixture
def system_bus(monkeypatch):
    """A private ``dbus-daemon``; bleak finds it through ``DBUS_SYSTEM_BUS_ADDRESS``."""
    with PrivateSystemBus() as bus:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        yield bus


@pytest.fixture
def stub():
    """A stdlib stub of the API contract the gateway talks to."""
    server = ContractStub().start()
    yield server
    server.stop()
