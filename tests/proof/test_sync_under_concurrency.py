"""Sync that never loses an edit, proven through gunicorn (three worker processes, four threads each) on the
project's FerretDB build: several writers create, edit and delete while a phone follows the change feed;
when they stop, the phone's copy equals the database, every edit and deletion included. And concurrent
edits of one object from the same version: exactly one wins, the others are answered 412.

On the feed this replaces ((updated_at, _id) set before the write commits) the first test lost 7 of 600
entries with 2 writers; the rounds here add up to well over a thousand changes, and a feed that reads up to
the highest change number issued instead of the settled horizon fails every diary round.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from companion import create_app
from tests.conftest import FAST_PASSWORDS
from tests.support.ferretdb import FerretServer
from tests.support.gunicorn import Gunicorn
from tests.support.world import PASSWORD

SECRET = "s" * 48
DB = "sync_proof"
WRITERS = 4
OPS_PER_WRITER = 60
ROUNDS = 4
DEADLINE_S = 180  # generous: a busy 2-core machine must not fail this for being slow


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    server = FerretServer(tmp_path_factory.mktemp("sync-ferretdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(database, tmp_path_factory):
    env = {"MONGODB_URI": database.uri, "MONGODB_DB": DB, "COMPANION_SECRET_KEY": SECRET,
           "COMPANION_PASSWORD_MEMORY_KIB": "1024", "COMPANION_PASSWORD_TIME_COST": "1"}
    server = Gunicorn(env, workers=3, log_dir=tmp_path_factory.mktemp("sync-gunicorn"))
    server.start(wait_s=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def services(database):
    app = create_app({"mongodb_uri": database.uri, "mongodb_db": DB, "secret_key": SECRET, **FAST_PASSWORDS})
    yield app.extensions["companion"]
    app.extensions["companion"].client.close()


def new_patient(api, services) -> tuple[str, dict]:
    """A patient of their own (id, headers), signed in through the API."""
    email = f"sync-{uuid.uuid4().hex[:10]}@example.org"
    patient = services.accounts.sign_up(email=email, password=PASSWORD, display_name="Sync", role="patient",
                                        time_zone="Europe/London")
    token = httpx.post(f"{api.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD},
                       timeout=30).json()["access_token"]
    return patient.id, {"Authorization": f"Bearer {token}"}


class Phone:
    """A syncing app: follows one feed from its cursor and keeps the latest copy of each object."""

    def __init__(self, api, patient_id: str, headers: dict, feed: str):
        self.http = httpx.Client(base_url=api.url, headers=headers, timeout=30)
        self.path = f"/api/v1/patients/{patient_id}/{feed}/changes"
        self.cursor: str | None = None
        self.copy: dict[str, dict] = {}
        self.versions_seen: dict[str, list[int]] = {}

    def pull(self) -> int:
        """Read the feed to its current end; how many changes came."""
        came = 0
        while True:
            query = {"limit": 25} | ({"cursor": self.cursor} if self.cursor else {})
            answer = self.http.get(self.path, params=query)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            for item in page["items"]:
                self.copy[item["id"]] = item
                self.versions_seen.setdefault(item["id"], []).append(item["version"])
            came += len(page["items"])
            self.cursor = page["next_cursor"]
            if not page["has_more"]:
                return came

    def follow_until(self, done: threading.Event) -> None:
        while not done.is_set():
            self.pull()
        deadline = time.monotonic() + DEADLINE_S
        while self.pull() and time.monotonic() < deadline:  # read on until nothing more comes
            pass


def run_concurrently(*targets) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target):
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert not any(t.is_alive() for t in threads), "a writer or the phone did not finish in time"
    return errors


def diary_writer(api, patient_id: str, headers: dict, shared: list[str], lock: threading.Lock, seed: int):
    """Creates, edits and deletes entries (its own and the others'), as phones and a caregiver would."""

    def work():
        rng = random.Random(seed)
        http = httpx.Client(base_url=api.url, headers=headers, timeout=30)
        base = f"/api/v1/patients/{patient_id}/pain-entries"
        for n in range(OPS_PER_WRITER):
            with lock:
                target = rng.choice(shared) if shared else None
            roll = rng.random()
            if target is None or roll < 0.45:
                answer = http.post(base, json={"client_entry_id": f"w{seed}-{n:03d}-{uuid.uuid4().hex[:6]}",
                                               "recorded_at": (datetime.now(UTC) - timedelta(minutes=n)).isoformat(),
                                               "nrs": rng.randint(0, 10)})
                assert answer.status_code == 201, answer.text
                with lock:
                    shared.append(answer.json()["id"])
            elif roll < 0.85:
                answer = http.patch(f"{base}/{target}", json={"nrs": rng.randint(0, 10),
                                                              "context": {"mood": rng.randint(0, 10)}})
                assert answer.status_code in (200, 404), answer.text  # 404: someone deleted it first
            else:
                assert http.delete(f"{base}/{target}").status_code == 204
                with lock:
                    if target in shared:
                        shared.remove(target)

    return work


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_phone_following_the_diary_feed_ends_with_exactly_what_the_database_holds(api, services, round_):
    patient_id, headers = new_patient(api, services)
    phone = Phone(api, patient_id, headers, "pain-entries")
    shared: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    writers = [diary_writer(api, patient_id, headers, shared, lock, seed=round_ * 100 + w) for w in range(WRITERS)]

    def write_then_stop():
        try:
            assert run_concurrently(*writers) == []
        finally:
            done.set()

    errors = run_concurrently(write_then_stop, lambda: phone.follow_until(done))
    assert errors == []
    stored = {d["_id"]: d for d in services.db.pain_entries.find({"patient_id": patient_id})}
    assert len(stored) >= WRITERS * OPS_PER_WRITER * 0.3
    assert set(phone.copy) == set(stored), "entries the phone never saw, or saw and the database lost"
    mismatched = [key for key, doc in stored.items()
                  if (phone.copy[key]["nrs"], phone.copy[key]["deleted"], phone.copy[key]["version"])
                  != (doc["nrs"], doc["deleted"], doc["seq"])]
    assert mismatched == [], "edits or deletions the phone never saw"
    assert all(versions == sorted(versions) for versions in phone.versions_seen.values())


def reminder_writer(api, patient_id: str, headers: dict, shared: list[str], lock: threading.Lock, seed: int):
    """Creates reminders, moves their times and stops them; every change re-materializes occurrences."""

    def work():
        rng = random.Random(seed)
        http = httpx.Client(base_url=api.url, headers=headers, timeout=30)
        base = f"/api/v1/patients/{patient_id}/reminders"
        for _ in range(OPS_PER_WRITER // 4):
            times = sorted({f"{rng.randint(6, 22):02d}:{rng.choice(['00', '30'])}" for _ in range(2)})
            with lock:
                target = rng.choice(shared) if shared else None
            roll = rng.random()
            if target is None or roll < 0.4:
                answer = http.post(base, json={"kind": "medication", "title": "Tablet", "completion_window_min": 60,
                                               "schedule": {"type": "weekly", "times": times}})
                assert answer.status_code == 201, answer.text
                with lock:
                    shared.append(answer.json()["id"])
            elif roll < 0.85:
                answer = http.patch(f"{base}/{target}", json={"schedule": {"type": "weekly", "times": times}})
                assert answer.status_code == 200, answer.text
            else:
                assert http.delete(f"{base}/{target}").status_code == 204
                with lock:
                    if target in shared:
                        shared.remove(target)

    return work


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(2))
def test_phones_following_the_reminder_and_occurrence_feeds_end_with_what_the_database_holds(api, services, round_):
    patient_id, headers = new_patient(api, services)
    reminders = Phone(api, patient_id, headers, "reminders")
    occurrences = Phone(api, patient_id, headers, "occurrences")
    shared: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    writers = [reminder_writer(api, patient_id, headers, shared, lock, seed=round_ * 100 + w) for w in range(WRITERS)]

    def write_then_stop():
        try:
            assert run_concurrently(*writers) == []
        finally:
            done.set()

    errors = run_concurrently(write_then_stop, lambda: reminders.follow_until(done),
                              lambda: occurrences.follow_until(done))
    assert errors == []
    stored_reminders = {d["_id"]: d for d in services.db.reminders.find({"patient_id": patient_id})}
    assert {k: (v["active"], v["schedule"]["times"], v["version"]) for k, v in reminders.copy.items()} == \
        {k: (v["active"], v["schedule"]["times"], v["seq"]) for k, v in stored_reminders.items()}
    stored = {d["_id"]: d for d in services.db.reminder_occurrences.find({"patient_id": patient_id})}
    assert len(stored) > 0
    assert {k: (v["status"], v["due_at"][:16], v["version"]) for k, v in occurrences.copy.items()} == \
        {k: (v["status"], v["due_at"].isoformat()[:16], v["seq"]) for k, v in stored.items()}


ROUNDS_OF_CONFLICT = 15
EDITORS = 6


def race(*requests: tuple[str, str, dict]) -> list[httpx.Response]:
    """Send the requests ((method, url, httpx keyword arguments)) at the same moment, each from its own
    thread and connection."""
    barrier = threading.Barrier(len(requests))
    answers: list[httpx.Response | None] = [None] * len(requests)

    def send(n, request):
        method, url, options = request
        with httpx.Client(timeout=30) as http:
            barrier.wait()
            answers[n] = http.request(method, url, **options)

    threads = [threading.Thread(target=send, args=(n, r)) for n, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    return answers


@pytest.mark.slow
def test_concurrent_edits_of_one_diary_entry_from_one_version_have_exactly_one_winner(api, services):
    patient_id, headers = new_patient(api, services)
    base = f"{api.url}/api/v1/patients/{patient_id}/pain-entries"
    for n in range(ROUNDS_OF_CONFLICT):
        created = httpx.post(base, headers=headers, timeout=30, json={
            "client_entry_id": f"conflict-{n:03d}", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 0})
        etag = created.headers["ETag"]
        target = f"{base}/{created.json()['id']}"
        answers = race(*[("PATCH", target, {"json": {"nrs": v}, "headers": {**headers, "If-Match": etag}})
                         for v in range(1, EDITORS + 1)])
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] + [412] * (EDITORS - 1), statuses
        winner = next(a for a in answers if a.status_code == 200).json()
        losers = [a.json() for a in answers if a.status_code == 412]
        assert all(loser["current"] == winner for loser in losers)
        stored = services.db.pain_entries.find_one({"_id": created.json()["id"]})
        assert (stored["nrs"], stored["seq"]) == (winner["nrs"], winner["version"])


@pytest.mark.slow
def test_concurrent_edits_of_different_fields_without_if_match_lose_nothing(api, services):
    patient_id, headers = new_patient(api, services)
    base = f"{api.url}/api/v1/patients/{patient_id}/pain-entries"
    for n in range(ROUNDS_OF_CONFLICT):
        created = httpx.post(base, headers=headers, timeout=30, json={
            "client_entry_id": f"fields-{n:03d}", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 0}).json()
        target = f"{base}/{created['id']}"
        answers = race(("PATCH", target, {"json": {"nrs": 7}, "headers": headers}),
                       ("PATCH", target, {"json": {"context": {"mood": 3}}, "headers": headers}),
                       ("PATCH", target, {"json": {"session_record_id": "CTU-A0001:5", "phase": "after"},
                                          "headers": headers}))
        assert [a.status_code for a in answers] == [200, 200, 200]
        stored = services.db.pain_entries.find_one({"_id": created["id"]})
        assert (stored["nrs"], stored["context"]["mood"], stored["phase"]) == (7, 3, "after")


@pytest.mark.slow
def test_concurrent_changes_of_a_reminder_and_of_the_profile_from_one_version_have_exactly_one_winner(api, services):
    patient_id, headers = new_patient(api, services)
    reminders = f"{api.url}/api/v1/patients/{patient_id}/reminders"
    profile = f"{api.url}/api/v1/patients/{patient_id}"
    created = httpx.post(reminders, headers=headers, timeout=30, json={
        "kind": "tens", "title": "Session", "schedule": {"type": "weekly", "times": ["09:00"]}})
    for n in range(ROUNDS_OF_CONFLICT // 3):
        etag = httpx.get(f"{reminders}/{created.json()['id']}", headers=headers, timeout=30).headers["ETag"]
        answers = race(*[("PATCH", f"{reminders}/{created.json()['id']}",
                          {"headers": {**headers, "If-Match": etag}, "json": {"title": f"Session {n}-{t}"}})
                         for t in range(EDITORS)])
        assert sorted(a.status_code for a in answers) == [200] + [412] * (EDITORS - 1)
        etag = httpx.get(profile, headers=headers, timeout=30).headers["ETag"]
        answers = race(*[("PATCH", profile, {"headers": {**headers, "If-Match": etag},
                                             "json": {"display_name": f"Name {n}-{t}"}}) for t in range(EDITORS)])
        assert sorted(a.status_code for a in answers) == [200] + [412] * (EDITORS - 1)
        winner = next(a for a in answers if a.status_code == 200).json()
        assert services.stores.users.by_id(patient_id).display_name == winner["display_name"]
