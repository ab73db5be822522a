"""One page of a sorted query is the same page whether the server reads only that page or every document.

The project's FerretDB build reads one page of a query sorted on top-level fields straight from SQLite
(ordered, limited to skip + limit) when the filter is one it applies exactly (none, or on `_id` alone):
see scripts/ferretdb-v1.24.2-sorted-page.patch. SQLite orders the values as MongoDB does only for some types
(null or missing, numbers, strings, ObjectIDs, booleans, dates); when a sort field holds anything else in a
matching document, the server reads and sorts everything as before. These tests compare each page with the
same query written so that the patch cannot apply (a second, always-true condition), which FerretDB answers
by reading, filtering and sorting every document in Go, and with the order MongoDB documents.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from bson import Binary, ObjectId, Regex

SORTS = [
    [("v", 1), ("_id", 1)],
    [("v", -1), ("_id", 1)],
    [("v", 1), ("w", -1), ("_id", -1)],
    [("w", 1), ("v", 1), ("_id", 1)],
]
# MongoDB's order of types (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/).
RANK = {type(None): 1, int: 2, float: 2, str: 3, ObjectId: 7, bool: 8, datetime: 9}


def sortable_value(rng: random.Random):
    """A value of one of the types the patch orders in SQLite, or nothing (the field left out)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return rng.choice([
        lambda: None,
        lambda: rng.randint(-5, 5),
        lambda: rng.choice([-2.5, 0.0, 0.25, 1.5, 3.0, 1e12]),
        lambda: 2**40 + rng.randint(0, 3),
        lambda: rng.choice(["", "a", "B", "b", "ab", "é", "zz", "10", "9"]),
        lambda: ObjectId(f"{rng.randint(0, 15):024x}"),
        lambda: rng.choice([True, False]),
        lambda: base + timedelta(milliseconds=rng.randint(-10**9, 10**9)),
        lambda: "MISSING",
    ])()


def documents(rng: random.Random, n: int, *, unsortable: bool = False) -> list[dict]:
    docs = []
    for i in range(n):
        doc = {"_id": f"p{i:04d}"}
        for field in ("v", "w"):
            value = sortable_value(rng)
            if value != "MISSING":
                doc[field] = value
        docs.append(doc)
    if unsortable:  # one document whose sort field MongoDB orders by an element or a sub-document
        docs[rng.randrange(n)]["v"] = rng.choice([[3, "a"], {"x": 1}, [], [None]])
    return docs


def mongodb_key(doc: dict, sort: list[tuple[str, int]]):
    """The order MongoDB documents for these scalar types (ties broken by the sort's last key, _id)."""
    class Key:
        def __init__(self, d):
            self.d = d

        def __lt__(self, other):
            for field, direction in sort:
                a, b = self.d.get(field), other.d.get(field)
                ka, kb = (RANK[type(a)], a), (RANK[type(b)], b)
                if ka[0] != kb[0]:
                    return (ka[0] < kb[0]) if direction == 1 else (ka[0] > kb[0])
                if a is None or a == b:
                    continue
                if isinstance(a, str):
                    a, b = a.encode(), b.encode()
                return (a < b) if direction == 1 else (a > b)
            return False
    return Key(doc)


@pytest.mark.parametrize("seed", range(6))
def test_a_page_read_in_sqlite_is_the_page_mongodb_returns(mongo_client, db_name, seed):
    rng = random.Random(seed)
    col = mongo_client[db_name].things
    docs = documents(rng, 300)
    col.insert_many(docs)
    ids = [d["_id"] for d in docs]
    for sort in SORTS:
        expected = [d["_id"] for d in sorted(docs, key=lambda d: mongodb_key(d, sort))]
        for skip, limit in ((0, 1), (0, 50), (37, 20), (280, 50)):
            subset = rng.sample(ids, 200)
            want = [i for i in expected if i in set(subset)][skip:skip + limit]
            paged = [d["_id"] for d in col.find({"_id": {"$in": subset}}).sort(sort).skip(skip).limit(limit)]
            everything = [d["_id"] for d in col.find({"_id": {"$in": subset}, "_id_": {"$exists": False}})
                          .sort(sort).skip(skip).limit(limit)]
            assert paged == everything == want, (sort, skip, limit)
            whole = [d["_id"] for d in col.find({}).sort(sort).skip(skip).limit(limit)]
            assert whole == expected[skip:skip + limit], (sort, skip, limit)


