"""Throttling of sign-in holds across gunicorn worker processes (the counts live in the database), slows guessers
down without ever locking the account's owner out, and sees each client's own address behind a trusted proxy."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.gunicorn import Gunicorn
from tests.support.world import PASSWORD


def _server(mongo_uri, db_name, tmp_path, **env):
    gunicorn = Gunicorn({"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "COMPANION_SECRET_KEY": "g" * 48,
                         "COMPANION_PASSWORD_MEMORY_KIB": "1024", **env}, workers=2, log_dir=tmp_path)
    gunicorn.start()
    return gunicorn


@pytest.fixture
def server(mongo_uri, db_name, tmp_path):
    """Two workers behind one trusted proxy (this test plays the proxy: it sets X-Forwarded-For)."""
    gunicorn = _server(mongo_uri, db_name, tmp_path, COMPANION_TRUSTED_PROXIES="1")
    yield gunicorn
    gunicorn.stop()


@pytest.fixture
def direct_server(mongo_uri, db_name, tmp_path):
    """Two workers with no proxy configured: forwarded headers must be ignored."""
    gunicorn = _server(mongo_uri, db_name, tmp_path)
    yield gunicorn
    gunicorn.stop()


def _login(url, email, password, forwarded_for):
    return httpx.post(f"{url}/api/v1/auth/login", json={"email": email, "password": password},
                      headers={"X-Forwarded-For": forwarded_for}, timeout=30)


@pytest.fixture
def target(server, mongo_uri, db_name):
    from companion import create_app

    app = create_app({"mongodb_uri": mongo_uri, "mongodb_db": db_name, "secret_key": "g" * 48,
                      "password_memory_kib": 1024, "password_time_cost": 1})
    app.extensions["companion"].accounts.sign_up(email="target@example.org", password=PASSWORD, display_name="T",
                                                 role="patient", time_zone="UTC")
    app.extensions["companion"].close()
    return "target@example.org"


def test_guessing_one_account_from_many_addresses_is_slowed_down_across_workers(server, target):
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _login(server.url, target, f"guess-{i}", f"10.0.0.{i}"), range(30)))
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) + statuses.count(429) == 30
    # Ten free failures on the account from anywhere, then each try waits 1 s, 2 s, 4 s ... after the last failure;
    # the requests in flight together (8) may pass the check together, once at first and again each time a wait
    # has passed, which on a slow machine can happen while the 30 are still being answered (k waits take at
    # least 2^k - 1 s).
    assert 10 <= statuses.count(401) <= 10 + 7 + 8 * math.floor(math.log2(elapsed + 1))
    # The owner's password from an address never seen is held back too, while the wait the last guess was told
    # of lasts (a guess told to wait is followed at once by the owner's try). Retry-After is rounded up, so only a
    # try made within Retry-After - 1 s of the guess is surely inside the wait: a guess told 1 s is left to pass
    # (the next guess then fails and lengthens the wait), and on a machine so slow that the try comes after the
    # wait, the pair is made again.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        asked = time.monotonic()
        guess = _login(server.url, target, "guess-again", "10.8.8.8")
        if guess.status_code != 429:
            continue  # the wait had passed: this failure lengthens it
        told = int(guess.headers["Retry-After"])
        if told < 2:
            time.sleep(told)
            continue
        delayed = _login(server.url, target, PASSWORD, "10.9.9.9")
        if time.monotonic() - asked < told - 1:
            break
    else:
        pytest.fail("no guess and owner's try came within one wait of each other in three minutes")
    assert delayed.status_code == 429
    assert 1 <= int(delayed.headers["Retry-After"]) <= 60
    assert delayed.json()["type"].endswith("/too-many-requests")


def test_the_owner_signs_in_from_their_usual_address_while_others_guess(server, target):
    """A guesser cannot lock the owner out: an address the account signed in from recently is not held back
    by failures from elsewhere (and elsewhere the wait is at most a minute, never a lock)."""
    assert _login(server.url, target, PASSWORD, "192.0.2.10").status_code == 200
    with ThreadPoolExecutor(8) as pool:
        guesses = list(pool.map(lambda i: _login(server.url, target, f"guess-{i}", f"198.51.100.{i}"), range(40)))
    assert 429 in {r.status_code for r in guesses}
    assert _login(server.url, target, PASSWORD, "192.0.2.10").status_code == 200


def test_sixty_failed_logins_from_one_client_do_not_shut_out_another_behind_the_same_proxy(server, target):
    with ThreadPoolExecutor(8) as pool:
        flood = list(pool.map(lambda i: _login(server.url, f"nobody{i}@example.org", "x", "203.0.113.7"),
                              range(80)))
    assert 429 in {r.status_code for r in flood}
    assert _login(server.url, target, PASSWORD, "203.0.113.8").status_code == 200


def test_address_limit_is_sixty_a_minute_in_total_not_per_worker(server):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _login(server.url, f"nobody{i}@example.org", "x", "10.1.0.1"),
                                  range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(401) + statuses.count(429) == 100, statuses
    # Never more than the limit in total, whichever worker served; requests in flight together may
    # each count the other, so up to (threads - 1) can be refused early.
    assert 60 - 7 <= statuses.count(401) <= 60


def test_forwarded_headers_are_ignored_without_a_trusted_proxy(direct_server):
    """With no proxy configured, a client cannot escape its address's limit by inventing X-Forwarded-For."""
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _login(direct_server.url, f"nobody{i}@example.org", "x", f"10.2.{i}.1"),
                                  range(100)))
    statuses = [r.status_code for r in responses]
    assert 60 - 7 <= statuses.count(401) <= 60
