"""Touched days: the one signal that a patient's figures for some local days must be computed again.

Everything that changes what happened on a day marks it: a session stored, placed again or given to another
patient; a dose recorded; a practice completed; a diary entry recorded, edited or deleted; a new plan
version (from the day it takes effect); a change of time zone (from the day of the move). The marks are
durable (``days_to_recompute``, one per patient and local date, idempotent), so late data counts however
late it arrives: the adherence job recomputes every marked day within the 30-day window on its next run,
then judges the alert rules again for them (companion.services.adherence_batch).

The read models hook in at the same place: every mark of a day marks the patient's panel row
(companion.services.read_models), and the job marks it again once it has recomputed the days; and it changes
the patient's today row (companion.store.read_models.TodayRows), computed again on their next "today".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from companion.clock import Clock, now
from companion.domain.localtime import TimeZoneHistory
from companion.store.stores import Stores

RECOMPUTE_WINDOW_DAYS = 30  # how late a day may still be recomputed (the API's offline window)
# The offline window is 30 days of elapsed time when a record arrives; its day can be 31 or 32 local dates back
# by the job's next run (midnight passed since, a DST change, a move east). The job reaches that much further.
WINDOW_SLACK_DAYS = 2
DECIDED = "session_resolved"  # a clinician's decision on a held session: its days are redone however old


def local_dates(instants: Iterable[datetime], history: TimeZoneHistory) -> set[date]:
    """The patient's local dates at these instants, each in the zone in force then."""
    return {i.astimezone(history.zone_at(i)).date() for i in instants}


class TouchedDays:
    def __init__(self, stores: Stores, clock: Clock = now):
        self.marks = stores.days_to_recompute
        self.panel_rows = stores.panel_row_marks
        self.today_rows = stores.today_rows
        self.users = stores.users
        self.clock = clock

    def _history(self, patient_id: str) -> TimeZoneHistory | None:
        patient = self.users.by_id(patient_id)
        return patient.zone_history() if patient is not None else None

    def dates(self, patient_id: str, dates: Iterable[date], reason: str, *, reach_back: bool = False) -> None:
        """Mark these local dates of the patient. ``reach_back``: recomputed however old (as a clinician's
        decision's days are), for what the API accepts beyond the offline window and counts where it shows raw
        data (a practice recorded late, a dose answered late) and for a change to records whose days were judged
        when they arrived, not now (a session placed again or given to another patient days after it was
        stored)."""
        dates = set(dates)
        if dates:
            at = self.clock()
            # A decision's marks keep saying so when a later mark of the same day (late data) comes first.
            self.marks.mark(patient_id, dates, reason, at, decided=reason == DECIDED or reach_back)
            self.panel_rows.mark([patient_id], reason, at)
            self.today_rows.touch([patient_id])

    def instants(self, patient_id: str, instants: Iterable[datetime], reason: str,
                 history: TimeZoneHistory | None = None, *, reach_back: bool = False) -> None:
        """Mark the patient's local dates at these instants."""
        instants = list(instants)
        history = history or (self._history(patient_id) if instants else None)
        if history is not None:
            self.dates(patient_id, local_dates(instants, history), reason, reach_back=reach_back)

    def from_instant(self, patient_id: str, since: datetime, reason: str) -> None:
        """Mark every local date from the one at ``since`` (in the zones around it) to today, at most the
        recompute window: what a plan version or a move of time zone changes."""
        history = self._history(patient_id)
        if history is None:
            return
        at = self.clock()
        first = min(local_dates([since], history) | {since.date()})
        today = max(local_dates([at], history))
        first = max(first, today - timedelta(days=RECOMPUTE_WINDOW_DAYS))
        self.dates(patient_id, {first + timedelta(days=n) for n in range((today - first).days + 1)}, reason)
