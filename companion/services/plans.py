"""Therapy plans: the care team prescribes, everyone related to the patient reads; every change is a new
version and the history is never rewritten. The plan's ETag is its version number: a new version that
names the one it replaces (If-Match) is refused with the current plan when another came first."""

from __future__ import annotations

from datetime import datetime

from companion.clock import Clock, now
from companion.domain.errors import Conflict, Contended, PreconditionFailed
from companion.services.sync import Changes
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
    def __init__(self, stores: Stores, changes: Changes, clock: Clock = now, *, touched: TouchedDays | None = None):
        self.plans = stores.plans
        self.changes = changes
        self.touched = touched
        self.clock = clock

    def current(self, patient_id: str) -> dict:
        """The current plan (the highest version); version 0, with no tasks, until one is set."""
        return self.plans.current(patient_id) or {"_id": None, "patient_id": patient_id, "version": 0, "tens": None,
                                                  "medications": [], "mindfulness": None}

    def history(self, patient_id: str) -> list[dict]:
        """Every version, newest first."""
        return self.plans.history(patient_id)

    def versions(self, patient_id: str, *, below: int | None = None, limit: int = 100) -> tuple[list[dict], bool]:
        """A page of the versions, newest first: at most ``limit`` of those numbered below ``below`` (the last
        version of the page before), and whether more follow."""
        read = self.plans.page(patient_id, below, limit + 1)
        return read[:limit], len(read) > limit

    def prescribe(self, patient_id: str, plan: dict, *, created_by: str, based_on_version: int | None = None,
                  if_versions: frozenset[int] | None = None, at: datetime | None = None) -> dict:
        """Store a new version of the patient's plan (``plan`` holds its TENS dates as dates), in force from
        now (``at``: from an earlier moment, for history imported as it happened, e.g. the demo's). The days it
        governs are marked for recomputing.

        With ``if_versions`` (the versions If-Match names) the change is refused (PreconditionFailed, with the
        current plan) unless one of them is still the current version, so a clinician never silently overwrites a colleague's
        edit; `based_on_version` in the body does the same with a 409. Without either, a writer that loses a
        race for the next version number simply takes the one after.
        """
        stored = _stored(plan)
        given_at = at
        for _ in range(ATTEMPTS):
            current = self.current(patient_id)
            current_version = current["version"]
            if based_on_version is not None and based_on_version != current_version:
                raise Conflict(f"the plan changed meanwhile: the current version is {current_version}",
                               errors={"based_on_version": [f"current version is {current_version}"]})
            if if_versions is not None and current_version not in if_versions:
                raise PreconditionFailed(f"the plan changed meanwhile: the current version is {current_version}",
                                         current=current, version=current_version)
            at = given_at or self.clock()
            try:
                with self.changes.stamp(patient_id, self.plans) as seq:
                    created = self.plans.insert_version(patient_id, current_version + 1, stored,
                                                        created_by=created_by, at=at, seq=seq)
            except VersionTaken:
                if based_on_version is not None:
                    raise Conflict("the plan changed meanwhile; reload it and try again") from None
                continue  # with If-Match, the next round answers with the version that won
            self._close_earlier(patient_id, created)
            if self.touched is not None:
                self.touched.from_instant(patient_id, at, "plan")
            return created
        raise Contended("the plan is being changed by someone else right now; try again")

    def _close_earlier(self, patient_id: str, created: dict) -> None:
        # Every earlier version still open ends now (not only the previous one: a crash between the two
        # writes of a version leaves one open, and the next version closes it).
        older = self.plans.open_before(patient_id, created["version"])
        if older:
            with self.changes.stamp(patient_id, self.plans, len(older)) as first:
                self.plans.close(older, created["active_from"], first)

    def changes_since(self, patient_id: str, cursor: str | None, limit: int) -> dict:
        """Plan versions created or closed after the cursor (companion.services.sync)."""
        page = self.changes.page(patient_id, self.plans, cursor, limit)
        return page.with_items(page.items)
