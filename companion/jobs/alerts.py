"""The alerts job: every minute, raise the alerts whose conditions hold and notify who they concern."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pymongo.database import Database

from companion.services.alerts import AlertsReport, evaluate
from companion.services.job_settings import JobSettings


def evaluate_alerts(db: Database, settings: JobSettings, clock: Callable[[], datetime]) -> AlertsReport:
    """Missed sessions, device troubles, silent units and pain flares of the last day."""
    return evaluate(db, settings, clock)
