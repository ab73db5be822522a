"""A sender process (`python -m companion.jobs.sender`, the Procfile's `sender`): it pushes the outbox and
does nothing else.

The scheduler workers create notifications (reminders, alerts) and send them too; sender processes add
sending capacity for a peak minute without adding schedulers. Run as many as the FCM quota and the cores
allow, on any hosts, all on one outbox: a notification is claimed by an insert under its unique
``{id}:{round}`` key (companion.store.outbox), so each is sent by one process. If a sender dies between
FCM's answer and its ``sent`` write, the batch it held (at most ``COMPANION_DISPATCH_BATCH``) is sent again
once its lease (``COMPANION_PUSH_LEASE_S``) has passed, and the phone folds the copy into the first through
the shared collapse key.

An idle sender looks for due notifications every ``COMPANION_SENDER_POLL_S``; a busy one goes on at once.
SIGTERM or SIGINT stops it after the batch in hand: the pass is asked before each batch it claims, so a sender
with a backlog of hundreds of thousands stops within one or two batches (the one at FCM and the one claimed
beside it are sent and settled), not once the backlog is sent.
"""

from __future__ import annotations

import logging
import signal
import threading

from companion.jobs.worker import open_process, wait_for_database
from companion.services.push_delivery import worker_name

logger = logging.getLogger("companion.jobs.sender")  # __name__ is "__main__" under -m


def main() -> None:
    settings, sender, services = open_process("sender", need_sender=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    owner = f"sender:{worker_name()}"
    try:
        if not wait_for_database(services, stopping):
            return
        logger.info("sender started", extra={"owner": owner})
        while not stopping.is_set():
            try:
                report = services.push.send_due(owner, should_stop=stopping.is_set)
            except Exception:  # noqa: BLE001 - a failed pass (database away) is logged and tried again
                logger.exception("sending pass failed; trying again")
                report = None
            if report is None or report.claimed == 0:
                stopping.wait(settings.sender_poll.total_seconds())
        logger.info("sender stopped", extra={"owner": owner})
    finally:
        sender.close()
        services.close()


if __name__ == "__main__":
    main()
