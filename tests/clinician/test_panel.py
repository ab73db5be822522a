"""The clinician's panel: figures per patient, ordering by need, filters, paging, audit, batch queries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from pymongo import monitoring

from companion.services.review import Review
from companion.store.read_models import SHOWN_FIELDS
from companion.store.relationships import CareTeams
from companion.store.stores import Stores
from tests.clinician.conftest import at_day
from tests.clinician.test_pages import sign_in
from tests.support.world import PASSWORD, make_user


def today():
    """Today (UTC) when the test runs, not when the module was collected: a run can cross midnight."""
    return datetime.now(UTC).date()


GOOD_WEEK = [True] * 7


@pytest.fixture
def panel_world(client, services, seed):
    """A clinician whose team has seven patients, each standing out (or not) for one reason."""
    clinician = make_user(client, services, key="clinician_panel", role="clinician")
    teams = CareTeams(services.db)
    team = teams.create("Panel clinic")
    teams.add_clinician(team.id, clinician.id)
    ids = {}

    def patient(name, week, *, alerts=0, pain=None, synced_days_ago=0):
        pid = seed.patient(name)
        teams.enrol(team.id, pid)
        seed.adherence_run(pid, today() - timedelta(days=1), [True] * 23 + week)
        for _ in range(alerts):
            seed.alert(pid, at_day(1))
        for days_ago, nrs in pain or []:
            seed.pain(pid, at_day(days_ago), nrs)
        seed.device(pid, f"CTU-{name.upper()}", last_sync_at=at_day(synced_days_ago, 0))
        ids[name] = pid

    patient("Alice", GOOD_WEEK, alerts=2)
    patient("Bob", [False] * 4 + [True] * 3, alerts=1)
    patient("Cara", [False, True, False, True, False, True, False])
    patient("Dan", [True, True, False, True, True, False, True], pain=[(3, 8), (20, 4)])
    patient("Eve", GOOD_WEEK, pain=[(2, 7), (5, 7), (16, 3)])
    patient("Finn", GOOD_WEEK, synced_days_ago=5)
    gus = seed.patient("Gus")
    teams.enrol(team.id, gus)
    ids["Gus"] = gus
    return clinician, ids


def _panel(client, clinician, query=""):
    response = client.get(f"/api/v1/clinician/panel{query}", headers=clinician.headers)
    assert response.status_code == 200, response.json
    return response.json


def test_panel_orders_patients_by_need(client, panel_world):
    clinician, _ = panel_world
    names = [r["display_name"] for r in _panel(client, clinician)["items"]]
    assert names == ["Alice", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus"]


def test_panel_figures_match_the_scripted_data(client, panel_world):
    clinician, _ = panel_world
    rows = {r["display_name"]: r for r in _panel(client, clinician)["items"]}
    assert (rows["Cara"]["pdc_7"], rows["Cara"]["pdc_30"]) == (round(3 / 7, 4), round(26 / 30, 4))
    assert rows["Alice"]["open_alerts"] == 2 and rows["Alice"]["reasons"] == ["2 open alerts"]
    assert (rows["Dan"]["pain_mean_14d"], rows["Dan"]["pain_change_14d"], rows["Dan"]["pain_direction"]) == (8.0, 4.0, "rising")
    assert rows["Eve"]["pain_change_14d"] == 4.0
    assert rows["Finn"]["days_since_sync"] == 5 and rows["Finn"]["reasons"] == ["no device sync for 5 days"]
    assert rows["Gus"] == {**rows["Gus"], "pdc_7": None, "pdc_30": None, "pain_direction": "unknown",
                           "days_since_sync": None, "open_alerts": 0, "reasons": []}


def test_panel_sorts_by_one_figure_with_missing_figures_last(client, panel_world):
    clinician, _ = panel_world
    ascending = [r["display_name"] for r in _panel(client, clinician, "?sort=pdc_7")["items"]]
    assert ascending[:3] == ["Bob", "Cara", "Dan"]  # 3/7, 3/7 (ties by name), 5/7 and ascending[-1] == "Gus"
    descending = [r["display_name"] for r in _panel(client, clinician, "?sort=days_since_sync&order=desc")["items"]]
    assert descending[0] == "Finn" and descending[-1] == "Gus"


def test_panel_filters(client, panel_world):
    clinician, _ = panel_world
    assert [r["display_name"] for r in _panel(client, clinician, "?pain_rising=true")["items"]] == ["Dan", "Eve"]
    assert [r["display_name"] for r in _panel(client, clinician, "?pdc_7_below=0.8")["items"]] == ["Bob", "Cara", "Dan"]
    assert [r["display_name"] for r in _panel(client, clinician, "?q=fin")["items"]] == ["Finn"]
    assert [r["display_name"] for r in _panel(client, clinician, "?open_alerts=true")["items"]] == ["Alice", "Bob"]
    assert _panel(client, clinician, "?needs_attention=true")["total"] == 6


def test_panel_pages_and_audits_exactly_the_patients_it_returns(client, panel_world, db):
    clinician, ids = panel_world
    page = _panel(client, clinician, "?limit=2&offset=2")
    assert [r["display_name"] for r in page["items"]] == ["Cara", "Dan"]
    assert (page["total"], page["next_offset"]) == (7, 4)
    events = list(db.audit_events.find({"actor_id": clinician.id, "action": "search"}))
    assert [sorted(e["patient_ids"]) for e in events] == [sorted([ids["Cara"], ids["Dan"]])]
    assert _panel(client, clinician, "?limit=2&offset=6")["next_offset"] is None


def test_panel_limit_is_bounded(client, panel_world):
    clinician, _ = panel_world
    assert client.get("/api/v1/clinician/panel?limit=1000", headers=clinician.headers).status_code == 422


class _Commands(monitoring.CommandListener):
    def __init__(self):
        self.names = []
        self.panel_rows_returned = []
        self.panel_entries_returned = []

    def started(self, event):
        self.names.append(event.command_name)

    def succeeded(self, event):
        namespace = event.reply.get("cursor", {}).get("ns", "") if event.command_name == "find" else ""
        if namespace.endswith(".panel_rows"):
            self.panel_rows_returned.append(len(event.reply["cursor"]["firstBatch"]))
        if namespace.endswith(".panel_entries"):
            self.panel_entries_returned.append(len(event.reply["cursor"]["firstBatch"]))

    def failed(self, event):
        pass


def test_panel_reads_only_the_rows_of_its_page_whatever_the_number_of_patients(mongo_uri, db, seed):
    teams = CareTeams(db)
    listener = _Commands()
    counts = []
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        for size in (3, 30):
            team = teams.create(f"team of {size}")
            teams.add_clinician(team.id, f"clinician-{size}")
            for i in range(size):
                pid = seed.patient(f"P{i}")
                teams.enrol(team.id, pid)
                seed.adherence_run(pid, today() - timedelta(days=1), GOOD_WEEK)
                seed.pain(pid, at_day(1), 5)
            review = Review(Stores(watched[db.name]))
            review.panel_page(f"clinician-{size}")  # the first read computes the rows the seed marked
            listener.names.clear()
            listener.panel_rows_returned.clear()
            listener.panel_entries_returned.clear()
            rows, total = review.panel_page(f"clinician-{size}", limit=2)
            assert (len(rows), total) == (2, size)
            # The page's two lines come from its two entries alone: no row is read.
            assert (listener.panel_entries_returned, listener.panel_rows_returned) == ([2], [])
            counts.append(len([n for n in listener.names if n in ("find", "aggregate", "count")]))
    finally:
        watched.close()
    assert counts[0] == counts[1]


def test_clinician_invites_by_email_the_patient_accepts_then_unenrols_and_leaves(client, world, services):
    clinician = world["clinician_team"]
    carol = make_user(client, services, key="carol", role="patient")
    team_id = world.team_id
    invited = client.post(f"/api/v1/clinician/teams/{team_id}/invitations", headers=clinician.headers,
                          json={"patient_email": "Carol@example.org", "reason": "Referral from GP"})
    assert invited.status_code == 202 and invited.json["status"] == "open" and invited.json["patient_id"] is None
    assert client.get(f"/api/v1/patients/{carol.id}/review/plans", headers=clinician.headers).status_code == 404
    accepted = client.post(f"/api/v1/patients/{carol.id}/invitations/{invited.json['id']}/acceptance",
                           headers=carol.headers, json={"current_password": PASSWORD})
    assert accepted.status_code == 200
    teams = client.get("/api/v1/clinician/teams", headers=clinician.headers).json["items"]
    assert teams == [{"id": team_id, "name": "Pain clinic A", "clinician_count": 1, "patient_count": 2}]
    assert client.get(f"/api/v1/patients/{carol.id}/review/plans", headers=clinician.headers).status_code == 200
    url = f"/api/v1/clinician/teams/{team_id}/patients/{carol.id}"
    assert client.delete(url, headers=clinician.headers).status_code == 204
    assert client.get(f"/api/v1/patients/{carol.id}/review/plans", headers=clinician.headers).status_code == 404
    assert client.delete(f"/api/v1/clinician/teams/{team_id}/membership", headers=clinician.headers).status_code == 204
    assert _panel(client, clinician)["items"] == []


def test_a_clinician_cannot_invite_into_a_team_they_are_not_on(client, world, seed):
    seed.patient("Dora", email="dora@example.org")
    response = client.post(f"/api/v1/clinician/teams/{world.team_id}/invitations",
                           json={"patient_email": "dora@example.org", "reason": "Referral"},
                           headers=world["clinician_other"].headers)
    assert response.status_code == 404


def test_a_patients_review_summary_is_their_panel_line_read_by_the_care_team_only(client, panel_world, world, db):
    clinician, ids = panel_world
    line = next(r for r in _panel(client, clinician)["items"] if r["display_name"] == "Dan")
    response = client.get(f"/api/v1/patients/{ids['Dan']}/review/summary", headers=clinician.headers)
    assert response.status_code == 200 and response.json == line
    assert db.audit_events.find_one({"actor_id": clinician.id, "action": "R", "patient_ids": [ids["Dan"]]})
    outsider = client.get(f"/api/v1/patients/{ids['Dan']}/review/summary", headers=world["clinician_other"].headers)
    assert outsider.status_code == 404


def test_entries_written_before_they_held_their_lines_are_shown_from_their_rows_until_written_again(
        client, panel_world, db, services):
    clinician, ids = panel_world
    before = _panel(client, clinician)["items"]
    mine = {"patient_id": {"$in": list(ids.values())}}
    assert db.panel_entries.count_documents(mine) == len(ids)
    assert db.panel_entries.count_documents({**mine, "display_name": {"$exists": True}}) == len(ids)
    for field in SHOWN_FIELDS:  # as an entry written before this change
        db.panel_entries.update_many({"patient_id": ids["Cara"]}, {"$unset": {field: ""}})
    db.panel_rows.update_one({"_id": ids["Dan"]}, {"$set": {"open_alerts": 7}})  # rows are read only when needed
    assert _panel(client, clinician)["items"] == before
    services.panel_rows.refresh([ids["Cara"]])
    cara = db.panel_entries.find_one({"patient_id": ids["Cara"]})
    assert all(field in cara for field in SHOWN_FIELDS)
    assert _panel(client, clinician)["items"] == before


def test_the_pages_links_step_by_the_page_shown(client, panel_world):
    """A bookmarked address with a limit under 50: Next and Previous step by the rows shown, so every patient can
    be reached."""
    clinician, _ = panel_world
    assert sign_in(client, clinician.email).status_code == 303
    html = client.get("/clinician/?limit=3").get_data(as_text=True)
    assert "1–3 of 7" in html
    assert re.search(r'href="[^"]*offset=(\d+)[^"]*">Next', html).group(1) == "3"
    html = client.get("/clinician/?limit=3&offset=3").get_data(as_text=True)
    assert "4–6 of 7" in html and re.search(r'href="[^"]*offset=(\d+)[^"]*">← Previous', html).group(1) == "0"
    assert re.search(r'href="[^"]*offset=(\d+)[^"]*">Next', html).group(1) == "6"


def test_a_closed_record_says_so_on_the_panel_and_asks_attention_for_its_open_alerts_alone(client, panel_world,
                                                                                          services):
    """A patient who closed their account stays on the panel (the care team keeps the record for its retention):
    their line says so, and their silent device, low adherence or rising pain no longer rank them or make them
    'need attention' (nothing will ever come from them again); an alert still open is the care team's to settle."""
    clinician, ids = panel_world
    for name in ("Bob", "Cara"):  # Bob: an open alert and a low PDC; Cara: a low PDC
        services.lifecycle.close(ids[name], by=ids[name])
    every = _panel(client, clinician)  # the team's lines, in their stored order of need
    lines = {r["display_name"]: r for r in every["items"]}
    assert [r["display_name"] for r in every["items"]] == ["Alice", "Bob", "Dan", "Eve", "Finn", "Cara", "Gus"]
    assert lines["Cara"]["account_status"] == "closed" and lines["Cara"]["closed_at"] is not None
    assert (lines["Cara"]["reasons"], lines["Cara"]["pdc_7"]) == ([], round(3 / 7, 4))  # the figure stays as it is
    assert lines["Bob"]["reasons"] == ["1 open alert"]
    assert {lines[n]["account_status"] for n in ("Alice", "Dan", "Gus")} == {"active"}
    assert lines["Alice"]["closed_at"] is None
    attention = _panel(client, clinician, "?needs_attention=true")  # filtered: from the rows, in the database
    assert [r["display_name"] for r in attention["items"]] == ["Alice", "Bob", "Dan", "Eve", "Finn"]
    summary = client.get(f"/api/v1/patients/{ids['Cara']}/review/summary", headers=clinician.headers)
    assert summary.json == lines["Cara"]