@pytest.mark.parametrize("seed", range(4))
def test_a_value_sqlite_cannot_order_makes_the_server_sort_everything_as_before(mongo_client, db_name, seed):
    rng = random.Random(100 + seed)
    col = mongo_client[db_name].things
    col.insert_many(documents(rng, 200, unsortable=True))
    for sort in SORTS:
        for skip, limit in ((0, 10), (50, 50), (190, 20)):
            paged = [d["_id"] for d in col.find({}).sort(sort).skip(skip).limit(limit)]
            everything = [d["_id"] for d in col.find({"_id_": {"$exists": False}}).sort(sort).skip(skip).limit(limit)]
            assert paged == everything, (sort, skip, limit)


def test_a_page_by_id_and_one_document_by_id(mongo_client, db_name):
    col = mongo_client[db_name].things
    col.insert_many([{"_id": f"p{i}", "v": i % 7} for i in range(50)])
    assert [d["_id"] for d in col.find({"_id": "p3"}).sort([("v", 1)]).limit(5)] == ["p3"]
    # v: p6 -> 6, p8 -> 1, p20 -> 6; ties by _id as strings
    assert [d["_id"] for d in col.find({"_id": {"$in": ["p6", "p8", "p20", "nobody"]}}).sort([("v", -1), ("_id", 1)])
            .limit(2)] == ["p20", "p6"]


def _team_lines(rng: random.Random, n: int) -> list[dict]:
    alphabet = "0123456789abcdef!"
    return [{"_id": f"l{i:04d}", "team": rng.choice(["t1", "t2", "t3"]),
             "k": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) + f"!{i:04d}"} for i in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_a_page_read_from_the_index_the_hint_names_is_mongodbs_page(mongo_client, db_name, seed):
    rng = random.Random(200 + seed)
    col = mongo_client[db_name].lines
    col.create_index([("team", 1), ("k", 1)], name="team_k")
    docs = _team_lines(rng, 400)
    col.insert_many(docs)
    for team in ("t1", "t2", "t3", "nobody"):
        mine = sorted((d for d in docs if d["team"] == team), key=lambda d: d["k"].encode())
        for direction in (1, -1):
            ordered = [d["_id"] for d in (mine if direction == 1 else mine[::-1])]
            for skip, limit in ((0, 1), (0, 50), (40, 25), (150, 50)):
                for hint in ("team_k", [("team", 1), ("k", 1)]):
                    page = [d["_id"] for d in col.find({"team": team}).sort("k", direction).hint(hint)
                            .skip(skip).limit(limit)]
                    assert page == ordered[skip:skip + limit], (team, direction, skip, limit, hint)
        assert mongo_client[db_name].command("count", "lines", query={"team": team}, hint="team_k")["n"] == len(mine)


def test_what_the_index_cannot_answer_is_answered_as_before(mongo_client, db_name):
    col = mongo_client[db_name].lines
    col.create_index([("team", 1), ("k", 1)], name="team_k")
    col.insert_many(_team_lines(random.Random(9), 200))
    ids = [d["_id"] for d in col.find({"team": "t1"}, {"_id": 1})]

    def page():
        return [d["_id"] for d in col.find({"team": "t1"}).sort("k", 1).hint("team_k").limit(20)]

    def unhinted():
        return [d["_id"] for d in col.find({"team": "t1"}).sort("k", 1).limit(20)]

    def count():
        return mongo_client[db_name].command("count", "lines", query={"team": "t1"}, hint="team_k")["n"]

    # A number among the strings: MongoDB orders numbers first.
    col.update_one({"_id": ids[-1]}, {"$set": {"k": 5}})
    assert page() == unhinted() and page()[0] == ids[-1]
    # A missing sort field: MongoDB orders it as null, first.
    col.update_one({"_id": ids[-2]}, {"$unset": {"k": ""}})
    assert page() == unhinted() and page()[0] == ids[-2]
    # An array in the equality field: MongoDB's equality matches its elements.
    col.insert_one({"_id": "both", "team": ["t1", "t2"], "k": "!"})
    assert "both" in page() and page() == unhinted()
    assert count() == len(ids) + 1 == col.count_documents({"team": "t1"})


