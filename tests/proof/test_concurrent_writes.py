"""The product's racing writes, each run many times from several threads against the real API under
gunicorn (2 workers x 4 threads) and, where the worker takes part, the worker's own code in this process.

Issue 12 found each of these losing a write on the development server before it kept MongoDB's
single-document guarantees (and the MFA counter even on MongoDB): a delivery receipt racing the
worker's settle, a patient's "done" racing the worker's nudge count and missed-marking, additions to
one care team, edits of different fields of one diary entry, time-zone changes, and wrong TOTP codes
posted in parallel. Every test releases its threads together on a barrier and repeats the race over
many documents and rounds; none measures time. Each ends with one assertion that names what was lost,
so a failure says how much.
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import pyotp
import pytest

from companion.domain.access import Grant, Relationship
from companion.notify.push import PushSender, TransportRetry
from companion.services.accounts import MAX_CODE_FAILURES
from companion.services.push_delivery import OutboxDispatcher
from companion.store.outbox import SENT, NotificationRequest, Outbox
from companion.store.push_tokens import PushTokens
from tests.notify.clock import T0
from tests.support.world import PASSWORD, Person, make_user

pytestmark = pytest.mark.slow

# Generous: threads wait on each other and on a busy two-core machine, never on the clock.
BARRIER_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 60


def together(calls: list[Callable[[], object]]) -> list[object]:
    """Runs each call in its own thread, all released at once; returns their results in order."""
    barrier = threading.Barrier(len(calls), timeout=BARRIER_TIMEOUT_S)

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def http(api_server):
    """One client for every thread of a test (no cookies kept: each request says whose session it is)."""
    keep_none = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    with httpx.Client(base_url=api_server.url, timeout=HTTP_TIMEOUT_S, cookies=keep_none,
                      limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        yield client


@pytest.fixture
def services(local_app):
    """The in-process app's services (setup, and the worker's side of a race), on gunicorn's database."""
    return local_app.extensions["companion"]


def person(local_app, key: str, role: str, time_zone: str = "UTC") -> Person:
    """A signed-up, logged-in person (their token is good for the gunicorn API too: same secret)."""
    return make_user(local_app.test_client(), local_app.extensions["companion"], key=key, role=role,
                     time_zone=time_zone)


# 1. A phone's delivery receipt racing the worker's settle of the same notification.

RECEIPT_ROUNDS = 10
NOTIFICATIONS_PER_ROUND = 60
PHONE_THREADS = 6
PUSH_LEASE = timedelta(minutes=5)


def test_receipts_racing_the_settle_are_all_kept_and_no_notification_is_pushed_twice(
        local_app, services, http, emulator, service_account, clock):
    patient = person(local_app, "receipts_patient", "patient")
    services.notifications.register_phone(patient.id, "phone", "tok-receipts", "android", "token")
    outbox = Outbox(services.db, clock=clock)
    sender = PushSender(service_account, fcm_url=emulator.fcm_url, app_name=f"push-{uuid.uuid4()}",
                        transport_retry=TransportRetry(retries=4, backoff_factor=0.01), clock=clock,
                        rng=random.Random(5))
    # One batch takes every due notification: those a lost settle left scheduled are held by their
    # claim until the lease ends, so each round pushes exactly its own.
    dispatcher = OutboxDispatcher(outbox, PushTokens(services.db, clock=clock), sender, owner="worker-1",
                                  lease=PUSH_LEASE, batch_size=RECEIPT_ROUNDS * NOTIFICATIONS_PER_ROUND)
    real_send = sender.send
    receipts: dict[str, int] = {}

    def post_receipt(notification_id: str) -> tuple[str, int]:
        return notification_id, http.post(f"/api/v1/me/notifications/{notification_id}/receipts",
                                          json={"receipt": "delivered"}, headers=patient.headers).status_code

    try:
        for n in range(RECEIPT_ROUNDS):
            outbox.schedule_many([NotificationRequest(f"reminder:race-{n}-{k}", patient.id, patient.id,
                                                      "therapy_reminder", T0) for k in range(NOTIFICATIONS_PER_ROUND)])
            # The phones answer as soon as FCM has the pushes, while the worker goes on to settle them.
            pushed: list[str] = []
            released = threading.Barrier(PHONE_THREADS + 1, timeout=BARRIER_TIMEOUT_S)

            def send_then_let_the_phones_answer(items, pushed=pushed, released=released):
                results = real_send(items)
                pushed.extend(sorted({item.outbox_id for item in items}))
                released.wait()
                return results

            def phone(k: int, pushed=pushed, released=released) -> list[tuple[str, int]]:
                released.wait()
                return [post_receipt(i) for i in pushed[k::PHONE_THREADS]]

            def dispatch(released=released) -> None:
                try:
                    dispatcher.run_once()
                finally:
                    released.abort()  # harmless once passed; a pass that never sent must not hold the phones

            sender.send = send_then_let_the_phones_answer
            with ThreadPoolExecutor(max_workers=PHONE_THREADS + 1) as pool:
                dispatched = pool.submit(dispatch)
                phones = [pool.submit(phone, k) for k in range(PHONE_THREADS)]
                dispatched.result()
                for answers in phones:
                    receipts.update(answers.result())
        sender.send = real_send
        stored = {d["_id"]: d for d in services.db.push_outbox.find({"recipient_user_id": patient.id})}
        # What a lost settle costs: once the lease has ended, the worker takes the notification again.
        clock.advance(PUSH_LEASE + timedelta(minutes=1))
        dispatcher.run_once()
    finally:
        sender.close()
    pushes = Counter(d.body["message"]["data"]["notification_id"] for d in emulator.deliveries)
    accepted = [i for i, status in receipts.items() if status == 204]
    assert {
        "not pushed in its round": RECEIPT_ROUNDS * NOTIFICATIONS_PER_ROUND - len(receipts),
        "receipts refused": len(receipts) - len(accepted),
        "receipts lost": sum(1 for i in accepted if stored[i]["delivered_at"] is None),
        "put back to scheduled": sum(1 for i in receipts if stored[i]["state"] != SENT),
        "pushed twice": sum(1 for count in pushes.values() if count > 1),
    } == {"not pushed in its round": 0, "receipts refused": 0, "receipts lost": 0, "put back to scheduled": 0,
          "pushed twice": 0}, f"of {len(receipts)} notifications; receipts answered {dict(Counter(receipts.values()))}"