def test_the_figure_filters_leave_out_closed_records_which_stay_listed_without_a_filter(client, panel_world,
                                                                                      services):
    """A closed record asks for attention through its open alerts alone: a low 7-day PDC, rising pain or a silent
    device no longer bring it up under the filters for them (nothing will come from it again), though its line
    stays on the panel, with its figures, when no filter is given."""
    clinician, ids = panel_world
    filters = ("?pdc_7_below=0.8", "?pain_rising=true", "?silent_days=2")

    def matched():
        return {f: [r["display_name"] for r in _panel(client, clinician, f)["items"]] for f in filters}

    assert matched() == {"?pdc_7_below=0.8": ["Bob", "Cara", "Dan"], "?pain_rising=true": ["Dan", "Eve"],
                         "?silent_days=2": ["Finn"]}
    for name in ("Cara", "Eve", "Finn"):
        services.lifecycle.close(ids[name], by=ids[name])
    assert matched() == {"?pdc_7_below=0.8": ["Bob", "Dan"], "?pain_rising=true": ["Dan"], "?silent_days=2": []}
    everyone = {r["display_name"]: r["account_status"] for r in _panel(client, clinician)["items"]}
    assert everyone == {"Alice": "active", "Bob": "active", "Cara": "closed", "Dan": "active", "Eve": "closed",
                        "Finn": "closed", "Gus": "active"}


