"""Two computations of one patient's panel row that race, and an enrolment ended while a row is computed.

A row is computed by the refresher, by a clinician's panel read and by a review, so two computations of one
patient can overlap. The one that read the data before a write must never replace what the one that read it
after stored (the row, its days, its lines on the teams' panels); and a line must not outlive its enrolment,
whether the enrolment ended in the middle of a computation or the process stopped between the enrolment's
deletion and its line's.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from companion.domain.access import Grant, Relationship
from companion.services.read_models import PanelReadModel
from companion.store.read_models import SHOWN_FIELDS, PanelEntries
from companion.store.relationships import CareTeams
from companion.store.stores import Stores
from tests.scheduler.conftest import START
from tests.scheduler.helpers import make_person, services_on


def _enrolled(db, services):
    """A patient on a team, their row computed once."""
    person = make_person(db, "patient", "Europe/London")
    team = CareTeams(db).create("Race clinic")
    CareTeams(db).enrol(team.id, person.id)
    services.panel_rows.refresh_due()
    assert db.panel_entries.find_one({"_id": f"{team.id}:{person.id}"}) is not None
    return person, team.id


def _pain(services, person, nrs: int, clock) -> None:
    services.diary.record_entry(Grant(person.id, Relationship.SELF), {
        "client_entry_id": uuid.uuid4().hex, "nrs": nrs, "context": None, "bpi": None,
        "recorded_at": clock() - timedelta(hours=1), "session_record_id": None, "phase": None})


def test_a_computation_that_read_before_a_write_never_replaces_the_one_that_read_after(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(START)
    services = services_on(jobs_db, settings, clock)
    person, team_id = _enrolled(jobs_db, services)
    _pain(services, person, 2, clock)
    real_compute = PanelReadModel.compute
    raced = []

    def overtaken(self, who, at, kept=None):
        computed = real_compute(self, who, at, kept)  # the data as it was before the rating below
        if not raced:
            raced.append(who.id)
            _pain(services, person, 9, clock)
            services.panel_rows.refresh_due()  # another computation reads after the write and stores first
        return computed

    monkeypatch.setattr(PanelReadModel, "compute", overtaken)
    services.panel_rows.refresh_due()
    monkeypatch.undo()
    assert raced == [person.id]

    fresh, days, _ = services.panel_rows.compute(person, clock())
    assert fresh["pain_recent_mean"] == 5.5  # both ratings
    row = jobs_db.panel_rows.find_one({"_id": person.id})
    line = jobs_db.panel_entries.find_one({"_id": f"{team_id}:{person.id}"})
    assert {f: row[f] for f in SHOWN_FIELDS} == {f: fresh[f] for f in SHOWN_FIELDS}
    assert {f: line[f] for f in SHOWN_FIELDS} == {f: fresh[f] for f in SHOWN_FIELDS}
    assert services.stores.panel_row_days.by_ids([person.id])[person.id]["days"] == days
    # What the clinician is shown is the same, without waiting for another mark.
    assert services.panel_rows.one(person.id).pain.recent_mean == 5.5


def test_an_enrolment_ended_while_the_row_is_computed_leaves_no_line(jobs_db, settings, clock, traveller,
                                                                     monkeypatch):
    traveller.move_to(START)
    services = services_on(jobs_db, settings, clock)
    person, team_id = _enrolled(jobs_db, services)
    real_teams = CareTeams.team_ids_of_patient
    ended = []

    def read_then_ended(self, patient_id):
        teams = real_teams(self, patient_id)
        if not ended:  # the computation has read the team; the patient leaves it before the line is written
            ended.append(patient_id)
            CareTeams(jobs_db).unenrol(team_id, person.id, ended_by="admin")
        return teams

    services.panel_rows.mark([person.id], "a pain rating")
    monkeypatch.setattr(CareTeams, "team_ids_of_patient", read_then_ended)
    services.panel_rows.refresh_due()
    monkeypatch.undo()
    assert ended == [person.id]
    assert jobs_db.panel_entries.find_one({"_id": f"{team_id}:{person.id}"}) is None
    assert Stores(jobs_db).panel_entries.count(team_id) == 0


def test_a_stop_between_the_enrolments_deletion_and_its_lines_is_mended_by_the_next_refresh(
        jobs_db, settings, clock, traveller, monkeypatch):
    traveller.move_to(START)
    services = services_on(jobs_db, settings, clock)
    person, team_id = _enrolled(jobs_db, services)

    def stopped(self, entry_ids):
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr(PanelEntries, "delete_ids", stopped)
    with pytest.raises(RuntimeError):
        CareTeams(jobs_db).unenrol(team_id, person.id, ended_by="admin")
    monkeypatch.undo()
    assert jobs_db.team_enrolments.find_one({"patient_id": person.id}) is None
    assert Stores(jobs_db).panel_entries.count(team_id) == 1  # the line outlived its enrolment

    traveller.move_to(START + timedelta(minutes=1))
    services.panel_rows.refresh_due()
    assert Stores(jobs_db).panel_entries.count(team_id) == 0


def test_each_version_is_stored_only_over_no_later_one(jobs_db):
    """Later: from a later mark, or from the same mark as of a later instant (whatever the instant of the other)."""
    stores = Stores(jobs_db)
    row = {"_id": "p-versions", "display_name": "Ann", "name_key": "ann", "open_alerts": 0}
    jobs_db.panel_rows.insert_one(dict(row))  # a row from before versions were kept
    assert stores.panel_rows.save({**row, "open_alerts": 1}, 3, START)
    assert not stores.panel_rows.save({**row, "open_alerts": 2}, 2, START + timedelta(hours=1))
    assert stores.panel_rows.save({**row, "open_alerts": 3}, 3, START)
    assert not stores.panel_rows.save({**row, "open_alerts": 5}, 3, START - timedelta(seconds=20))
    assert stores.panel_rows.save({**row, "open_alerts": 4}, 4, START - timedelta(hours=1))
    assert jobs_db.panel_rows.find_one({"_id": "p-versions"})["open_alerts"] == 4
    assert stores.panel_row_days.save("p-versions", {"2026-03-01": {}}, "2026-03-02", 4, START)
    assert not stores.panel_row_days.save("p-versions", {}, "2026-03-02", 1, START)
    assert not stores.panel_row_days.save("p-versions", {}, "2026-03-01", 4, START - timedelta(seconds=20))
    assert stores.panel_row_days.by_ids(["p-versions"])["p-versions"]["days"] == {"2026-03-01": {}}
