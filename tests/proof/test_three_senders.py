"""Three sender processes (``python -m companion.jobs.sender``, real OS processes) on one outbox, pushing
through the real firebase-admin to the loopback FCM emulator.

Every notification reaches FCM exactly once, counted at the endpoint, with the work spread over the
senders; when one sender is SIGKILLed mid-peak, the other two finish its work after its lease, and at most
the batch it had at FCM goes out twice (the documented extra copy, folded on the phone by the collapse key).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from companion.services.container import Services
from companion.settings import load_settings
from tests.proof.test_fault_worker import notifications_per_phone
from tests.support.due_reminders import seed_due_reminders
from tests.support.gateway_processes import wait_for

REMINDERS = 1500
BATCH = 100


class Sender:
    """One sender process; its log lines are kept (drained by a thread so the pipe never fills)."""

    def __init__(self, mongo_uri: str, db_name: str, service_account, emulator, lease_s: int):
        env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DB": db_name,
               "FCM_SERVICE_ACCOUNT": str(service_account), "FCM_URL": emulator.fcm_url,
               "COMPANION_PUSH_LEASE_S": str(lease_s), "COMPANION_DISPATCH_BATCH": str(BATCH), "COMPANION_SENDER_POLL_S": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "companion.jobs.sender"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def started(self) -> bool:
        return any("sender started" in line for line in self.lines)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                return None
        return self.process.returncode


def _three_senders_ready(mongo_client, mongo_uri, db_name, service_account, emulator, lease_s: int) -> list[Sender]:
    """Start three senders, wait until each is polling, then make REMINDERS reminders due at once. A lease
    (claim to settled) shorter than a batch takes on a loaded machine would send it twice by design: the
    lease is the time after which a batch counts as abandoned."""
    db = mongo_client[db_name]
    seed_due_reminders(db, REMINDERS, datetime.now(UTC) - timedelta(seconds=5))
    senders = [Sender(mongo_uri, db_name, service_account, emulator, lease_s) for _ in range(3)]
    try:
        assert wait_for(lambda: all(s.started() for s in senders), 120), "three senders polling the outbox"
    except AssertionError:
        for sender in senders:
            sender.stop()
        raise AssertionError(f"senders not started; their last lines: {[s.lines[-3:] for s in senders]}") from None
    services = Services(load_settings({"mongodb_uri": mongo_uri, "mongodb_db": db_name}, environ={}),
                        client=mongo_client)
    assert services.reminder_dispatch.dispatch_due().scheduled == REMINDERS
    return senders


@pytest.mark.slow
def test_three_sender_processes_deliver_every_notification_exactly_once(
        mongo_client, mongo_uri, db_name, service_account, emulator):
    db = mongo_client[db_name]
    senders = []
    try:
        senders = _three_senders_ready(mongo_client, mongo_uri, db_name, service_account, emulator, lease_s=60)
        assert wait_for(lambda: db.push_outbox.count_documents({"state": "sent"}) == REMINDERS, 180), \
            "every reminder sent by the three senders"
    finally:
        codes = [s.stop() for s in senders]
    assert codes == [0, 0, 0]  # each stopped cleanly on SIGTERM
    per_notification = notifications_per_phone(emulator)
    assert len(per_notification) == REMINDERS and set(per_notification.values()) == {1}
    assert len(emulator.deliveries) == REMINDERS  # counted at the FCM endpoint
    owners = Counter(c["owner"] for c in db.push_claims.find({}, {"owner": 1}))
    assert sum(owners.values()) == REMINDERS  # one claim per notification: nobody lost a round
    assert len(owners) >= 2, owners  # the work was shared (three in practice, two at the least under load)


@pytest.mark.slow
def test_a_sender_killed_mid_peak_is_covered_by_the_others_with_at_most_its_batch_sent_twice(
        mongo_client, mongo_uri, db_name, service_account, emulator):
    db = mongo_client[db_name]
    senders = []
    try:
        senders = _three_senders_ready(mongo_client, mongo_uri, db_name, service_account, emulator, lease_s=20)
        assert wait_for(lambda: len(emulator.deliveries) >= 3 * BATCH, 120), "a few batches out"
        victim = senders[0]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        assert wait_for(lambda: db.push_outbox.count_documents({"state": "sent"}) == REMINDERS, 180), \
            "every reminder sent by the two survivors"
    finally:
        for sender in senders[1:]:
            sender.stop()
    per_notification = notifications_per_phone(emulator)
    twice = [n for n, count in per_notification.items() if count == 2]
    assert (db.push_outbox.count_documents({}), len(per_notification)) == (REMINDERS, REMINDERS)
    assert max(per_notification.values()) <= 2 and len(twice) <= BATCH