def test_migrate_computes_again_the_rows_of_closed_records_written_before_rows_held_the_account_state(
        client, panel_world, services, db):
    """Rows written by a version before rows held the account's state: an open account's is shown as it is (it
    is, and its next computation adds the state), a closed one's is computed again by `companion migrate`."""
    clinician, ids = panel_world
    services.lifecycle.close(ids["Cara"], by=ids["Cara"])
    _panel(client, clinician)
    before = {"$unset": {"account_status": "", "closed_at": ""}, "$set": {"low_pdc": True}}
    for name in ("Cara", "Dan"):
        db.panel_rows.update_one({"_id": ids[name]}, before)
        db.panel_entries.update_many({"patient_id": ids[name]}, {"$unset": {"account_status": "", "closed_at": ""}})
    assert services.panel_rows.missing() == [ids["Cara"]]
    lines = {r["display_name"]: r for r in _panel(client, clinician)["items"]}
    assert lines["Dan"]["account_status"] == "active"
    services.panel_rows.rebuild(patient_ids=services.panel_rows.missing())
    assert services.panel_rows.missing() == []
    lines = {r["display_name"]: r for r in _panel(client, clinician)["items"]}
    assert (lines["Cara"]["account_status"], lines["Cara"]["reasons"]) == ("closed", [])
    assert "Cara" not in [r["display_name"] for r in _panel(client, clinician, "?needs_attention=true")["items"]]
