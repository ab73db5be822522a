"""A team's panel read from its entries (one line per team and patient, keyed by the panel's orders).

The whole panel of a clinician with one team, in the order of need or of name, is read from an index of
`panel_entries` (the page's entries, then their rows): these tests hold it to the answer of the general path
(every patient of the clinician's teams, filtered, ordered and paged over their rows), which serves every
other view; to the orders the keys encode; and to the enrolments (a line exists only while its enrolment
does).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from companion.domain import review as rules
from companion.services.read_models import NO_CHANGE_KEY, NO_PDC_KEY, NO_SYNC_KEY, PanelReadModel
from companion.services.review import Review
from companion.store.read_models import entry_keys
from companion.store.relationships import CareTeams
from companion.store.stores import Stores

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NAMES = ["Ada", "ada", "Åsa", "Zoë", "Bo", "Bob", "Bo B", "", "O'Neil", 'Quote"d', "<b>", "Émile", "ß", "日本"]


def row_doc(pid: str, *, name: str, pdc_7: float | None, pain_change: float | None, last_sync: datetime | None,
            open_alerts: int, closed: bool = False) -> dict:
    """A stored panel row with these figures (the fields companion.services.read_models.panel_row_doc writes; a
    closed record's need keys are those of a patient without figures)."""
    ranked = not closed
    return {
        "_id": pid, "display_name": name, "name_key": name.lower(), "time_zone": "UTC",
        "pdc_7": pdc_7, "pdc_30": pdc_7, "none_pdc_7": int(pdc_7 is None), "none_pdc_30": int(pdc_7 is None),
        "low_pdc": ranked and pdc_7 is not None and pdc_7 < rules.ADHERENT_PDC,
        "pdc_7_key": pdc_7 if ranked and pdc_7 is not None else NO_PDC_KEY,
        "pain_recent_mean": None, "pain_previous_mean": None,
        "pain_change": pain_change, "none_pain_change": int(pain_change is None),
        "pain_change_key": pain_change if ranked and pain_change is not None else NO_CHANGE_KEY,
        "pain_direction": "rising" if (pain_change or 0) > 0 else "steady",
        "last_sync": last_sync, "none_sync": int(last_sync is None),
        "sync_key": last_sync if ranked and last_sync is not None else NO_SYNC_KEY, "open_alerts": open_alerts,
        "account_status": "closed" if closed else "active", "closed_at": NOW - timedelta(days=40) if closed else None,
    }


def random_row(rng: random.Random, pid: str) -> dict:
    return row_doc(pid, name=rng.choice(NAMES),
                   pdc_7=rng.choice([None, 0.0, 0.5, 4 / 7, 6 / 7, 0.8, 1.0]),
                   pain_change=rng.choice([None, -2.5, -0.0, 0.0, 0.25, 1.5]),
                   last_sync=rng.choice([None, NOW - timedelta(days=rng.randint(0, 9), milliseconds=rng.randint(0, 10**6))]),
                   open_alerts=rng.choice([0, 0, 1, 2, 12]), closed=rng.random() < 0.2)


def need_order(row: dict) -> tuple:
    """companion.store.read_models.NEED_ORDER as MongoDB compares it."""
    sync = row["sync_key"].replace(tzinfo=UTC) if row["sync_key"].tzinfo is None else row["sync_key"]
    return (-row["open_alerts"], not row["low_pdc"], row["pdc_7_key"], -row["pain_change_key"],
            sync.replace(microsecond=sync.microsecond // 1000 * 1000), row["name_key"].encode(), row["_id"])


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10**9), size=st.integers(2, 40))
def test_the_keys_sort_as_the_orders_they_stand_for(seed, size):
    rng = random.Random(seed)
    rows = [random_row(rng, f"{n:024x}") for n in rng.sample(range(10**6), size)]
    by_key = sorted(rows, key=lambda r: entry_keys(r)["k_need"])
    assert [r["_id"] for r in by_key] == [r["_id"] for r in sorted(rows, key=need_order)]
    by_name = sorted(rows, key=lambda r: entry_keys(r)["k_name"])
    assert [r["_id"] for r in by_name] == [r["_id"] for r in sorted(rows, key=lambda r: (r["name_key"].encode(),
                                                                                          r["_id"]))]
    for row in rows:  # nothing JSON escapes: the development server's index order is MongoDB's for them
        for key in entry_keys(row).values():
            assert all(c in "0123456789abcdef!" for c in key), key


def _team_with_rows(db, rng: random.Random, size: int) -> tuple[Stores, str, list[str]]:
    stores = Stores(db)
    teams = CareTeams(db)
    team = teams.create("Entries clinic")
    teams.add_clinician(team.id, "clinician-entries")
    ids = []
    for _ in range(size):
        pid = f"{rng.randrange(16**24):024x}"
        teams.enrol(team.id, pid)
        row = random_row(rng, pid)
        stores.panel_rows.save(row, 0, datetime(2026, 3, 2, tzinfo=UTC))
        stores.panel_entries.save(row, [team.id], 0, datetime(2026, 3, 2, tzinfo=UTC))
        ids.append(pid)
    db.panel_row_marks.delete_many({})  # the rows are written: nothing waits to be computed
    return stores, team.id, ids


def test_a_teams_page_from_its_entries_is_the_page_of_the_general_path(db):
    rng = random.Random(7)
    stores, team_id, ids = _team_with_rows(db, rng, 120)
    model = PanelReadModel(stores, clock=lambda: NOW)
    for sort in ("need", "name"):
        for descending in (False, True):
            for offset, limit in ((0, 50), (50, 50), (100, 50), (13, 7), (0, 500)):
                served, total = model.team_page(team_id, sort=sort, descending=descending, offset=offset, limit=limit)
                general, general_total = model.page(ids, sort=sort, descending=descending, offset=offset, limit=limit)
                assert [r.patient_id for r in served] == [r.patient_id for r in general], (sort, descending, offset)
                assert total == general_total == 120


def test_the_clinicians_panel_of_one_team_is_served_from_the_entries(db):
    rng = random.Random(11)
    stores, team_id, ids = _team_with_rows(db, rng, 30)
    review = Review(stores, clock=lambda: NOW)
    db.panel_entries.update_many({}, {"$set": {"display_name": "changed behind the rows' back"}})
    rows, total = review.panel_page("clinician-entries", limit=10)
    assert total == 30 and len(rows) == 10
    # The lines come from the entries alone, in their order; filtered views take the general path and agree.
    assert all(r.display_name == "changed behind the rows' back" for r in rows)
    expected = [r.patient_id for r in PanelReadModel(stores, clock=lambda: NOW).page(ids, limit=10)[0]]
    assert [r.patient_id for r in rows] == expected


def test_an_ended_enrolment_takes_the_patient_off_the_panel_at_once(db):
    rng = random.Random(3)
    stores, team_id, ids = _team_with_rows(db, rng, 12)
    review = Review(stores, clock=lambda: NOW)
    gone, crashed = ids[0], ids[1]
    CareTeams(db).unenrol(team_id, gone, ended_by="admin")
    assert db.panel_entries.find_one({"_id": f"{team_id}:{gone}"}) is None
    # A crash between the enrolment's deletion and its entry's: the entry is never shown, and is removed.
    db.team_enrolments.delete_one({"_id": f"{team_id}:{crashed}"})
    rows, total = review.panel_page("clinician-entries", limit=50)
    shown = {r.patient_id for r in rows}
    assert gone not in shown and crashed not in shown and shown == set(ids[2:])
    assert db.panel_entries.find_one({"_id": f"{team_id}:{crashed}"}) is None
    assert review.panel_page("clinician-entries", limit=50)[1] == 10


def test_a_patient_enrolled_appears_once_their_row_is_computed_and_a_second_team_keeps_its_own_line(db, seed):
    teams = CareTeams(db)
    first, second = teams.create("First clinic"), teams.create("Second clinic")
    teams.add_clinician(first.id, "clinician-first")
    teams.add_clinician(second.id, "clinician-second")
    ids = [seed.patient(name) for name in ("Ada", "Bo", "Cy")]
    for pid in ids:
        teams.enrol(first.id, pid)  # marks the row: the next read of the team computes it first
    review = Review(Stores(db))
    rows, total = review.panel_page("clinician-first")
    assert total == 3 and sorted(r.patient_id for r in rows) == sorted(ids)
    assert review.panel_page("clinician-second") == ([], 0)
    teams.enrol(second.id, ids[0])
    assert [r.patient_id for r in review.panel_page("clinician-second")[0]] == [ids[0]]
    assert db.panel_entries.count_documents({"patient_id": ids[0]}) == 2
    assert review.panel_page("clinician-first")[1] == 3
    # A clinician on both teams is served by the general path (one line per patient).
    teams.add_clinician(second.id, "clinician-first")
    rows, total = review.panel_page("clinician-first")
    assert total == 3 and sorted(r.patient_id for r in rows) == sorted(ids)
    teams.delete_enrolments_of(ids[0])
    assert db.panel_entries.count_documents({"patient_id": ids[0]}) == 0
    assert review.panel_page("clinician-second") == ([], 0)


def test_an_enrolment_written_before_its_id_was_derived_still_counts(db):
    rng = random.Random(13)
    stores, team_id, ids = _team_with_rows(db, rng, 6)
    older = ids[2]
    db.team_enrolments.delete_one({"_id": f"{team_id}:{older}"})
    db.team_enrolments.insert_one({"_id": "enrolment-from-before", "team_id": team_id, "patient_id": older})
    rows, total = Review(stores, clock=lambda: NOW).panel_page("clinician-entries")
    assert older in {r.patient_id for r in rows} and total == 6
    assert db.panel_entries.find_one({"_id": f"{team_id}:{older}"}) is not None
