"""The adherence job: every patient's yesterday (now complete) and today (partial), hourly; then the
low-adherence alert rule over the fresh snapshots. Reads each collection once per run for all patients
(companion.services.adherence_batch) and writes snapshots in bulk, a chunk of patients at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pymongo.database import Database

from companion.services.adherence_batch import recompute_everyone
from companion.services.alerts import AlertsReport, raise_alert
from companion.services.job_settings import JobSettings

logger = logging.getLogger(__name__)


def compute_adherence(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> int:
    """Recompute the adherence snapshots of every patient's last two local days; returns how many."""
    now = clock()
    written = 0
    report = AlertsReport()
    for chunk in recompute_everyone(db, now):
        written += chunk.written
        for candidate in chunk.candidates:
            raise_alert(db, candidate, clock, report)
    logger.info("adherence snapshots written: %d; alerts %s", written, report.raised)
    return written
