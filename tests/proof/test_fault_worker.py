"""The scheduler worker process SIGKILLed in the middle of sending a peak of reminders, then restarted.

A real worker (``python -m companion.jobs.worker``, the Procfile's) dispatches 1,500 due reminders
through the real firebase-admin to the loopback FCM emulator. It is killed once some batches have
gone out and others have not; a second worker takes over. Every reminder ends sent exactly as one
notification; each phone gets it once, except the batch in flight at the kill: FCM had accepted some
of those before the worker could write ``sent``, so they go out once more after the batch's lease
lapses (at most one extra each, folded on the phone by the shared collapse key).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.due_reminders import seed_due_reminders
from tests.support.gateway_processes import wait_for

REMINDERS = 1500
BATCH = 500
KILL_AFTER = 600  # deliveries: the first batch is out, the second in flight, the third not yet claimed


def start_worker(mongo_uri: str, db_name: str, service_account, emulator) -> subprocess.Popen:
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "FCM_SERVICE_ACCOUNT": str(service_account),
           "FCM_URL": emulator.fcm_url, "COMPANION_LEASE_TTL_S": "3", "COMPANION_PUSH_LEASE_S": "2"}
    return subprocess.Popen([sys.executable, "-m", "companion.jobs.worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def notifications_per_phone(emulator) -> Counter:
    return Counter(d.body["message"]["data"]["notification_id"] for d in emulator.deliveries)


@pytest.mark.slow
def test_worker_killed_mid_peak_loses_nothing_and_resends_only_the_batch_in_flight(
        mongo_client, mongo_uri, db_name, service_account, emulator):
    db = mongo_client[db_name]
    seed_due_reminders(db, REMINDERS, datetime.now(UTC) - timedelta(seconds=5))
    first = start_worker(mongo_uri, db_name, service_account, emulator)
    second = None
    try:
        assert wait_for(lambda: len(emulator.deliveries) >= KILL_AFTER, 120), f"{KILL_AFTER} pushes from the first worker"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        at_kill = len(notifications_per_phone(emulator))
        assert at_kill < REMINDERS, "the worker finished before the kill: nothing was interrupted"
        second = start_worker(mongo_uri, db_name, service_account, emulator)
        assert wait_for(lambda: db.push_outbox.count_documents({"state": "sent"}) == REMINDERS, 120), \
            "every reminder sent after the restart"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                # What this test checks ends with the outbox; how fast a worker stops is not part of it. On a busy
                # machine a worker finishing the batch in hand took over 20 s, and the test failed on that alone.
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
    per_notification = notifications_per_phone(emulator)
    twice = [n for n, count in per_notification.items() if count == 2]
    assert (db.push_outbox.count_documents({}), len(per_notification)) == (REMINDERS, REMINDERS)
    assert max(per_notification.values()) <= 2 and len(twice) <= BATCH
