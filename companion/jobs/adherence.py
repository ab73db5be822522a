"""The adherence job: every patient's yesterday (now complete) and today (partial), hourly; then the
low-adherence alert rule over the fresh snapshots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pymongo.database import Database

from companion.services.adherence import patients_to_compute, recompute_recent
from companion.services.alerts import AlertsReport, low_adherence, raise_alert
from companion.services.job_settings import JobSettings
from companion.services.reminder_schedules import zone_history_of

logger = logging.getLogger(__name__)


def compute_adherence(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> int:
    """Recompute the adherence snapshots of every patient's last two local days; returns how many."""
    now = clock()
    written = 0
    report = AlertsReport()
    for patient in patients_to_compute(db):
        written += len(recompute_recent(db, patient, now))
        candidate = low_adherence(db, patient["_id"], now.astimezone(zone_history_of(patient).zone_at(now)))
        if candidate is not None:
            raise_alert(db, candidate, clock, report)
    logger.info("adherence snapshots written: %d; alerts %s", written, report.raised)
    return written
