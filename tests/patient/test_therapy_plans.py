"""Therapy plans: the care team prescribes new versions; the history is kept; races do not lose a version."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta

from tests.patient.helpers import PLAN, snapshot
from tests.support.problems import assert_problem


def put_plan(client, world, plan, who="clinician_team"):
    return client.put(f"/api/v1/patients/{world['patient_a'].id}/therapy-plan", json=plan,
                      headers=world[who].headers)


def test_clinician_sets_a_plan_and_every_related_person_reads_it(client, world):
    created = put_plan(client, world, PLAN)
    assert created.status_code == 201, created.json
    assert created.json["version"] == 1
    assert created.json["created_by"] == world["clinician_team"].id
    for who in ("patient_a", "caregiver_linked", "clinician_team"):
        read = client.get(f"/api/v1/patients/{world['patient_a'].id}/therapy-plan", headers=world[who].headers)
        assert read.status_code == 200
        assert read.json["tens"] == PLAN["tens"]
        assert read.json["medications"] == PLAN["medications"]
        assert read.json["mindfulness"] == PLAN["mindfulness"]


def test_before_any_plan_the_current_plan_is_version_zero_with_no_tasks(client, world):
    read = client.get(f"/api/v1/patients/{world['patient_a'].id}/therapy-plan", headers=world["patient_a"].headers)
    assert read.status_code == 200
    assert (read.json["version"], read.json["tens"], read.json["medications"]) == (0, None, [])


def test_a_change_is_a_new_version_and_the_old_one_is_closed(client, world):
    put_plan(client, world, PLAN)
    changed = copy.deepcopy(PLAN)
    changed["tens"]["sessions_per_day"] = 3
    second = put_plan(client, world, changed)
    assert second.json["version"] == 2
    history = client.get(f"/api/v1/patients/{world['patient_a'].id}/therapy-plan/versions",
                         headers=world["patient_a"].headers).json["items"]
    assert [p["version"] for p in history] == [2, 1]
    assert history[1]["active_to"] == history[0]["active_from"]
    assert history[0]["active_to"] is None
    assert [p["tens"]["sessions_per_day"] for p in history] == [3, 2]


def test_every_version_is_listed_a_page_at_a_time(client, world, db):
    patient = world["patient_a"]
    written = datetime(2026, 1, 1, tzinfo=UTC)
    db.therapy_plans.insert_many([
        {"_id": f"plan-{n}", "patient_id": patient.id, "version": n, "created_at": written + timedelta(hours=n),
         "created_by": world["clinician_team"].id, "active_from": written + timedelta(hours=n),
         "active_to": None if n == 101 else written + timedelta(hours=n + 1), "tens": None, "medications": [],
         "mindfulness": None, "seq": n} for n in range(1, 102)])
    first = client.get(f"/api/v1/patients/{patient.id}/therapy-plan/versions", headers=patient.headers)
    assert ([p["version"] for p in first.json["items"]][::99], first.headers["Link"]) == (
        [101, 2], f'<{first.json["next"]}>; rel="next"')
    rest = client.get(first.json["next"], headers=patient.headers).json
    assert ([p["version"] for p in rest["items"]], rest["next"]) == ([1], None)
    small = client.get(f"/api/v1/patients/{patient.id}/therapy-plan/versions?limit=60", headers=patient.headers).json
    assert len(small["items"]) + len(client.get(small["next"], headers=patient.headers).json["items"]) == 101
    assert_problem(client.get(f"/api/v1/patients/{patient.id}/therapy-plan/versions?cursor=xyz",
                              headers=patient.headers), 422)


def test_patient_and_caregiver_cannot_prescribe(client, world, db):
    for who in ("patient_a", "caregiver_linked"):
        assert put_plan(client, world, PLAN, who).status_code == 403
    assert db.therapy_plans.count_documents({}) == 0


def test_a_stale_based_on_version_is_a_conflict(client, world, db):
    put_plan(client, world, {**PLAN, "based_on_version": 0})
    put_plan(client, world, {**PLAN, "based_on_version": 1})
    stale = put_plan(client, world, {**PLAN, "based_on_version": 1})
    assert_problem(stale, 409)
    assert db.therapy_plans.count_documents({}) == 2


def test_concurrent_changes_each_get_their_own_version(app, world, db):
    barrier = threading.Barrier(4)
    statuses = []

    def change():
        client = app.test_client()
        barrier.wait()
        statuses.append(put_plan(client, world, PLAN).status_code)

    threads = [threading.Thread(target=change) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = sorted(p["version"] for p in db.therapy_plans.find({}))
    assert versions == list(range(1, statuses.count(201) + 1))
    assert set(statuses) <= {201, 409}


BAD_PLANS = {
    "negative minutes per session": {"tens": {**PLAN["tens"], "minutes_per_session": -30}},
    "no sessions nor minutes target": {"tens": {**PLAN["tens"], "sessions_per_day": None}},
    "intensity range upside down": {"tens": {**PLAN["tens"], "intensity_min_ma": 50}},
    "ends before it starts": {"tens": {**PLAN["tens"], "end_date": "2026-02-01"}},
    "medication time not a clock time": {"medications": [{"name": "x", "dose": "1", "times": ["25:00"]}]},
    "unknown field": {"owner": "me"},
    "server-owned version": {"version": 7},
    "operator injection": {"tens": {**PLAN["tens"], "minutes_per_session": {"$ne": None}}},
}


def test_bad_plans_are_refused_and_store_nothing(client, world, db):
    for case, change in BAD_PLANS.items():
        before = snapshot(db, "therapy_plans")
        body = assert_problem(put_plan(client, world, {**PLAN, **change}), 422)
        assert body.get("errors"), case
        assert snapshot(db, "therapy_plans") == before, case