def test_an_equality_to_an_objectids_hex_matches_the_string_only(mongo_client, db_name):
    col = mongo_client[db_name].lines
    col.create_index([("team", 1), ("k", 1)], name="team_k")
    hexed = "0123456789abcdef01234567"
    col.insert_many([{"_id": f"s{i}", "team": hexed, "k": f"a{i}"} for i in range(3)]
                    + [{"_id": f"o{i}", "team": ObjectId(hexed), "k": f"0{i}"} for i in range(3)])
    assert [d["_id"] for d in col.find({"team": hexed}).sort("k", 1).hint("team_k").limit(2)] == ["s0", "s1"]
    assert mongo_client[db_name].command("count", "lines", query={"team": hexed}, hint="team_k")["n"] == 3


def test_in_over_a_long_list_matches_as_mongodb_does(mongo_client, db_name):
    """The build looks a long `$in` list of strings and ObjectIDs up in a set instead of comparing each element in
    turn (same patch); what matches must not change: values of other types, arrays, regular expressions."""
    col = mongo_client[db_name].things
    oids = [ObjectId(f"{n:024x}") for n in range(40)]
    values = ["a", "b", "ab", "", "é", 5, 5.0, None, True, oids[3], oids[7], [1, "a"], ["zz"], {"x": 1}, "A"]
    col.insert_many([{"_id": i, "v": v} for i, v in enumerate(values)])
    many = [f"s{n}" for n in range(30)]

    def ids(query):
        return sorted(d["_id"] for d in col.find(query))

    assert ids({"v": {"$in": [*many, "a", oids[3]]}}) == [0, 9, 11]  # "a", the ObjectID, and the array holding "a"
    assert ids({"v": {"$in": [*many, "zz", 5]}}) == [5, 6, 12]
    assert ids({"v": {"$in": [*many, None]}}) == [7]
    assert ids({"v": {"$in": [*many, "A"]}}) == [14]
    assert ids({"v": {"$in": [*many, *[str(o) for o in oids]]}}) == []  # an ObjectID's hex is no ObjectID
    assert ids({"v": {"$in": [*many, *oids]}}) == [9, 10]
    assert ids({"v": {"$in": [*many, Regex("^a")]}}) == [0, 2, 11]
    assert ids({"_id": {"$in": list(range(100))}, "v": {"$in": [*many, "b", "é"]}}) == [1, 4]
    assert ids({"v": {"$nin": [*many, "a", "b"]}}) == [i for i in range(len(values)) if i not in (0, 1, 11)]


def test_a_hint_on_a_collection_not_yet_created_answers_nothing(mongo_client, db_name):
    db = mongo_client[db_name]
    assert list(db.nowhere.find({"team": "t1"}).sort("k", 1).hint("team_k").limit(5)) == []
    assert db.command("count", "nowhere", query={"team": "t1"}, hint="team_k")["n"] == 0


