"""Setting a patient's therapy plan: every change is a new version; the history is never rewritten."""

from __future__ import annotations

from pymongo.database import Database

from companion.domain.errors import Conflict
from companion.store.accounts import now
from companion.store.plans import TherapyPlans, VersionTaken

ATTEMPTS = 3


def set_plan(db: Database, patient_id: str, plan: dict, *, created_by: str,
             based_on_version: int | None = None) -> dict:
    """Store a new version of the patient's plan.

    With `based_on_version` the change is refused (409) unless that is still the current version, so a
    clinician never silently overwrites a colleague's edit. Without it, a writer that loses a race for
    the next version number simply takes the one after.
    """
    plans = TherapyPlans(db)
    for _ in range(ATTEMPTS):
        current = plans.current(patient_id)
        current_version = current["version"] if current else 0
        if based_on_version is not None and based_on_version != current_version:
            raise Conflict(f"the plan changed meanwhile: the current version is {current_version}",
                           errors={"based_on_version": [f"current version is {current_version}"]})
        try:
            return plans.insert_version(patient_id, current_version + 1, plan, created_by=created_by, at=now())
        except VersionTaken:
            if based_on_version is not None:
                raise Conflict("the plan changed meanwhile; reload it and try again") from None
    raise Conflict("the plan is being changed by someone else; try again")
