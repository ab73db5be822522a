"""Reminder jobs: keep occurrences materialized ahead, queue due pushes, mark missed occurrences."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pymongo.database import Database

from companion.services.job_settings import JobSettings
from companion.services.reminder_dispatch import (
    DispatchResult,
    MissedResult,
    dispatch_due_reminders,
    mark_missed_occurrences,
)
from companion.services.reminders import materialize_occurrences

logger = logging.getLogger(__name__)


def dispatch_reminders(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> DispatchResult:
    """Every minute: create the outbox notifications due now (the push job sends them)."""
    return dispatch_due_reminders(db, settings, clock)


def mark_missed(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> MissedResult:
    """Every few minutes: occurrences whose completion window closed become missed."""
    return mark_missed_occurrences(db, settings, clock)


def materialize_ahead(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> int:
    """Hourly: keep every patient's occurrences materialized ``materialize_horizon`` ahead."""
    now = clock()
    added = 0
    patients = db.reminders.aggregate([{"$match": {"active": True}}, {"$group": {"_id": "$patient_id"}}])
    for row in patients:
        added += materialize_occurrences(db, row["_id"], now - settings.reminder_grace,
                                         now + settings.materialize_horizon)
    logger.info("occurrences materialized: %d", added)
    return added
