"""Every figure reads every plan version that can set a day's tasks, however many came after it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tests.scheduler.helpers import make_person, services_on
from tests.scheduler.test_late_data import PLAN


def test_an_old_day_keeps_its_plan_in_the_snapshot_and_the_review_after_a_hundred_later_versions(
        jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 9, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    services.plans.prescribe(patient.id, PLAN, created_by="c", at=datetime(2026, 2, 1, tzinfo=UTC))
    for n in range(100):  # an integration that writes the plan every day, or many times a day
        services.plans.prescribe(patient.id, PLAN, created_by="c",
                                 at=datetime(2026, 2, 20, tzinfo=UTC) + timedelta(minutes=n))
    account = services.stores.users.by_id(patient.id)
    snapshot = services.adherence.compute_day(account, date(2026, 2, 10))
    review_day = {d.date: d for d in services.review.of_patient(account).tens(30)}[date(2026, 2, 10)]
    assert (snapshot["state"], snapshot["tens_minutes_target"], review_day.target_minutes) == ("no_events", 60, 60)
