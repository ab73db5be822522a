"""A panel row and a patient's review read adherence snapshots by their computed ids (`<patient>:<date>`).

On MongoDB either access path uses an index; on FerretDB only `_id` and `_id $in` are served from an
index, any other filter reads the whole collection. These pin the id-only access path and its chunking.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from pymongo import monitoring

from companion.services.read_models import PanelReadModel
from companion.services.review import PatientReview
from companion.store.accounts import Users
from companion.store.relationships import CareTeams
from companion.store.stores import Stores


def today():
    """Today (UTC) when the test runs, not when the module was collected: a run can cross midnight."""
    return datetime.now(UTC).date()


class _SnapshotFilters(monitoring.CommandListener):
    def __init__(self):
        self.filters = []

    def started(self, event):
        if event.command_name == "find" and event.command["find"] == "adherence_days":
            self.filters.append(event.command["filter"])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
def watched(mongo_uri, db):
    listener = _SnapshotFilters()
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    yield client[db.name], listener
    client.close()


def _team(db, seed, names: list[str], zone: str = "UTC") -> tuple[str, list[str]]:
    teams = CareTeams(db)
    team = teams.create("Snapshot clinic")
    teams.add_clinician(team.id, "clinician-snapshots")
    ids = []
    for index, name in enumerate(names):
        pid = seed.patient(name, zone=zone)
        teams.enrol(team.id, pid)
        seed.adherence_run(pid, today() - timedelta(days=1), [index % 2 == 0, True, False] * 12)
        ids.append(pid)
    return "clinician-snapshots", ids


def test_a_panel_row_reads_the_patients_thirty_completed_days_by_snapshot_id(watched, db, seed):
    snapshot_db, listener = watched
    _, ids = _team(db, seed, ["Ada", "Ben"])
    assert PanelReadModel(Stores(snapshot_db)).refresh(ids) == 2
    assert [list(f) for f in listener.filters] == [["_id"], ["_id"]]
    for pid, query in zip(sorted(ids), listener.filters, strict=True):
        assert set(query["_id"]["$in"]) == {f"{pid}:{(today() - timedelta(days=n)).isoformat()}" for n in range(1, 31)}


def test_a_patients_review_reads_today_and_the_ninety_days_before_by_snapshot_id(watched, db, seed):
    snapshot_db, listener = watched
    _, (pid,) = _team(db, seed, ["Ada"], zone="Pacific/Auckland")
    patient = Users(snapshot_db).by_id(pid)
    review = PatientReview(Stores(snapshot_db), patient)
    review.adherence(30)
    assert [list(f) for f in listener.filters] == [["_id"]]
    assert set(listener.filters[0]["_id"]["$in"]) == {
        f"{pid}:{(review.today - timedelta(days=n)).isoformat()}" for n in range(91)}
