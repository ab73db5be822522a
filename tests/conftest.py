"""Test fixtures: one real FerretDB per test session (or MONGODB_URI), an empty database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from companion import create_app
from companion.notify.fcm_emulator import FcmEmulator, write_service_account
from tests.support import response_guard
from tests.support.api_server import ApiServer
from tests.support.databases import DatabasePool
from tests.support.ferretdb import FerretServer
from tests.support.mailbox import Mailbox
from tests.support.world import build_world

# argon2id at a low cost so that building a dozen test users takes milliseconds; production keeps
# argon2-cffi's defaults (see companion.config.Settings).
FAST_PASSWORDS = {"password_memory_kib": 1024, "password_time_cost": 1}


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    explicit = os.environ.get("MONGODB_URI")
    if explicit:
        yield explicit
        return
    server = FerretServer(tmp_path_factory.mktemp("ferretdb"))
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_uri):
    client = pymongo.MongoClient(mongo_uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def database_pool(mongo_client) -> Iterator[DatabasePool]:
    pool = DatabasePool(mongo_client)
    yield pool
    pool.drop_all()


@pytest.fixture
def db_name(database_pool, request):
    """A database for this test: empty, with the declared indexes in place when one used before is free
    (tests.support.databases); one the app has never touched with ``@pytest.mark.fresh_database``."""
    name = database_pool.take(fresh=request.node.get_closest_marker("fresh_database") is not None)
    yield name
    database_pool.give_back(name)


@pytest.fixture
def mail_dir(tmp_path) -> Path:
    """Where the app under test writes its email (sign-up codes), one .eml file each."""
    return tmp_path / "mail"


@pytest.fixture
def settings_overrides(mongo_uri, db_name, mail_dir):
    return {"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "t" * 48, "mail_dir": str(mail_dir),
            **FAST_PASSWORDS}


@pytest.fixture
def mailbox(mail_dir) -> Mailbox:
    return Mailbox(mail_dir)


@pytest.fixture
def app(settings_overrides):
    app = create_app(settings_overrides)
    app.config["TESTING"] = True
    violations: list[str] = []
    response_guard.install(app, violations)
    yield app
    app.extensions["companion"].client.close()
    assert violations == [], "responses carried secret or internal fields"


@pytest.fixture
def services(app):
    return app.extensions["companion"]


@pytest.fixture
def db(services):
    return services.db


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def world(client, services):
    return build_world(client, services)


@pytest.fixture(scope="session")
def fcm() -> Iterator[FcmEmulator]:
    """One loopback FCM emulator for the whole session (tests reset it through `emulator`)."""
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
def api_server(app):
    """The real app served over HTTP on a loopback port (in a thread), for clients that speak HTTP."""
    server = ApiServer(app)
    server.start()
    yield server
    server.stop()