def test_a_count_of_an_id_prefix_counts_exactly_the_strings_with_that_prefix(mongo_client, db_name):
    """The build counts {_id: {$gte: p, $lt: p with its last character's successor}} from the _id index when no
    value of another type can be stored as a text starting with p (p holds a ':' or '.': no ObjectID's hex or
    binary data's base64 can); other prefixes are counted as before. Either way the count is MongoDB's: the
    strings in the range, compared bytewise (tests the panel's total, companion.store.read_models)."""
    db = mongo_client[db_name]
    hexed = "0123456789abcdef01234567"
    ids = ["t1:", "t1:a", "t1:b:c", "t1:\u00e9", "t1:<x>", 't1:"q', "t1:\\", "t1", "t1;", "t1;a", "t10:a", "t0:z",
           "T1:a", "t1.x", "t1.", "u", "", f"{hexed}:p1", f"{hexed}:p2", f"{hexed};", f"{hexed[:-1]}8:p",
           ObjectId(hexed), 7, 7.5, datetime(2026, 1, 1, tzinfo=UTC), Binary(b"t1:abc"), Binary(b"\x00" * 30),
           ObjectId(f"{1:024x}"), f"{1:024x}:x"]  # (no string equal to an ObjectID's hex: the build's _id index
    # holds both as the same text, so it refuses the second as a duplicate, where MongoDB would not)
    db.things.insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])

    def mongodb(lower: str, upper: str, *, inclusive: bool = True) -> int:  # strings only, compared bytewise
        return sum(1 for i in ids if isinstance(i, str) and lower.encode() <= i.encode() < upper.encode()
                   and (inclusive or i != lower))

    for prefix in ("t1:", "t1.", "t1", "t", f"{hexed}:", hexed, "0123", f"{1:024x}:", "T1:", "u", "t1:b:"):
        query = {"_id": {"$gte": prefix, "$lt": prefix[:-1] + chr(ord(prefix[-1]) + 1)}}
        counted = db.command("count", "things", query=query, hint="_id_")["n"]
        assert counted == mongodb(*query["_id"].values()) == db.things.count_documents(query), prefix
    assert db.command("count", "things", query={"_id": {"$gte": "t1:", "$lt": "t1;"}}, hint="_id_")["n"] == 7
    assert db.command("count", "things", query={"_id": {"$gte": f"{hexed}:", "$lt": f"{hexed};"}},
                      hint="_id_")["n"] == 2
    # Not the form counted from the index: answered as before, all the same.
    assert db.command("count", "things", query={"_id": {"$gte": "t1:", "$lt": "t1<"}},
                      hint="_id_")["n"] == mongodb("t1:", "t1<") == 9
    assert db.command("count", "things", query={"_id": {"$gt": "t1:", "$lt": "t1;"}},
                      hint="_id_")["n"] == mongodb("t1:", "t1;", inclusive=False) == 6
    assert db.command("count", "nowhere", query={"_id": {"$gte": "t1:", "$lt": "t1;"}}, hint="_id_")["n"] == 0


def test_a_count_of_ids_in_a_list_counts_exactly_the_strings_listed(mongo_client, db_name):
    """The same patch counts {_id: {$in: [s, ...]}} from the _id index when every s holds a ':' or '.' and nothing
    JSON escapes (the panel's enrolment check, companion.store.relationships); other lists are counted as before."""
    db = mongo_client[db_name]
    hexed = "0123456789abcdef01234567"
    ids = ["t1:a", "t1:b", "t1:c", "t1.x", f"{hexed}:p", "plain", ObjectId(hexed), 7, Binary(b"t1:a")]
    db.things.insert_many([{"_id": i} for i in ids])

    def count(values: list) -> int:
        return db.command("count", "things", query={"_id": {"$in": values}}, hint="_id_")["n"]

    for values in (["t1:a"], ["t1:a", "t1:b", "t1:zz"], ["t1:a", "t1:a", "t1:c"], ["t1.x", f"{hexed}:p", "t2:a"],
                   ["t1:zz"], [f"{hexed}:p", hexed], ["plain", "t1:b"], ["t1:a", 7], [ObjectId(hexed), "t1:c"],
                   [f"t1:{n}" for n in range(3000)] + ["t1:b"]):
        assert count(values) == db.things.count_documents({"_id": {"$in": values}}), values
    assert count(["t1:a", "t1:b", "t1:zz"]) == 2 and count(["t1:a", "t1:a", "t1:c"]) == 2
    assert count([f"{hexed}:p", hexed]) == 1 and count(["t1:a", 7]) == 2