# 2. A patient's "done" racing the worker's nudge count and missed-marking.

REMINDERS = 10  # each with 24 times a day: about 190 occurrences due 3-22 hours ago
DONE_PER_ROUND = 24
PATIENT_THREADS = 4


def past_tens_occurrences(services, patient_id: str, now: datetime) -> list[str]:
    """Occurrences of TENS reminders due 3-22 hours ago, still pending, their completion window closed:
    the worker would nudge and mark them missed, the alerts job would raise a missed session for them."""
    start = now - timedelta(days=2)
    for k in range(REMINDERS):
        services.reminders.create(patient_id, {
            "kind": "tens", "title": f"TENS {k}", "completion_window_min": 30, "repeat": None,
            "schedule": {"type": "weekly", "times": [f"{h:02d}:{5 * k:02d}" for h in range(24)],
                         "start_date": start.date().isoformat(), "end_date": None}}, created_at=start)
    since, until = now - timedelta(hours=22), now - timedelta(hours=3)
    services.reminders.materialize(patient_id, since, until)
    return [o["_id"] for o in services.stores.occurrences.between(patient_id, since, until)]


def test_a_done_answered_200_survives_the_workers_nudges_and_missed_marking_and_raises_no_alert(
        local_app, services, http):
    patient = person(local_app, "done_patient", "patient")
    now = datetime.now(UTC)
    occurrence_ids = past_tens_occurrences(services, patient.id, now)
    random.Random(2).shuffle(occurrence_ids)
    occurrences = services.stores.occurrences
    answered_done: list[str] = []

    def patient_marks_done(ids: list[str]) -> list[tuple[str, int]]:
        return [(oid, http.patch(f"/api/v1/patients/{patient.id}/occurrences/{oid}", json={"status": "done"},
                                 headers=patient.headers).status_code) for oid in ids]

    for start in range(0, len(occurrence_ids), DONE_PER_ROUND):
        ids = occurrence_ids[start:start + DONE_PER_ROUND]
        patients_done = threading.Event()

        def worker_nudges(ids=ids, patients_done=patients_done) -> None:
            # One more nudge noted on each pass, so that every pass writes, until the patient is done.
            count = 0
            while not patients_done.is_set():
                count += 1
                for oid in ids:
                    occurrences.note_nudge(oid, count)

        def worker_marks_missed(ids=ids) -> None:
            # As the worker does: the patient's change numbers reserved for the pass, one per occurrence.
            with services.changes.stamp(patient.id, occurrences, len(ids)) as first:
                for n, oid in enumerate(reversed(ids)):
                    occurrences.mark_one_missed(oid, now, first + n)

        def patients(ids=ids, patients_done=patients_done) -> list[tuple[str, int]]:
            try:
                with ThreadPoolExecutor(max_workers=PATIENT_THREADS) as pool:
                    shares = pool.map(patient_marks_done, [ids[k::PATIENT_THREADS] for k in range(PATIENT_THREADS)])
                    return [pair for share in shares for pair in share]
            finally:
                patients_done.set()

        answers, _, _ = together([patients, worker_nudges, worker_marks_missed])
        answered_done += [oid for oid, status in answers if status == 200]

    services.reminder_dispatch.mark_missed()  # the worker's next pass
    services.alerts.evaluate()
    status = {d["_id"]: d["status"] for d in services.db.reminder_occurrences.find({"_id": {"$in": answered_done}})}
    alerted = {a["dedup_key"].rsplit(":", 1)[-1] for a in services.db.alerts.find(
        {"patient_id": patient.id, "kind": "missed_tens_session"}, {"dedup_key": 1})}
    assert {
        "not answered 200": len(occurrence_ids) - len(answered_done),
        "answered 200, not done": sum(1 for oid in answered_done if status[oid] != "done"),
        "answered 200, alerted as missed": len(alerted & set(answered_done)),
    } == {"not answered 200": 0, "answered 200, not done": 0, "answered 200, alerted as missed": 0}, \
        f"of {len(occurrence_ids)} occurrences"


