"""Reviewer's edge cases: adherence figures around plan changes and far time-zone moves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from companion.api.ingestion import SessionRecordSchema
from companion.store.adherence import snapshot_id
from tests.scheduler.helpers import make_person, services_on
from tests.support.records import session_record


def _plan(start: date, sessions: int = 2, minutes: int = 30) -> dict:
    return {"tens": {"sessions_per_day": sessions, "daily_minutes_target": None, "minutes_per_session": minutes,
                     "programmes": [1], "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": start,
                     "end_date": None, "counts_towards_adherence": True}, "medications": [], "mindfulness": None}


def _upload(services, patient_id, serial, *starts, seq_from=1, minutes=30):
    records = [SessionRecordSchema().load(session_record(serial, seq_from + n, started_at=s, duration_s=minutes * 60))
               for n, s in enumerate(starts)]
    return services.ingestion.receive(None, patient_id, records, {serial})


def _bind(services, patient_id, serial="CTU-F0001"):
    services.gateways.bind_unit(patient_id, serial, "companion-tens", bound_at=datetime(2026, 1, 1, tzinfo=UTC))
    return serial


def test_a_plan_change_dated_from_tomorrow_keeps_todays_tens_prescription(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # London, GMT
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Europe/London")
    services.plans.prescribe(patient.id, _plan(date(2026, 2, 1)), created_by="c",
                             at=datetime(2026, 2, 20, tzinfo=UTC))
    serial = _bind(services, patient.id)
    _upload(services, patient.id, serial, datetime(2026, 3, 2, 7, 0, tzinfo=UTC), datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    assert services.progress.today(patient.id)["tens"]["fraction"] == 1.0
    traveller.move_to(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    services.plans.prescribe(patient.id, _plan(date(2026, 3, 3), sessions=3), created_by="c")
    today = services.progress.today(patient.id)
    traveller.move_to(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))
    services.adherence_job.run()
    day = jobs_db.adherence_days.find_one({"_id": snapshot_id(patient.id, date(2026, 3, 2))})
    assert (today["tens"]["state"], day["state"], day["covered"]) == ("progress", "progress", True)


def test_a_date_the_patient_never_lived_is_not_a_missed_planned_day(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Pacific/Pago_Pago")
    services.plans.prescribe(patient.id, _plan(date(2026, 2, 1), sessions=1), created_by="c",
                             at=datetime(2026, 2, 20, tzinfo=UTC))
    serial = _bind(services, patient.id)
    traveller.move_to(datetime(2026, 3, 6, 10, 30, tzinfo=UTC))  # 23:30 on 5 March in Pago Pago
    services.profiles.update(patient.id, {"time_zone": "Pacific/Kiritimati"})
    traveller.move_to(datetime(2026, 3, 8, 11, 0, tzinfo=UTC))  # 01:00 on 9 March in Kiritimati
    pago_noons = [datetime(2026, 3, d, 23, 0, tzinfo=UTC) for d in (2, 3, 4, 5)]  # noon 2..5 March, Pago Pago
    kiritimati_noons = [datetime(2026, 3, d, 22, 0, tzinfo=UTC) for d in (6, 7)]  # noon 7 and 8 March, Kiritimati
    _upload(services, patient.id, serial, *pago_noons, *kiritimati_noons)
    services.adherence_job.run()
    skipped = jobs_db.adherence_days.find_one({"_id": snapshot_id(patient.id, date(2026, 3, 6))})
    week = services.adherence.summary(patient.id)["tens"]["7"]
    assert (week["days_with_plan"], week["days_covered"], week["pdc"]) == (6, 6, 1.0), (skipped["state"], week)


def test_today_counts_the_session_done_earlier_on_the_same_date_before_a_25_hour_move_west(
        jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "Pacific/Kiritimati")
    services.plans.prescribe(patient.id, _plan(date(2026, 2, 1), sessions=1), created_by="c",
                             at=datetime(2026, 2, 20, tzinfo=UTC))
    serial = _bind(services, patient.id)
    traveller.move_to(datetime(2026, 3, 10, 11, 30, tzinfo=UTC))
    _upload(services, patient.id, serial, datetime(2026, 3, 10, 10, 20, tzinfo=UTC))  # 00:20, 11 March, Kiritimati
    traveller.move_to(datetime(2026, 3, 10, 20, 0, tzinfo=UTC))  # 10:00 on 11 March -> 09:00 on 10 March
    services.profiles.update(patient.id, {"time_zone": "Pacific/Pago_Pago"})
    traveller.move_to(datetime(2026, 3, 11, 12, 0, tzinfo=UTC))  # 01:00 on 11 March in Pago Pago
    snapshot = services.adherence.compute_day(services.stores.users.by_id(patient.id), date(2026, 3, 11))
    today = services.progress.today(patient.id)
    assert today["date"] == "2026-03-11"
    assert (snapshot["tens_minutes"], today["tens"]["minutes"]) == (30.0, 30.0)


def test_the_week_and_streak_read_every_plan_version(jobs_db, settings, clock, traveller):
    traveller.move_to(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    services = services_on(jobs_db, settings, clock)
    patient = make_person(jobs_db, "patient", "UTC")
    services.plans.prescribe(patient.id, _plan(date(2026, 2, 1)), created_by="c", at=datetime(2026, 2, 1, tzinfo=UTC))
    for n in range(100):
        services.plans.prescribe(patient.id, _plan(date(2026, 2, 1)), created_by="c",
                                 at=datetime(2026, 2, 20, tzinfo=UTC) + timedelta(minutes=n))
    services.adherence_job.run()
    snapshot = jobs_db.adherence_days.find_one({"_id": snapshot_id(patient.id, date(2026, 2, 10))})
    week = services.progress.week(patient.id, date(2026, 2, 10))
    assert (snapshot["state"], week["days_with_plan"], len(services.plans.history(patient.id))) == (
        "no_events", 7, 101)
