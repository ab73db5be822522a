"""The database server the tests run on serves reads by _id, and equality lookups, from indexes.

The hot paths (the push outbox, occurrences, snapshots) are designed around that. FerretDB v1.24.2 as
published never used the index (see the README); scripts/ensure-ferretdb.sh builds it with a patch.
Built without the patch, or on a server that scans, this fails instead of the peak minute quietly
turning quadratic.
"""

from __future__ import annotations

import json


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
