"""Push jobs: send what the outbox holds, and forget phones that stopped checking in."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from pymongo.database import Database

from companion.notify.outbox import DispatchReport, OutboxDispatcher
from companion.notify.push import PushSender
from companion.services.job_settings import JobSettings
from companion.store.outbox import Outbox
from companion.store.push_tokens import PushTokens

logger = logging.getLogger(__name__)

CLAIMS_KEPT = timedelta(days=1)
PER_PASS = 200_000  # due notifications taken on in one pass; a larger backlog continues in the next
MAX_PASSES = 3  # passes per run, each picking up what became due (or came back for a retry) meanwhile


def worker_name() -> str:
    """This process's name as a claim owner (host and pid; no secrets)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def send_push(db: Database, settings: JobSettings, clock: Callable[[], datetime], sender: PushSender,
              *, owner: str | None = None) -> DispatchReport:
    """Send every due outbox notification, a batch at a time, until a pass finds none left to claim."""
    dispatcher = OutboxDispatcher(Outbox(db, clock), PushTokens(db, clock), sender, owner=owner or worker_name(),
                                  lease=settings.push_lease, batch_size=settings.dispatch_batch)
    total = DispatchReport()
    for _ in range(MAX_PASSES):
        report = dispatcher.run_pass(PER_PASS)
        if report.claimed == 0:
            break
        total.claimed += report.claimed
        total.dead_tokens_removed += report.dead_tokens_removed
        for state, count in report.states.items():
            total.states[state] = total.states.get(state, 0) + count
    return total


def purge_push_claims(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> int:
    """Hourly: drop send claims whose lease ended a day ago (every round they guarded has settled)."""
    return Outbox(db, clock).purge_claims(clock() - CLAIMS_KEPT)


def prune_push_tokens(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> int:
    """Daily: delete push tokens not refreshed for 60 days."""
    removed = PushTokens(db, clock).prune_stale(settings.push_token_stale_after)
    logger.info("stale push tokens removed: %d", removed)
    return removed
