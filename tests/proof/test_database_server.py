"""The database server the tests run on serves reads by _id, and equality lookups, from indexes.

The hot paths (the push outbox, occurrences, snapshots) are designed around that. FerretDB v1.24.2 as
published never used the index (see the README); scripts/ensure-ferretdb.sh builds it with a patch.
Built without the patch, or on a server that scans, this fails instead of the peak minute quietly
turning quadratic.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.errors import PyMongoError


def plan_of(db, collection: str, query: dict) -> str:
    explained = db.command("explain", {"find": collection, "filter": query})
    return json.dumps(explained.get("queryPlanner", {}), default=str)


def is_ferretdb(db) -> bool:
    return "ferretdbVersion" in db.command("buildInfo")


def test_reads_by_id_and_by_a_list_of_ids_with_other_conditions_use_the_id_index(mongo_client, db_name):
    db = mongo_client[db_name]
    db.probe.insert_many([{"_id": f"n{n}", "state": "scheduled"} for n in range(50)])
    by_id = plan_of(db, "probe", {"_id": "n7"})
    by_ids = plan_of(db, "probe", {"_id": {"$in": ["n1", "n2"]}, "state": "scheduled"})
    if is_ferretdb(db):  # SQLite's own plan: SEARCH ... USING INDEX, or SCAN
        assert ("USING INDEX" in by_id, "USING INDEX" in by_ids) == (True, True), (by_id, by_ids)
    else:  # MongoDB: an index plan (IDHACK, EXPRESS_IXSCAN, IXSCAN), never a collection scan
        assert ("COLLSCAN" in by_id, "COLLSCAN" in by_ids) == (False, False), (by_id, by_ids)


def test_an_equality_on_an_indexed_field_uses_the_index_and_still_matches_array_elements(mongo_client, db_name):
    db = mongo_client[db_name]
    db.probe.create_index([("patient_id", 1), ("started_at", 1)])
    db.probe.insert_many([{"_id": f"n{n}", "patient_id": f"p{n % 5}", "started_at": n} for n in range(50)]
                         + [{"_id": "shared", "patient_id": ["p1", "p2"], "started_at": 0},
                            {"_id": "nested", "patient_id": {"id": "p1"}, "started_at": 0}])
    plan = plan_of(db, "probe", {"patient_id": "p1", "started_at": {"$gte": 10}})
    if is_ferretdb(db):
        assert "USING INDEX" in plan, plan
    else:
        assert "COLLSCAN" not in plan, plan
    found = {d["_id"] for d in db.probe.find({"patient_id": "p1"})}
    assert found == {f"n{n}" for n in range(1, 50, 5)} | {"shared"}


def test_an_in_list_on_an_indexed_field_uses_the_index_and_still_matches_array_elements(mongo_client, db_name):
    db = mongo_client[db_name]
    db.probe.create_index([("patient_id", 1), ("started_at", 1)])
    db.probe.insert_many([{"_id": f"n{n}", "patient_id": f"p{n % 5}", "started_at": n} for n in range(50)]
                         + [{"_id": "shared", "patient_id": ["p1", "p9"], "started_at": 0},
                            {"_id": "other", "patient_id": ["p8"], "started_at": 0}])
    wanted = ["p1", "p3", *[f"q{n}" for n in range(30)]]
    plan = plan_of(db, "probe", {"patient_id": {"$in": wanted}, "started_at": {"$gte": 10}})
    if is_ferretdb(db):
        assert "USING INDEX" in plan, plan
    else:
        assert "COLLSCAN" not in plan, plan
    found = {d["_id"] for d in db.probe.find({"patient_id": {"$in": wanted}})}
    assert found == {f"n{n}" for n in range(50) if n % 5 in (1, 3)} | {"shared"}


def test_a_filter_on_another_field_is_still_answered_correctly(mongo_client, db_name):
    db = mongo_client[db_name]
    db.probe.insert_many([{"_id": f"n{n}", "state": "sent" if n % 3 else "scheduled"} for n in range(30)])
    found = sorted(d["_id"] for d in db.probe.find({"_id": {"$in": ["n0", "n1", "n3", "n4"]}, "state": "scheduled"}))
    assert found == ["n0", "n3"]


def test_a_date_range_on_an_indexed_field_uses_the_index_and_answers_as_mongodb_does(mongo_client, db_name):
    """The adherence job's windowed reads: a range between two dates is served by the field's index (on our
    FerretDB build, pushed down as a comparison of the dates' JSON texts), and what it finds is MongoDB's answer
    over values of every kind: dates before 2001 and after 2286 (whose texts have another length), numbers
    and strings that sort between the bounds' texts, arrays, null, missing."""
    db = mongo_client[db_name]
    db.probe.create_index([("started_at", 1)])
    base = datetime(2026, 6, 1, tzinfo=UTC)
    days = {f"d{n}": base + timedelta(days=n) for n in range(-5, 15)}
    odd = {"y1990": datetime(1990, 1, 1, tzinfo=UTC), "y2300": datetime(2300, 1, 1, tzinfo=UTC),
           "y1969": datetime(1969, 12, 31, tzinfo=UTC),
           "number": int((base + timedelta(days=2)).timestamp() * 1000),
           "text": str(int((base + timedelta(days=2)).timestamp() * 1000)), "null": None,
           "inside_array": [base + timedelta(days=3)], "outside_array": [base - timedelta(days=30)]}
    db.probe.insert_many([{"_id": k, "started_at": v} for k, v in {**days, **odd}.items()]
                         + [{"_id": "missing"}] + [{"_id": f"filler{n}", "started_at": base - timedelta(days=400 + n)}
                                                   for n in range(200)])
    lo, hi = base, base + timedelta(days=7)
    plan = plan_of(db, "probe", {"started_at": {"$gte": lo, "$lt": hi}})
    if is_ferretdb(db):
        assert "USING INDEX" in plan, plan
    else:
        assert "COLLSCAN" not in plan, plan

    def found(condition: dict) -> set[str]:
        return {d["_id"] for d in db.probe.find({"started_at": condition})}

    assert found({"$gte": lo, "$lt": hi}) == {f"d{n}" for n in range(7)} | {"inside_array"}
    assert found({"$gt": lo, "$lte": hi}) == {f"d{n}" for n in range(1, 8)} | {"inside_array"}
    # Bounds whose texts differ in length from the dates between them (not pushed down): still every match.
    assert found({"$gte": datetime(1980, 1, 1, tzinfo=UTC), "$lt": lo}) == (
        {f"d{n}" for n in range(-5, 0)} | {"y1990", "outside_array"} | {f"filler{n}" for n in range(200)})
    assert found({"$gte": lo, "$lt": datetime(2400, 1, 1, tzinfo=UTC)}) == (
        {f"d{n}" for n in range(15)} | {"y2300", "inside_array"})
    assert found({"$gte": lo}) == {f"d{n}" for n in range(15)} | {"y2300", "inside_array"}
    assert found({"$lt": datetime(2001, 1, 1, tzinfo=UTC)}) == {"y1990", "y1969"}


def test_an_update_of_many_documents_changes_each_once_and_stops_where_one_fails(mongo_client, db_name):
    """An update statement changes every document it matches, past 500 (FerretDB companion.10 writes them
    back 500 to a transaction); when one document cannot take the change, the documents before it are
    changed and those after it are not, as when each was written on its own."""
    db = mongo_client[db_name]
    db.many.insert_many([{"_id": f"d{n:04d}", "n": n, "group": "all"} for n in range(1234)])
    result = db.many.update_many({"group": "all"}, {"$inc": {"n": 1}, "$set": {"seen": True}})
    assert (result.matched_count, result.modified_count) == (1234, 1234)
    assert sorted(d["n"] for d in db.many.find()) == list(range(1, 1235))
    assert db.many.count_documents({"seen": True}) == 1234

    db.failing.insert_many([{"_id": f"d{n:04d}", "n": n} for n in range(700)])
    db.failing.update_one({"_id": "d0600"}, {"$set": {"n": "not a number"}})
    with pytest.raises(PyMongoError):  # MongoDB and FerretDB name the failure differently
        db.failing.update_many({}, {"$inc": {"n": 1000}})
    changed = sorted(d["_id"] for d in db.failing.find({"n": {"$gte": 1000}}))
    assert changed == [f"d{n:04d}" for n in range(600)]  # every one before the failing one, none after