# 3. Concurrent additions of clinicians to one care team.

TEAM_ROUNDS = 30
CLINICIANS_PER_TEAM = 8


def test_every_clinician_added_concurrently_to_a_team_is_on_it(local_app, services, http):
    admin = person(local_app, "team_admin", "admin")
    clinicians = [services.accounts.sign_up(email=f"clinician{k}@example.org", password=PASSWORD,
                                            display_name=f"Clinician {k}", role="clinician", time_zone="UTC").id
                  for k in range(CLINICIANS_PER_TEAM)]
    refused = lost = rounds_losing = 0
    for n in range(TEAM_ROUNDS):
        team = services.care.create_team(f"Team {n}")

        def add(clinician_id: str, team_id: str = team.id) -> tuple[str, int]:
            return clinician_id, http.post(f"/api/v1/admin/teams/{team_id}/clinicians",
                                           json={"clinician_id": clinician_id}, headers=admin.headers).status_code

        answers = together([lambda c=c: add(c) for c in clinicians])
        on_team = set(services.db.care_teams.find_one({"_id": team.id})["clinician_ids"])
        added = [c for c, status in answers if 200 <= status < 300]
        refused += len(answers) - len(added)
        lost += len(set(added) - on_team)
        rounds_losing += bool(set(added) - on_team)
    assert {"additions refused": refused, "clinicians lost": lost, "rounds losing one": rounds_losing} \
        == {"additions refused": 0, "clinicians lost": 0, "rounds losing one": 0}, \
        f"{TEAM_ROUNDS} rounds of {CLINICIANS_PER_TEAM} concurrent additions"


# 4. Concurrent edits of different fields of one diary entry.

DIARY_ROUNDS = 40
ENTRIES_PER_ROUND = 4


def test_concurrent_edits_of_different_fields_of_a_diary_entry_are_both_kept(local_app, services, http):
    patient = person(local_app, "diary_patient", "patient")
    refused = lost_nrs = lost_context = 0
    for n in range(DIARY_ROUNDS):
        entry_ids = [services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
            "client_entry_id": f"entry-{n:03d}-{k}", "recorded_at": datetime.now(UTC) - timedelta(hours=1),
            "nrs": 2, "context": None, "bpi": None, "session_record_id": None, "phase": None})[0]["_id"]
            for k in range(ENTRIES_PER_ROUND)]
        location = f"round {n}"

        def edit(entry_id: str, change: dict) -> int:
            return http.patch(f"/api/v1/patients/{patient.id}/pain-entries/{entry_id}", json=change,
                              headers=patient.headers).status_code

        calls = []
        for entry_id in entry_ids:
            calls += [lambda e=entry_id: edit(e, {"nrs": 7}),
                      lambda e=entry_id, where=location: edit(e, {"context": {"location": where}})]
        answers = together(calls)
        refused += sum(1 for status in answers if status != 200)
        stored = {d["_id"]: d for d in services.db.pain_entries.find({"_id": {"$in": entry_ids}})}
        for k, entry_id in enumerate(entry_ids):
            nrs_answer, context_answer = answers[2 * k:2 * k + 2]
            lost_nrs += nrs_answer == 200 and stored[entry_id]["nrs"] != 7
            lost_context += context_answer == 200 and (stored[entry_id]["context"] or {}).get("location") != location
    pairs = DIARY_ROUNDS * ENTRIES_PER_ROUND
    assert {"edits refused": refused, "nrs edits lost": lost_nrs, "context edits lost": lost_context} \
        == {"edits refused": 0, "nrs edits lost": 0, "context edits lost": 0}, \
        f"of {pairs} pairs of concurrent edits"


