"""A device event whose alert a pass cannot judge or raise holds no window open: the pass is noted complete, the
event is owed to the passes after it (read again by id, wherever it lies), and given up, logged, once it is older
than any pass reads back.

Before, the alerts pass was noted complete only when every device event it read was judged and raised: one event
failing pass after pass (a malformed one, a patient whose alerts could not be written) kept every pass, each minute,
reading everyone's device events from the last complete pass, up to 7 days of them, for as long as it failed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from companion.services.alerts import ALERTS_JOB, DEVICE_CATCH_UP, LOOKBACK, AlertService
from companion.store.sessions import DeviceEvents
from tests.scheduler.helpers import make_person, services_on

T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _event(jobs_db, patient, kind: str, at: datetime, serial: str | None = "CTU-T0001") -> str:
    record_id = f"{serial or 'CTU-T0002'}:{int(at.timestamp())}"
    jobs_db.session_records.insert_one({"_id": record_id, "patient_id": patient.id, "device_serial": serial,
                                        "started_at": at, "duration_s": 1800, "battery_pct": 50,
                                        "server_received_at": at})
    event = {"_id": f"{record_id}:{kind}", "patient_id": patient.id, "kind": kind, "at": at, "record_id": record_id}
    jobs_db.device_events.insert_one(event | ({"device_serial": serial} if serial else {}))  # none: malformed
    return event["_id"]


def _windows_read(monkeypatch) -> list[timedelta]:
    """How far back each pass from now on reads the device events (from its clock)."""
    starts = []
    read = DeviceEvents.happened_or_stored_between
    monkeypatch.setattr(DeviceEvents, "happened_or_stored_between",
                        lambda self, since, until, **kw: starts.append(until - since) or read(self, since, until, **kw))
    return starts


def _pass_at(jobs_db, settings, clock, traveller, at: datetime):
    traveller.move_to(at)
    return services_on(jobs_db, settings, clock).alerts.evaluate()


def _alerts_unwritable(monkeypatch, failing_calls: set[int] | None = None) -> list[bool]:
    """Raising alerts fails while the returned flag is set (or, with ``failing_calls``, on those calls only,
    counted from 1 while it is set)."""
    raise_once = AlertService.raise_once
    broken, calls = [True], [0]

    def failing_while_broken(self, candidate, *args, **kwargs):
        if broken[0]:
            calls[0] += 1
            if failing_calls is None or calls[0] in failing_calls:
                raise ConnectionError("the alerts collection cannot be written")
        return raise_once(self, candidate, *args, **kwargs)

    monkeypatch.setattr(AlertService, "raise_once", failing_while_broken)
    return broken


def _owed(jobs_db) -> list[str]:
    return sorted(o["_id"] for o in jobs_db.device_alerts_owed.find())


def test_a_device_event_that_fails_every_pass_holds_no_window_open_and_is_given_up_after_a_week(
        jobs_db, settings, clock, traveller, monkeypatch, caplog):
    patient = make_person(jobs_db, "patient")
    _pass_at(jobs_db, settings, clock, traveller, T10)
    malformed = _event(jobs_db, patient, "overload", T10 + timedelta(minutes=30), serial=None)
    _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(hours=1))
    services = services_on(jobs_db, settings, clock)
    assert services.stores.days_to_recompute.last_run(ALERTS_JOB) == T10 + timedelta(hours=1)  # noted complete
    assert [o["_id"] for o in jobs_db.device_alerts_owed.find()] == [malformed]

    windows = _windows_read(monkeypatch)
    for hours in (2, 26, 50):
        _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(hours=hours))
    assert windows == [LOOKBACK] * 3  # the last day, each pass: never from before the event
    assert [o["_id"] for o in jobs_db.device_alerts_owed.find()] == [malformed]  # read again by id all the same

    with caplog.at_level(logging.ERROR, logger="companion.services.alerts"):
        _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(minutes=31) + DEVICE_CATCH_UP)
    assert jobs_db.device_alerts_owed.count_documents({}) == 0
    assert [r.item_id for r in caplog.records if "given up" in r.getMessage()] == [malformed]


def test_an_overload_whose_alert_could_not_be_written_is_raised_by_a_pass_after_the_last_day(
        jobs_db, settings, clock, traveller, monkeypatch):
    patient = make_person(jobs_db, "patient")
    _event(jobs_db, patient, "overload", T10 - timedelta(hours=1))
    broken = _alerts_unwritable(monkeypatch)
    for hours in (0, 1, 20):
        report = _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(hours=hours))
        assert report.failed == 1
    assert services_on(jobs_db, settings, clock).stores.days_to_recompute.last_run(ALERTS_JOB) == \
        T10 + timedelta(hours=20)
    broken[0] = False
    _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(hours=30))  # the event is 31 hours old
    [alert] = list(jobs_db.alerts.find({"patient_id": patient.id, "kind": "overload"}))
    assert alert["occurred_at"] == T10 - timedelta(hours=1)
    assert jobs_db.push_outbox.count_documents({"source_key": f"alert:{alert['_id']}"}) == 0  # a day late: the panel's
    assert jobs_db.device_alerts_owed.count_documents({}) == 0


def test_an_alert_of_two_events_is_owed_for_both_and_settles_both_once_raised(
        jobs_db, settings, clock, traveller, monkeypatch):
    patient = make_person(jobs_db, "patient")
    _pass_at(jobs_db, settings, clock, traveller, T10 - timedelta(hours=3))
    first = _event(jobs_db, patient, "overload", T10 - timedelta(hours=2))
    second = _event(jobs_db, patient, "overload", T10 - timedelta(hours=1))  # the same unit, kind and day: one alert
    broken = _alerts_unwritable(monkeypatch)
    assert _pass_at(jobs_db, settings, clock, traveller, T10).failed == 2
    assert services_on(jobs_db, settings, clock).stores.days_to_recompute.last_run(ALERTS_JOB) == T10
    assert _owed(jobs_db) == sorted([first, second])
    broken[0] = False
    _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(days=2))  # both out of the day's window
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "overload"}) == 1
    assert _owed(jobs_db) == []


def test_an_alert_of_two_events_raised_on_the_second_try_of_a_pass_owes_neither(
        jobs_db, settings, clock, traveller, monkeypatch):
    patient = make_person(jobs_db, "patient")
    _pass_at(jobs_db, settings, clock, traveller, T10 - timedelta(hours=3))
    _event(jobs_db, patient, "overload", T10 - timedelta(hours=2))
    _event(jobs_db, patient, "overload", T10 - timedelta(hours=1))
    _alerts_unwritable(monkeypatch, failing_calls={1})  # the first event's try fails, the second's raises it
    assert _pass_at(jobs_db, settings, clock, traveller, T10).failed == 1
    assert jobs_db.alerts.count_documents({"patient_id": patient.id, "kind": "overload"}) == 1
    assert services_on(jobs_db, settings, clock).stores.days_to_recompute.last_run(ALERTS_JOB) == T10
    assert _owed(jobs_db) == []


def test_an_owed_event_that_raises_no_alert_any_more_is_settled(jobs_db, settings, clock, traveller, monkeypatch):
    patient = make_person(jobs_db, "patient")
    overload = _event(jobs_db, patient, "overload", T10 - timedelta(hours=1))
    broken = _alerts_unwritable(monkeypatch)
    _pass_at(jobs_db, settings, clock, traveller, T10)
    assert _owed(jobs_db) == [overload]
    broken[0] = False
    services_on(jobs_db, settings, clock).stores.users.close(patient.id, T10, keep_name=True)  # nothing new raised
    _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(minutes=1))
    assert jobs_db.alerts.count_documents({"patient_id": patient.id}) == 0
    assert _owed(jobs_db) == []


def test_an_owed_event_that_is_gone_is_settled_without_being_given_up(
        jobs_db, settings, clock, traveller, caplog):
    patient = make_person(jobs_db, "patient")
    _event(jobs_db, patient, "overload", T10 - timedelta(hours=1), serial=None)  # malformed
    _pass_at(jobs_db, settings, clock, traveller, T10)
    assert jobs_db.device_alerts_owed.count_documents({}) == 1
    # The record's retention ends (companion.services.lifecycle): its events go, and what was owed of them with them.
    services_on(jobs_db, settings, clock).stores.device_events.delete_for_patient(patient.id)
    with caplog.at_level(logging.ERROR, logger="companion.services.alerts"):
        report = _pass_at(jobs_db, settings, clock, traveller, T10 + timedelta(minutes=1))
    assert report.failed == 0
    assert _owed(jobs_db) == []
    assert not [r for r in caplog.records if "given up" in r.getMessage()]
