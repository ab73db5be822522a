"""The patient's "today": its figures come from the today row until a write touches the patient, and are then
computed again; they are always what a computation from the records gives."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, date, datetime, timedelta

import pymongo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import monitoring

from companion.api.ingestion import SessionRecordSchema
from companion.clock import now
from companion.domain.access import Grant, Relationship
from companion.domain.errors import Conflict, Invalid, NotFound
from companion.services.container import Services
from tests.scheduler.helpers import make_person, own, services_on
from tests.support.records import session_record

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PLAN = {"tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30, "programmes": [1],
                 "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": date(2026, 2, 1), "end_date": None,
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": None}


class _Finds(monitoring.CommandListener):
    def __init__(self):
        self.collections = []

    def started(self, event):
        if event.command_name == "find":
            self.collections.append(event.command["find"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_today_reads_its_row_until_a_write_touches_the_patient(jobs_db, mongo_uri, settings, traveller):
    traveller.move_to(NOON)
    finds = _Finds()
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[finds])
    try:
        services = Services(settings.with_changes(mongodb_db=jobs_db.name), client=client)
        patient = make_person(jobs_db, "patient", "Europe/London")
        services.plans.prescribe(patient.id, PLAN, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
        services.gateways.bind_unit(patient.id, "CTU-D0001", "companion-tens", bound_at=datetime(2026, 1, 1, tzinfo=UTC))
        first = services.progress.today(patient.id)
        assert first["tens"]["minutes"] == 0

        finds.collections.clear()
        assert services.progress.today(patient.id) == first
        assert "session_records" not in finds.collections and "today_rows" in finds.collections

        record = SessionRecordSchema().load(session_record("CTU-D0001", 1, started_at=NOON - timedelta(hours=3),
                                                           duration_s=1800))
        services.ingestion.receive(None, patient.id, [record], {"CTU-D0001"})
        finds.collections.clear()
        after_session = services.progress.today(patient.id)
        assert "session_records" in finds.collections  # the write changed the mark's token: computed again
        assert (after_session["tens"]["minutes"], after_session["tens"]["sessions"]) == (30.0, 1)

        services.diary.record_entry(Grant(patient.id, Relationship.SELF), {
            "client_entry_id": "today-1", "recorded_at": NOON - timedelta(hours=1), "nrs": 6, "context": None,
            "bpi": None, "session_record_id": None, "phase": None})
        assert services.progress.today(patient.id)["pain"] == {"entries": 1, "latest_nrs": 6}

        traveller.move_to(NOON + timedelta(days=1))  # a new local day: yesterday's row is not today's
        assert services.progress.today(patient.id)["tens"]["minutes"] == 0
    finally:
        client.close()


ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"]
MAX_ADVANCE = timedelta(hours=60)
HOURS = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 30)]
today_ops = st.one_of(
    st.tuples(st.just("session"), st.integers(0, 30), st.integers(10, 60)),
    st.tuples(st.just("pain"), st.integers(0, 30), st.integers(0, 10)),
    st.tuples(st.just("practice"), st.integers(0, 6)),
    st.tuples(st.just("plan"), st.integers(1, 3), st.integers(20, 45)),
    st.tuples(st.just("zone"), st.sampled_from(ZONES)),
    st.tuples(st.just("remind"), st.lists(st.sampled_from(HOURS), min_size=1, max_size=3, unique=True),
              st.sampled_from([30, 60, 120])),
    st.tuples(st.just("change"), st.integers(0, 5), st.lists(st.sampled_from(HOURS), min_size=1, max_size=3,
                                                            unique=True)),
    st.tuples(st.just("stop"), st.integers(0, 5)),
    st.tuples(st.just("outcome"), st.integers(0, 8), st.sampled_from(["done", "skipped"])),
    st.tuples(st.just("snooze"), st.integers(0, 8), st.sampled_from([5, 15])),
    st.tuples(st.just("missed")),
    st.tuples(st.just("dispatch")),
    st.tuples(st.just("hourly")),
    st.tuples(st.just("advance"), st.integers(1, 12)),
    st.tuples(st.just("today")),
    st.tuples(st.just("check")),
)
# Reads between the writes (each stores the row the next writes must change) at least as often as writes.
today_ops = st.one_of(today_ops, st.just(("today",)), st.just(("check",)))


class TodayScenario:
    """One patient's writes through the services, reminders and their occurrences included."""

    def __init__(self, db, services, traveller, zone: str):
        self.db, self.services, self.traveller = db, services, traveller
        self.patient = make_person(db, "patient", zone)
        services.plans.prescribe(self.patient.id, PLAN, created_by="clinician", at=datetime(2026, 2, 1, tzinfo=UTC))
        services.gateways.bind_unit(self.patient.id, "CTU-R0001", "companion-tens",
                                    bound_at=datetime(2026, 1, 1, tzinfo=UTC))
        services.library.load()
        self.slug = services.library.short_items(10)[0]
        self.seq, self.reminders, self.advanced, self.entries = 0, [], timedelta(0), 0
        self.apply(("remind", [f"{h:02d}:15" for h in range(0, 24, 2)], 30))  # a dose every two hours
        services.progress.today(self.patient.id)  # the row the writes below must keep current

    def now(self) -> datetime:
        return datetime.now(UTC)

    def _todays(self) -> list[dict]:
        """The patient's occurrences around now (today's, on any clock they have been on)."""
        return list(self.db.reminder_occurrences.find(
            {"patient_id": self.patient.id, "due_at": {"$gte": self.now() - timedelta(hours=26),
                                                       "$lt": self.now() + timedelta(hours=26)}}).sort("_id"))

    def apply(self, op: tuple) -> None:  # noqa: C901 - one branch per kind of write
        kind, *args = op
        svc, pid = self.services, self.patient.id
        if kind == "session":
            self.seq += 1
            record = SessionRecordSchema().load(session_record(
                "CTU-R0001", self.seq, started_at=self.now() - timedelta(hours=args[0], minutes=1),
                duration_s=args[1] * 60))
            svc.ingestion.receive(None, pid, [record], {"CTU-R0001"})
        elif kind == "pain":
            self.entries += 1
            svc.diary.record_entry(Grant(pid, Relationship.SELF), {
                "client_entry_id": f"e{self.entries}", "recorded_at": self.now() - timedelta(hours=args[0]),
                "nrs": args[1], "context": None, "bpi": None, "session_record_id": None, "phase": None})
        elif kind == "practice":
            started_at = self.now() - timedelta(days=args[0], hours=1)
            practice = svc.library.start_practice(pid, self.slug, started_at)
            svc.library.complete_practice(pid, practice["_id"], started_at + timedelta(minutes=5), None)
        elif kind == "plan":
            plan = {**PLAN, "tens": {**PLAN["tens"], "sessions_per_day": args[0], "minutes_per_session": args[1]}}
            svc.plans.prescribe(pid, plan, created_by="clinician")
        elif kind == "zone":
            svc.profiles.update(pid, {"time_zone": args[0]})
        elif kind == "remind" and len(self.reminders) < 6:
            times, window = args
            self.reminders.append(svc.reminders.create(pid, {
                "kind": "medication", "title": "Tablet", "completion_window_min": window, "repeat": None,
                "schedule": {"type": "weekly", "times": sorted(times), "start_date": None, "end_date": None}},
                created_at=self.now() - timedelta(hours=20))["_id"])
        elif kind == "change" and self.reminders:
            reminder = self.reminders[args[0] % len(self.reminders)]
            with suppress(Conflict, Invalid):
                svc.reminders.update(pid, reminder, {"schedule": {"type": "weekly", "times": sorted(args[1]),
                                                                  "start_date": None, "end_date": None}})
        elif kind == "stop" and self.reminders:
            svc.reminders.stop(pid, self.reminders[args[0] % len(self.reminders)])
        elif kind in ("outcome", "snooze") and self._todays():
            found = self._todays()
            occurrence = found[args[0] % len(found)]["_id"]
            with suppress(Conflict, Invalid, NotFound):
                if kind == "outcome":
                    svc.reminders.record_outcome(own(pid), occurrence, args[1], None)
                else:
                    svc.reminders.snooze(own(pid), occurrence, args[1])
        elif kind == "missed":
            svc.reminder_dispatch.mark_missed()
        elif kind == "dispatch":
            svc.reminder_dispatch.dispatch_due()
        elif kind == "hourly":
            svc.reminders.materialize_ahead(timedelta(hours=2), timedelta(hours=36))
        elif kind == "advance" and self.advanced + timedelta(hours=args[0]) <= MAX_ADVANCE:
            self.advanced += timedelta(hours=args[0])
            self.traveller.move_to(self.now() + timedelta(hours=args[0]))  # the local day rolls over, at times
        elif kind == "today":
            svc.progress.today(pid)
        elif kind == "check":
            self.check()

    def check(self) -> None:
        """The patient's today as served (from its row while current) is what a fresh computation gives."""
        served = self.services.progress.today(self.patient.id)
        self.db.today_rows.delete_many({})
        assert self.services.progress.today(self.patient.id) == served


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(zone=st.sampled_from(ZONES), writes=st.lists(today_ops, min_size=4, max_size=24))
def test_served_today_matches_a_fresh_computation_after_any_writes(jobs_db, settings, traveller, zone, writes):
    for name in jobs_db.list_collection_names():
        jobs_db[name].delete_many({})
    traveller.move_to(NOON - timedelta(hours=3))
    services = services_on(jobs_db, settings, now)
    scenario = TodayScenario(jobs_db, services, traveller, zone)
    for op in writes:
        scenario.apply(op)
    scenario.check()
