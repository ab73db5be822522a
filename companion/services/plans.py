"""Therapy plans: the care team prescribes, everyone related to the patient reads; every change is a new
version and the history is never rewritten."""

from __future__ import annotations

from datetime import datetime

from companion.clock import Clock, now
from companion.domain.errors import Conflict
from companion.services.touched_days import TouchedDays
from companion.store.plans import VersionTaken
from companion.store.stores import Stores

ATTEMPTS = 3


def _stored(plan: dict) -> dict:
    """Dates become ISO strings so the plan stores exactly what the clinician set."""
    tens = dict(plan["tens"])
    tens["start_date"] = tens["start_date"].isoformat()
    tens["end_date"] = tens["end_date"].isoformat() if tens.get("end_date") else None
    return {"tens": tens, "medications": list(plan.get("medications") or []),
            "mindfulness": plan.get("mindfulness")}


class Plans:
    def __init__(self, stores: Stores, touched: TouchedDays, clock: Clock = now):
        self.plans = stores.plans
        self.touched = touched
        self.clock = clock

    def current(self, patient_id: str) -> dict:
        """The current plan (the highest version); version 0, with no tasks, until one is set."""
        return self.plans.current(patient_id) or {"_id": None, "patient_id": patient_id, "version": 0, "tens": None,
                                                  "medications": [], "mindfulness": None}

    def history(self, patient_id: str) -> list[dict]:
        """Every version, newest first."""
        return self.plans.history(patient_id)

    def prescribe(self, patient_id: str, plan: dict, *, created_by: str, based_on_version: int | None = None,
                  at: datetime | None = None) -> dict:
        """Store a new version of the patient's plan (``plan`` holds its TENS dates as dates), in force from
        now (``at``: from an earlier moment, for history imported as it happened, e.g. the demo's).

        With `based_on_version` the change is refused (409) unless that is still the current version, so a
        clinician never silently overwrites a colleague's edit. Without it, a writer that loses a race for
        the next version number simply takes the one after. The days it governs are marked for recomputing.
        """
        at = at or self.clock()
        version = self._insert(patient_id, _stored(plan), created_by, based_on_version, at)
        self.touched.from_instant(patient_id, at, "plan")
        return version

    def _insert(self, patient_id: str, stored: dict, created_by: str, based_on_version: int | None,
                at: datetime) -> dict:
        for _ in range(ATTEMPTS):
            current = self.plans.current(patient_id)
            current_version = current["version"] if current else 0
            if based_on_version is not None and based_on_version != current_version:
                raise Conflict(f"the plan changed meanwhile: the current version is {current_version}",
                               errors={"based_on_version": [f"current version is {current_version}"]})
            try:
                return self.plans.insert_version(patient_id, current_version + 1, stored, created_by=created_by,
                                                 at=at)
            except VersionTaken:
                if based_on_version is not None:
                    raise Conflict("the plan changed meanwhile; reload it and try again") from None
        raise Conflict("the plan is being changed by someone else; try again")
