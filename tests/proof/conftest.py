"""Fixtures for fault injection: a FerretDB and a gunicorn of our own, which the tests kill and restart."""

from __future__ import annotations

import pytest

from companion import create_app
from tests.conftest import FAST_PASSWORDS
from tests.support.ferretdb import FerretServer
from tests.support.gunicorn import Gunicorn

SECRET = "f" * 48


@pytest.fixture
def own_ferretdb(tmp_path):
    server = FerretServer(tmp_path / "ferretdb")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api_env(own_ferretdb):
    return {"MONGODB_URI": own_ferretdb.uri, "MONGODB_DB": "faults", "COMPANION_SECRET_KEY": SECRET,
            "COMPANION_PASSWORD_MEMORY_KIB": "1024", "COMPANION_DB_TIMEOUT_MS": "1500",
            "COMPANION_GATEWAY_UPLOADS_PER_MIN": "100000"}


@pytest.fixture
def api_server(api_env, tmp_path):
    server = Gunicorn(api_env, workers=2, log_dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def local_app(own_ferretdb):
    """The app in-process on the same database, to build people and gateways quickly."""
    app = create_app({"mongodb_uri": own_ferretdb.uri, "mongodb_db": "faults", "secret_key": SECRET,
                      **FAST_PASSWORDS})
    yield app
    app.extensions["companion"].client.close()


# The push layer's hand-moved clock, shared here (the FCM emulator fixtures live in tests/conftest.py).
from tests.notify.conftest import clock  # noqa: E402, F401
