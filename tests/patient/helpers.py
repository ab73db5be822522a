"""Shared pieces for the patient's-day tests: a valid plan, problem-details checks, database snapshots."""

from __future__ import annotations

PLAN = {
    "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30, "programmes": [1, 3], "intensity_min_ma": 10,
             "intensity_max_ma": 40, "start_date": "2026-03-01", "end_date": None,
             "counts_towards_adherence": True},
    "medications": [{"name": "Paracetamol", "dose": "1 g", "times": ["08:00", "20:00"],
                     "counts_towards_adherence": False}],
    "mindfulness": {"minutes_per_day": 10, "sessions_per_week": None, "counts_towards_adherence": True},
}


def snapshot(db, *collections):
    """The ids stored in each collection (to show that a refused request stored nothing)."""
    return {name: sorted(d["_id"] for d in db[name].find({}, {"_id": 1})) for name in collections}
