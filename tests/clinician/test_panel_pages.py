"""Pages of a team's panel kept by a web process (companion.services.read_models.PanelPages).

A kept page is answered again only while its care team's panel version, read with the team on every request, is
the one it was read under; every write or deletion of one of the team's entries moves that version on, whichever
process makes it. These tests change the entries behind the stores' back (no version moved) to see whether a page
was kept, then through the stores to see that it no longer is.
"""

from __future__ import annotations

import random

from companion.services.read_models import PanelPages, PanelReadModel
from companion.services.review import Review
from companion.store.relationships import CareTeams
from companion.store.stores import Stores
from tests.clinician.test_panel_entries import NOW, _team_with_rows, random_row

CLINICIAN = "clinician-entries"  # the team's clinician in _team_with_rows


class Ticker:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def process(db, ticker=None) -> Review:
    """The panel as one web process reads it: its own kept pages, the shared database."""
    stores = Stores(db)
    pages = PanelPages(size=16, max_age_s=60, ticker=ticker or Ticker())
    return Review(stores, clock=lambda: NOW, panel_rows=PanelReadModel(stores, clock=lambda: NOW, pages=pages))


def names(review: Review, **page) -> list[str]:
    return [r.display_name for r in review.panel_page(CLINICIAN, **page)[0]]


def version(db, team_id: str) -> int:
    return db.care_teams.find_one({"_id": team_id}).get("panel_v", 0)


def test_a_page_is_kept_while_the_team_is_unchanged_and_read_again_once_another_process_changes_it(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(5), 12)
    reader, writer = process(db), process(db)
    first = names(reader, limit=5)
    db.panel_entries.update_many({}, {"$set": {"display_name": "behind the stores' back"}})
    assert names(reader, limit=5) == first  # kept: the entries were not read again
    assert names(reader, limit=6) == ["behind the stores' back"] * 6  # another page was never kept
    # Another process writes one patient's row: the team's version moves on, the page is read again.
    writer.panel_rows.entries.save(random_row(random.Random(1), ids[0]), [team_id], 1)
    assert "behind the stores' back" in names(reader, limit=5)


def test_every_change_to_a_teams_entries_moves_its_version_and_no_other_teams(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(8), 6)
    teams = CareTeams(db)
    other = teams.create("Other clinic").id
    teams.enrol(other, ids[0])
    entries = stores.panel_entries
    changes = [
        ("an entry written", lambda: entries.save(random_row(random.Random(2), ids[1]), [team_id], 1)),
        ("an entry of an ended enrolment dropped", lambda: entries.keep_only(ids[2], [], 1)),
        ("entries deleted by id", lambda: entries.delete_ids([f"{team_id}:{ids[3]}"])),
        ("a patient's entries deleted", lambda: entries.delete_for_patient(ids[4])),
        ("an enrolment ended", lambda: teams.unenrol(team_id, ids[5], ended_by="admin")),
    ]
    for what, change in changes:
        before, others_before = version(db, team_id), version(db, other)
        change()
        assert version(db, team_id) > before, what
        assert version(db, other) == others_before, what
    # Nothing to drop: no version moves (a row computed again keeps the entries of its teams).
    before = version(db, team_id)
    entries.keep_only(ids[0], [team_id, other], 2)
    assert version(db, team_id) == before


def test_a_page_is_kept_for_at_most_its_age(db):
    _team_with_rows(db, random.Random(9), 8)
    ticker = Ticker()
    reader = process(db, ticker)
    first = names(reader, limit=4)
    db.panel_entries.update_many({}, {"$set": {"display_name": "renamed"}})
    ticker.now += 59
    assert names(reader, limit=4) == first
    ticker.now += 2  # (a process that died between an entry's write and its version's move is seen within a minute)
    assert names(reader, limit=4) == ["renamed"] * 4


def test_a_patient_whose_enrolment_ended_is_never_shown_from_a_kept_page(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(4), 10)
    reader = process(db)
    shown = [r.patient_id for r in reader.panel_page(CLINICIAN, limit=10)[0]]
    gone = shown[3]
    # A process that died right after deleting the enrolment: the entry is still there, no version moved.
    db.team_enrolments.delete_one({"_id": f"{team_id}:{gone}"})
    rows, total = reader.panel_page(CLINICIAN, limit=10)
    assert gone not in {r.patient_id for r in rows} and len(rows) == 9 and total == 9
    assert db.panel_entries.find_one({"_id": f"{team_id}:{gone}"}) is None


def test_a_process_that_keeps_no_pages_reads_the_entries_every_time(db):
    stores, _, _ = _team_with_rows(db, random.Random(6), 5)
    reader = Review(stores, clock=lambda: NOW, panel_rows=PanelReadModel(stores, clock=lambda: NOW,
                                                                          pages=PanelPages(size=0)))
    names(reader, limit=5)
    db.panel_entries.update_many({}, {"$set": {"display_name": "at once"}})
    assert names(reader, limit=5) == ["at once"] * 5


def test_a_read_that_finds_more_marks_for_now_than_it_takes_is_not_kept(db, monkeypatch):
    from companion.services import read_models

    stores, _, _ = _team_with_rows(db, random.Random(11), 6)
    reader = process(db)
    first = names(reader, limit=4)
    monkeypatch.setattr(read_models, "MARKS_READ_AT_MOST", 3)
    # A flood of uploads marked other patients, more than a read takes: the read reads only the first marks,
    # so it cannot know that none of the rest is the team's, and answers from the entries, not a kept page.
    stores.panel_row_marks.mark(["elsewhere-1", "elsewhere-2"], "sessions", NOW)
    db.panel_entries.update_many({}, {"$set": {"display_name": "behind the stores' back"}})
    assert names(reader, limit=4) == first  # fewer marks than it takes: still kept
    stores.panel_row_marks.mark(["elsewhere-3"], "sessions", NOW)
    assert names(reader, limit=4) == ["behind the stores' back"] * 4
