"""A hand-over cut short after its binding's write is finished by the worker when nobody sends it again: its unit's
sessions end on the right patient, and their days and panel rows are marked, as a retry would have done.

Before, only a retry of the same release or binding by its client placed the unit's records again: a release whose
process stopped after its write, never sent again, left the sessions worn by the next patient on the old one's
figures (or the backlog held) for good.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from companion.domain.sessions import UNPULLED_AT_HANDOVER
from companion.jobs.worker import Worker
from companion.services.container import Services
from companion.services.gateways import HANDOVER_LEFT_AFTER, HANDOVERS_JOB
from companion.services.session_times import PLACEMENT_TTL
from companion.services.sessions import TensSessions
from companion.store.devices import DUE, DUE_FLOOR
from tests.api.test_late_handover import LONDON, devices, owners, upload
from tests.proof.test_database_server import is_ferretdb, plan_of
from tests.support.records import session_record


def _stopping(monkeypatch, stops: dict[str, int | None]) -> list[str]:
    """The re-placement of each unit of ``stops`` stops (the process dies after the binding's write) the first
    so many times (None: every time), in the API's process and the worker's; every unit placed again, stopped or
    not, is listed in the list returned."""
    real, asked = TensSessions.place_after_handover, []

    def place(self, serial, since):
        asked.append(serial)
        if serial in stops and (stops[serial] is None or asked.count(serial) <= stops[serial]):
            raise RuntimeError("the process stopped here")
        return real(self, serial, since)

    monkeypatch.setattr(TensSessions, "place_after_handover", place)
    return asked


def _worker_run(services, later: timedelta = HANDOVER_LEFT_AFTER + timedelta(minutes=1)) -> dict:
    """The worker's hand-over job, run as the leader runs it, ``later`` after now."""
    at_worker = Services(services.settings, client=services.client, clock=lambda: datetime.now(UTC) + later)
    specs = {spec.id: spec for spec in Worker(at_worker, holder="test").specs()}
    return specs[HANDOVERS_JOB].run()


def _worn_by_a(client, world, services, serial: str, now: datetime) -> None:
    """Patient A's unit for a month, with a session 5 days ago and one a day ago (their hub's)."""
    services.gateways.bind_unit(world["patient_a"].id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    assert upload(client, world["gateway_a"], [session_record(serial, 1, started_at=now - timedelta(days=5)),
                                               session_record(serial, 2, started_at=now - timedelta(days=1))]
                  ).status_code == 200


def _released_cut_short(world, services, serial: str, now: datetime) -> None:
    """Released from A as of 3 days ago, the release stopping after its write."""
    with pytest.raises(RuntimeError):
        services.gateways.release_unit(world["patient_a"].id, serial, released_at=now - timedelta(days=3))


def test_a_release_stopped_before_its_re_placement_is_finished_by_the_worker_with_no_retry(
        client, world, db, services, monkeypatch):
    serial, a, now = "CTU-LEFTRL1", world["patient_a"], datetime.now(UTC)
    _worn_by_a(client, world, services, serial, now)
    asked = _stopping(monkeypatch, {serial: 1})
    _released_cut_short(world, services, serial, now)
    db.days_to_recompute.delete_many({})
    db.panel_row_marks.delete_many({})
    assert _worker_run(services, later=timedelta(0))["finished"] == 0  # just written: its request may be running
    assert owners(db, serial) == {1: (a.id, False), 2: (a.id, False)}

    assert _worker_run(services) == {"finished": 1, "busy": 0, "failed": 0}
    assert owners(db, serial) == {1: (a.id, False), 2: (None, True)}  # after the stated hand-over: not theirs
    left = db.session_records.find_one({"_id": f"{serial}:2"})["started_at"].astimezone(LONDON).date()
    assert [(m["date"], m["reason"], m.get("decided")) for m in db.days_to_recompute.find({"patient_id": a.id})] \
        == [(left.isoformat(), "unit_handed_over", True)]  # the day it left, however old (as a retry marks it)
    assert db.panel_row_marks.find_one({"_id": a.id})["reason"] == "unit_handed_over"
    assert services.stores.devices.placement_due(serial) is None
    assert _worker_run(services)["finished"] == 0 and asked == [serial, serial]  # nothing owed: nothing placed again
    url = f"{devices(a.id)}/{serial}"
    assert client.delete(url, headers=world["clinician_team"].headers).status_code == 204
    assert asked == [serial, serial]  # and a late retry finds nothing to do


def test_a_binding_stopped_before_its_re_placement_is_finished_by_the_worker_with_no_retry(
        client, world, db, services, monkeypatch):
    serial, a, b, now = "CTU-LEFTBD1", world["patient_a"], world["patient_b"], datetime.now(UTC)
    handed_over = now - timedelta(days=3)
    services.gateways.bind_unit(a.id, serial, "companion-tens", bound_at=now - timedelta(days=30))
    services.gateways.release_unit(a.id, serial, released_at=handed_over)
    assert client.post(devices(b.id), headers=b.headers, json={"serial": serial}).status_code == 201
    assert upload(client, world["gateway_b"],
                  [session_record(serial, 1, started_at=now - timedelta(days=1))]).status_code == 200
    assert owners(db, serial) == {1: (None, True)}  # from before the binding the app was told of
    _stopping(monkeypatch, {serial: 1})
    with pytest.raises(RuntimeError):
        services.gateways.bind_unit(b.id, serial, "companion-tens", bound_at=handed_over)
    db.panel_row_marks.delete_many({})
    assert _worker_run(services)["finished"] == 1
    assert owners(db, serial) == {1: (b.id, False)}
    assert db.days_to_recompute.count_documents({"patient_id": b.id, "reason": "unit_handed_over"}) == 1
    assert db.panel_row_marks.find_one({"_id": b.id})["reason"] == "unit_handed_over"


def test_a_unit_that_fails_or_that_an_upload_holds_is_left_for_the_next_run_and_the_others_are_finished(
        client, world, db, services, monkeypatch, caplog):
    failing, held, fine, a, now = "CTU-LEFTFA1", "CTU-LEFTHE1", "CTU-LEFTOK1", world["patient_a"], datetime.now(UTC)
    for serial in (failing, held, fine):
        _worn_by_a(client, world, services, serial, now)
    _stopping(monkeypatch, {failing: None, held: 1, fine: 1})
    for serial in (failing, held, fine):
        _released_cut_short(world, services, serial, now)
    claims = services.stores.unit_claims
    assert claims.claim([held], "an-upload", now, now + timedelta(hours=1))
    with caplog.at_level(logging.ERROR, logger="companion.jobs"):
        assert _worker_run(services) == {"finished": 1, "busy": 1, "failed": 1}
    assert [r.item_id for r in caplog.records if getattr(r, "job_id", None) == HANDOVERS_JOB] == [failing]
    assert owners(db, fine) == {1: (a.id, False), 2: (None, True)}
    assert owners(db, held) == owners(db, failing) == {1: (a.id, False), 2: (a.id, False)}  # still owed
    claims.release([held], "an-upload")
    assert _worker_run(services) == {"finished": 1, "busy": 0, "failed": 1}
    assert owners(db, held) == {1: (a.id, False), 2: (None, True)}
    assert services.stores.devices.placement_due(failing) is not None  # owed until it can be placed


def test_the_worker_finds_the_owed_placements_by_the_index_on_their_due_date(db):
    """The job reads every few minutes: from the bindings that owe a placement only, not every unit's history."""
    owed = {DUE: {"$gte": DUE_FLOOR, "$lte": datetime.now(UTC)}}
    for collection in ("devices", "unit_bindings"):
        plan = plan_of(db, collection, owed)
        if is_ferretdb(db):
            assert "USING INDEX" in plan, plan
        else:
            assert "COLLSCAN" not in plan, plan


def _released_before_its_mark(db, services, serial: str, patient_id: str, now: datetime) -> None:
    """A's row shows the unit's last sync; a release (no time told) stops after the binding's write, before it
    marks the row: the unit's sessions, all before the release, stay A's (none moves)."""
    services.panel_rows.catch_up([patient_id])
    assert db.panel_rows.find_one({"_id": patient_id})["last_sync"] is not None
    services.stores.devices.unbind(serial, patient_id, now, stated=False, due_from=now - UNPULLED_AT_HANDOVER)


def test_a_release_finished_by_its_retry_marks_the_row_of_the_patient_it_leaves_though_no_session_moved(
        client, world, db, services):
    serial, a, now = "CTU-LEFTMK1", world["patient_a"], datetime.now(UTC)
    _worn_by_a(client, world, services, serial, now)
    _released_before_its_mark(db, services, serial, a.id, now)
    services.gateways.release_unit(a.id, serial)  # the client's retry finishes it
    assert owners(db, serial) == {1: (a.id, False), 2: (a.id, False)}
    services.panel_rows.catch_up([a.id])
    assert db.panel_rows.find_one({"_id": a.id})["last_sync"] is None  # no unit: nothing heard from


def test_a_release_finished_by_the_worker_marks_the_row_of_the_patient_it_leaves_though_no_session_moved(
        client, world, db, services):
    serial, a, now = "CTU-LEFTMK2", world["patient_a"], datetime.now(UTC)
    _worn_by_a(client, world, services, serial, now)
    _released_before_its_mark(db, services, serial, a.id, now)
    assert _worker_run(services)["finished"] == 1
    services.panel_rows.catch_up([a.id])
    assert db.panel_rows.find_one({"_id": a.id})["last_sync"] is None


def test_the_worker_leaves_a_release_still_placing_after_its_units_claim_lapsed(client, world, db, services):
    """A release whose placement runs past the claim's lifetime (nothing renews it): the worker, a minute after
    the claim lapsed, does not take the unit over from it."""
    serial, a, now = "CTU-LEFTLG1", world["patient_a"], datetime.now(UTC)
    _worn_by_a(client, world, services, serial, now)
    assert services.stores.unit_claims.claim([serial], "a-release-placing", now, now + PLACEMENT_TTL)
    services.stores.devices.unbind(serial, a.id, now, stated=False, due_from=now - UNPULLED_AT_HANDOVER)
    assert _worker_run(services, later=PLACEMENT_TTL + timedelta(minutes=1))["finished"] == 0
    assert db.unit_claims.find_one({"_id": serial})["holder"] == "a-release-placing"