# 5. Concurrent time-zone changes.

ZONE_ROUNDS = 40
MOVERS = 4
ZONES = ["Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Europe/Paris",
         "America/Chicago", "Asia/Tokyo", "Africa/Nairobi", "America/Sao_Paulo", "Pacific/Auckland"]


def test_concurrent_time_zone_changes_keep_the_zone_and_its_history_in_agreement(local_app, services, http):
    patient = person(local_app, "zone_patient", "patient", time_zone="UTC")
    pick = random.Random(5)
    accepted: Counter = Counter()
    statuses: Counter = Counter()
    current = "UTC"
    for _ in range(ZONE_ROUNDS):
        zones = pick.sample([z for z in ZONES if z != current], MOVERS)
        answers = together([lambda z=z: http.patch(f"/api/v1/patients/{patient.id}", json={"time_zone": z},
                                                   headers=patient.headers) for z in zones])
        statuses.update(a.status_code for a in answers)
        accepted.update(z for z, a in zip(zones, answers, strict=True) if a.status_code == 200)
        current = services.db.users.find_one({"_id": patient.id})["time_zone"]
    stored = services.db.users.find_one({"_id": patient.id})
    history = stored["time_zone_history"]
    recorded = Counter(entry["zone"] for entry in history[1:])  # the first entry is the sign-up zone
    assert {
        "answers neither 200 nor 409": sum(n for status, n in statuses.items() if status not in (200, 409)),
        "accepted changes without a history entry": sum((accepted - recorded).values()),
        "history entries never accepted": sum((recorded - accepted).values()),
        "entries whose previous zone is not the entry before": sum(
            1 for k in range(1, len(history)) if history[k]["previous"] != history[k - 1]["zone"]),
        "time_zone differs from the last entry": int(stored["time_zone"] != history[-1]["zone"]),
    } == {"answers neither 200 nor 409": 0, "accepted changes without a history entry": 0,
          "history entries never accepted": 0, "entries whose previous zone is not the entry before": 0,
          "time_zone differs from the last entry": 0}, \
        f"{ZONE_ROUNDS} rounds of {MOVERS} concurrent changes, answered {dict(statuses)}"


# 6. Wrong TOTP codes posted in parallel on the clinician dashboard.

CODE_ROUNDS = 30  # each signs in once by password: under the 60 attempts a minute allowed per address
WEB_COOKIE = "companion_web"


def wrong_code(secret: str) -> str:
    """A six-digit code that no step near now accepts."""
    totp = pyotp.TOTP(secret)
    near = {totp.at(datetime.now(UTC) + timedelta(seconds=30 * drift)) for drift in range(-2, 3)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)


def password_step(base_url: str, email: str) -> str:
    """Sign in by password on the dashboard; returns the pending session's cookie (the code step)."""
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as browser:
        browser.get("/clinician/login")
        form = {"email": email, "password": PASSWORD, "csrf_token": browser.cookies["companion_login_csrf"]}
        response = browser.post("/clinician/login", data=form)
        assert response.status_code == 303 and "/clinician/login/code" in response.headers["Location"]
        return response.cookies[WEB_COOKIE]


def test_wrong_totp_codes_posted_in_parallel_end_the_pending_session_after_five(
        local_app, services, http, api_server):
    signed_in_after_five: list[int] = []
    for n in range(CODE_ROUNDS):
        clinician = services.accounts.sign_up(email=f"mfa{n}@example.org", password=PASSWORD,
                                              display_name=f"Clinician {n}", role="clinician", time_zone="UTC")
        secret = pyotp.random_base32()
        services.db.users.update_one({"_id": clinician.id}, {"$set": {"mfa": {"enabled": True, "secret": secret}}})
        cookie = {"Cookie": f"{WEB_COOKIE}={password_step(api_server.url, clinician.email)}"}
        page = http.get("/clinician/login/code", headers=cookie).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

        def post_code(code: str, cookie=cookie, csrf=csrf) -> httpx.Response:
            return http.post("/clinician/login/code", data={"code": code, "csrf_token": csrf}, headers=cookie)

        bad = wrong_code(secret)
        # Exactly as many as the session allows: one failure not counted would leave it open.
        together([lambda code=bad: post_code(code) for _ in range(MAX_CODE_FAILURES)])
        right = post_code(pyotp.TOTP(secret).now())
        if WEB_COOKIE in right.cookies:
            signed_in_after_five.append(n)
    assert signed_in_after_five == [], \
        f"{len(signed_in_after_five)} of {CODE_ROUNDS} sessions signed in after {MAX_CODE_FAILURES} wrong codes"
