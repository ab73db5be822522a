"""Pages of a team's panel kept by a web process (companion.services.read_models.PanelPages).

A kept page is answered again only while its care team's panel version, read with the team on every request, is
the one it was read under; every write or deletion of one of the team's entries moves that version on, whichever
process makes it. These tests change the entries behind the stores' back (no version moved) to see whether a page
was kept, then through the stores to see that it no longer is.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pymongo
import pytest

from companion.services.read_models import ENDING_FINISHED_AFTER, MARKS_SEEN_FOR, PanelPages, PanelReadModel
from companion.services.review import Review
from companion.store.read_models import NoneForNowSeen
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
    """The panel as one web process reads it: its own kept pages and its own note of having found no marks for
    now (what the tests' stores mark is another process's), the shared database."""
    stores = Stores(db)
    ticker = ticker or Ticker()
    stores.panel_row_marks.seen = NoneForNowSeen(ticker)
    pages = PanelPages(size=16, max_age_s=60, ticker=ticker)
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
    writer.panel_rows.entries.save(random_row(random.Random(1), ids[0]), [team_id], 1,
                                   datetime(2026, 3, 2, tzinfo=UTC))
    assert "behind the stores' back" in names(reader, limit=5)


def test_every_change_to_a_teams_entries_moves_its_version_and_no_other_teams(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(8), 6)
    teams = CareTeams(db)
    other = teams.create("Other clinic").id
    teams.enrol(other, ids[0])
    entries = stores.panel_entries
    changes = [
        ("an entry written", lambda: entries.save(random_row(random.Random(2), ids[1]), [team_id], 1,
                                                  datetime(2026, 3, 2, tzinfo=UTC))),
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


class _Collections(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def started(self, event):
        self.seen.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_a_kept_page_is_answered_after_reading_the_team_and_at_most_the_marks_due_now(db, mongo_uri):
    _team_with_rows(db, random.Random(15), 12)
    listener = _Collections()
    watched = pymongo.MongoClient(mongo_uri, tz_aware=True, event_listeners=[listener])
    try:
        ticker = Ticker()
        reader = process(watched[db.name], ticker)
        first = names(reader, limit=5)
        listener.seen.clear()
        assert names(reader, limit=5) == first
        # No entry, row or enrolment is read: the team's version says none of its lines changed or ended; nor the
        # marks, which the first read found none of a moment ago.
        assert listener.seen == [("find", "care_teams")]
        listener.seen.clear()
        ticker.now += MARKS_SEEN_FOR + 0.5
        assert names(reader, limit=5) == first
        assert listener.seen == [("find", "care_teams"), ("find", "panel_row_marks")]
    finally:
        watched.close()


def test_a_mark_another_process_wrote_is_seen_after_a_moment_and_one_this_process_wrote_at_once(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(16), 6)
    ticker = Ticker()
    reader = process(db, ticker)
    first = {r.patient_id: r.display_name for r in reader.panel_page(CLINICIAN, limit=6)[0]}
    # Another process stored a patient's data (the row's input; here its account's name) and marked the row.
    db.users.insert_one({"_id": ids[0], "email": "x@example.org", "role": "patient", "display_name": "Renamed",
                         "time_zone": "UTC", "password_hash": "-"})
    stores.panel_row_marks.mark([ids[0]], "profile", NOW)
    assert {r.patient_id: r.display_name for r in reader.panel_page(CLINICIAN, limit=6)[0]} == first
    ticker.now += MARKS_SEEN_FOR + 0.1
    assert {r.patient_id: r.display_name for r in reader.panel_page(CLINICIAN, limit=6)[0]}[ids[0]] == "Renamed"
    # This process marks a row (its own write): the next read reads the marks, whenever it last found none.
    db.users.update_one({"_id": ids[0]}, {"$set": {"display_name": "Renamed again"}})
    reader.panel_rows.marks.mark([ids[0]], "profile", NOW)
    assert {r.patient_id: r.display_name for r in reader.panel_page(CLINICIAN, limit=6)[0]}[ids[0]] == "Renamed again"


def test_a_read_of_the_marks_under_way_while_this_process_marks_a_row_leaves_no_note():
    ticker = Ticker()
    seen = NoneForNowSeen(ticker)
    started = seen.before_read("db")
    seen.marking("db")  # written while the read was under way: the read may have missed it
    seen.found_none("db", started)
    assert not seen.within("db", MARKS_SEEN_FOR)
    seen.found_none("db", seen.before_read("db"))
    assert seen.within("db", MARKS_SEEN_FOR) and not seen.within("other", MARKS_SEEN_FOR)
    ticker.now += MARKS_SEEN_FOR + 0.01
    assert not seen.within("db", MARKS_SEEN_FOR)


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


def _stop_between_the_deletions(teams: CareTeams, monkeypatch) -> None:
    """These stores stop (a process killed) when unenrol deletes the panel entry, after the enrolment went."""
    def stopped(entry_ids):
        raise RuntimeError("the process stopped here")
    monkeypatch.setattr(teams.panel_entries, "delete_ids", stopped)


def test_a_patient_whose_enrolment_ended_is_never_shown_from_a_kept_page(db, monkeypatch):
    stores, team_id, ids = _team_with_rows(db, random.Random(4), 10)
    reader = process(db)
    shown = [r.patient_id for r in reader.panel_page(CLINICIAN, limit=10)[0]]
    gone = shown[3]
    # A process that stopped right after deleting the enrolment: the entry is still there.
    dying = CareTeams(db)
    _stop_between_the_deletions(dying, monkeypatch)
    with pytest.raises(RuntimeError):
        dying.unenrol(team_id, gone, ended_by="clinician")
    assert db.team_enrolments.find_one({"_id": f"{team_id}:{gone}"}) is None
    assert db.panel_entries.find_one({"_id": f"{team_id}:{gone}"}) is not None
    rows, total = reader.panel_page(CLINICIAN, limit=10)
    assert gone not in {r.patient_id for r in rows} and len(rows) == 9 and total == 9
    assert db.panel_entries.find_one({"_id": f"{team_id}:{gone}"}) is None
    # While the ending is unfinished no page of the team is kept: every read reads the entries.
    db.panel_entries.update_many({}, {"$set": {"display_name": "behind the stores' back"}})
    assert names(reader, limit=9) == ["behind the stores' back"] * 9


def test_an_ending_stopped_half_way_is_finished_and_pages_are_kept_again(db, monkeypatch):
    stores, team_id, ids = _team_with_rows(db, random.Random(12), 6)
    dying = CareTeams(db)
    _stop_between_the_deletions(dying, monkeypatch)
    with pytest.raises(RuntimeError):
        dying.unenrol(team_id, ids[0], ended_by="admin")
    started = db.care_teams.find_one({"_id": team_id})["ending_at"].replace(tzinfo=UTC)
    teams = CareTeams(db)
    assert teams.finish_endings(started) == 0  # only endings begun before the instant given
    assert db.care_teams.find_one({"_id": team_id})["ending"] == [ids[0]]
    assert db.panel_entries.find_one({"_id": f"{team_id}:{ids[0]}"}) is not None
    assert teams.finish_endings(started + timedelta(seconds=1)) == 1
    team = db.care_teams.find_one({"_id": team_id})
    assert team["ending"] == [] and "ending_at" not in team
    assert db.panel_entries.find_one({"_id": f"{team_id}:{ids[0]}"}) is None
    reader = process(db)
    first = names(reader, limit=5)
    assert len(first) == 5
    db.panel_entries.update_many({}, {"$set": {"display_name": "behind the stores' back"}})
    assert names(reader, limit=5) == first  # kept again


@pytest.mark.parametrize("enrolment_id", ["derived", "from before ids were derived"])
def test_the_refresher_finishes_an_ending_stopped_before_the_enrolment_went_and_the_patient_stays(
        db, monkeypatch, enrolment_id):
    stores, team_id, ids = _team_with_rows(db, random.Random(13), 4)
    if enrolment_id != "derived":
        old = db.team_enrolments.find_one_and_delete({"_id": f"{team_id}:{ids[1]}"})
        db.team_enrolments.insert_one({**old, "_id": "5f0000000000000000000001"})
    dying = CareTeams(db)
    monkeypatch.setattr(dying, "enrolments", None)  # stops at its first use: after the team noted the ending
    with pytest.raises(AttributeError):
        dying.unenrol(team_id, ids[1], ended_by="patient")
    db.panel_row_marks.delete_many({})  # (these rows are made up, no patient's data: none is computed again)
    started = db.care_teams.find_one({"_id": team_id})["ending_at"].replace(tzinfo=UTC)
    clock = {"at": started + ENDING_FINISHED_AFTER - timedelta(seconds=5)}
    refresher = PanelReadModel(Stores(db), clock=lambda: clock["at"])
    refresher.refresh_due()  # too soon: it may still be under way
    assert db.care_teams.find_one({"_id": team_id})["ending"] == [ids[1]]
    clock["at"] += timedelta(seconds=10)
    refresher.refresh_due()
    assert db.care_teams.find_one({"_id": team_id})["ending"] == []
    assert db.team_enrolments.find_one({"team_id": team_id, "patient_id": ids[1]}) is not None
    assert db.panel_entries.find_one({"_id": f"{team_id}:{ids[1]}"}) is not None
    assert ids[1] in {r.patient_id for r in process(db).panel_page(CLINICIAN, limit=10)[0]}


def test_an_ending_that_finishes_lets_pages_be_kept_at_once(db):
    stores, team_id, ids = _team_with_rows(db, random.Random(14), 6)
    CareTeams(db).unenrol(team_id, ids[2], ended_by="clinician")
    reader = process(db)
    first = names(reader, limit=5)
    assert ids[2] not in {r.patient_id for r in reader.panel_page(CLINICIAN, limit=5)[0]}
    db.panel_entries.update_many({}, {"$set": {"display_name": "behind the stores' back"}})
    assert names(reader, limit=5) == first


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
    reader.panel_rows.marks.seen.ticker.now += MARKS_SEEN_FOR + 0.1  # (the marks are read again)
    assert names(reader, limit=4) == first  # fewer marks than it takes: still kept
    stores.panel_row_marks.mark(["elsewhere-3"], "sessions", NOW)
    assert names(reader, limit=4) == ["behind the stores' back"] * 4
