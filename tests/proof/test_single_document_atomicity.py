"""Single-document writes are atomic under concurrency, as on MongoDB.

MongoDB applies every update, findAndModify, replace and delete of one document atomically: concurrent
writers of one document never undo each other, and a filter is checked against the document that the
write changes. FerretDB v1.24 did not (it read the documents, changed them in Go and wrote them back
in another transaction); the project's FerretDB build locks each statement's read-modify-write (see
scripts/ferretdb-v1.24.2-write-atomicity.patch). Each test starts its threads together on a barrier and
repeats the race enough times that an unlocked server loses it; none measures time.

The last test pins a regression of the same build: an update command of about 100 statements that
matched documents kept one SQLite connection per statement until it returned and hung the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pymongo
import pytest
from pymongo import ReturnDocument
from pymongo.errors import PyMongoError

# Generous: threads wait on each other and on a busy two-core machine, never on the clock.
BARRIER_TIMEOUT_S = 60


def race(n_threads: int, work: Callable[[int], object]) -> list[object]:
    """Runs work(i) for i in range(n_threads) in threads released together; returns results in order.

    An exception raised by a worker is returned in its place rather than raised, so that a test can
    count failed writes among its observations.
    """
    barrier = threading.Barrier(n_threads, timeout=BARRIER_TIMEOUT_S)

    def run(i: int) -> object:
        barrier.wait()
        try:
            return work(i)
        except PyMongoError as e:
            return e

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(pool.map(run, range(n_threads)))


def errors_in(results: list[object]) -> list[str]:
    return [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]


@pytest.fixture
def database(mongo_client, db_name):
    return mongo_client[db_name]


def test_concurrent_increments_of_one_document_all_count(database):
    coll = database.counters
    coll.insert_one({"_id": "c", "n": 0})
    threads, per_thread = 16, 25

    def work(_: int) -> None:
        for _ in range(per_thread):
            coll.update_one({"_id": "c"}, {"$inc": {"n": 1}})

    results = race(threads, work)

    assert errors_in(results) == []
    total = coll.find_one({"_id": "c"})["n"]
    assert total == threads * per_thread, f"sum {total} of {threads * per_thread}"


def test_a_conditional_claim_has_exactly_one_winner(database):
    coll = database.jobs
    threads, rounds = 8, 40
    coll.insert_many([{"_id": f"job{r}", "owner": None} for r in range(rounds)])
    bad_rounds = []

    for r in range(rounds):
        job = f"job{r}"
        results = race(threads, lambda i, job=job: coll.find_one_and_update(
            {"_id": job, "owner": None}, {"$set": {"owner": f"w{i}"}}, return_document=ReturnDocument.AFTER))
        assert errors_in(results) == []
        winners = sorted(doc["owner"] for doc in results if doc is not None)
        stored = coll.find_one({"_id": job})["owner"]
        if winners != [stored]:
            bad_rounds.append((r, winners, stored))

    assert bad_rounds == [], (
        f"{len(bad_rounds)} of {rounds} claims did not have exactly one winner, the stored owner "
        f"(round, winners, stored): {bad_rounds[:5]}")


def test_concurrent_sets_of_different_fields_of_one_document_all_survive(database):
    coll = database.profiles
    threads, rounds = 8, 40
    fields = [f"f{i}" for i in range(threads)]
    lost_rounds = []

    for r in range(rounds):
        coll.insert_one({"_id": f"p{r}"})
        results = race(threads, lambda i, r=r: coll.update_one({"_id": f"p{r}"}, {"$set": {fields[i]: i}}))
        assert errors_in(results) == []
        doc = coll.find_one({"_id": f"p{r}"})
        missing = [f for f in fields if f not in doc]
        if missing:
            lost_rounds.append((r, missing))

    assert lost_rounds == [], (
        f"{len(lost_rounds)} of {rounds} rounds lost a $set (round, missing fields): {lost_rounds[:5]}")


def test_a_version_check_lets_exactly_one_writer_through_per_version(database):
    coll = database.records
    coll.insert_one({"_id": "r", "version": 0, "by": None})
    threads, rounds = 8, 40
    bad_versions = []

    for v in range(rounds):
        results = race(threads, lambda i, v=v: coll.update_one(
            {"_id": "r", "version": v}, {"$set": {"by": f"w{i}", "version": v + 1}}).modified_count)
        assert errors_in(results) == []
        if sum(results) != 1:
            bad_versions.append((v, sum(results)))
        # Whatever happened in this round, the next one starts from the version actually stored.
        coll.update_one({"_id": "r"}, {"$set": {"version": v + 1}})

    assert bad_versions == [], (
        f"{len(bad_versions)} of {rounds} versions did not have exactly one writer (version, writers): "
        f"{bad_versions[:5]}")


def test_concurrent_upserts_on_a_unique_key_all_land_in_one_document(database):
    coll = database.tallies
    coll.create_index("key", unique=True)
    threads, rounds = 8, 20
    bad_rounds = []

    for r in range(rounds):
        key = f"k{r}"
        results = race(threads, lambda _, key=key: coll.update_one(
            {"key": key}, {"$inc": {"n": 1}}, upsert=True))
        docs = list(coll.find({"key": key}))
        seen = (len(docs), sum(d["n"] for d in docs), len(errors_in(results)))
        if seen != (1, threads, 0):
            bad_rounds.append((r, *seen))

    assert bad_rounds == [], (
        f"{len(bad_rounds)} of {rounds} rounds of {threads} upserts did not make one document counting "
        f"{threads} (round, documents, count, failed upserts): {bad_rounds[:5]}")


def test_a_document_is_taken_by_exactly_one_find_one_and_delete(database):
    coll = database.queue
    threads, rounds = 8, 40
    coll.insert_many([{"_id": f"m{r}", "body": r} for r in range(rounds)])
    bad_rounds = []

    for r in range(rounds):
        results = race(threads, lambda _, r=r: coll.find_one_and_delete({"_id": f"m{r}"}))
        assert errors_in(results) == []
        takers = sum(doc is not None for doc in results)
        if takers != 1:
            bad_rounds.append((r, takers))

    assert bad_rounds == [], (
        f"{len(bad_rounds)} of {rounds} messages were not taken exactly once (round, takers): {bad_rounds[:5]}")
    assert coll.count_documents({}) == 0


@pytest.mark.parametrize("key_field", ["_id", "key"])
def test_a_delete_racing_an_update_takes_effect_in_one_order(database, key_field):
    """delete_one({state: open}) racing update_one({state: open} -> closed): one of them wins.

    On MongoDB either the update runs first (the document is closed and survives, the delete matches
    nothing) or the delete does (the document is gone, the update matches nothing). Never both: a delete
    of a document that the update had already moved out of its filter, or an update reported on a
    document already deleted. Filtered by `_id` and by another field.
    """
    coll = database.tickets
    threads_per_side, rounds = 4, 30
    bad_rounds = []

    for r in range(rounds):
        key = f"t{r}"
        coll.insert_one({"_id": key, "key": key, "state": "open"})
        flt = {key_field: key, "state": "open"}

        def work(i: int, flt=flt) -> tuple[str, int]:
            if i % 2:
                return "deleted", coll.delete_one(flt).deleted_count
            return "closed", coll.update_one(flt, {"$set": {"state": "closed"}}).modified_count

        results = race(2 * threads_per_side, work)
        assert errors_in(results) == []
        deleted = sum(n for what, n in results if what == "deleted")
        closed = sum(n for what, n in results if what == "closed")
        stored = coll.find_one({"_id": key})
        consistent = ((deleted, closed) == (1, 0) and stored is None) or (
            (deleted, closed) == (0, 1) and stored is not None and stored["state"] == "closed")
        if not consistent:
            bad_rounds.append((r, deleted, closed, stored and stored["state"]))

    assert bad_rounds == [], (
        f"{len(bad_rounds)} of {rounds} rounds had no serial order (round, deletes, updates, stored state): "
        f"{bad_rounds[:5]}")


def test_an_unordered_bulk_write_of_150_upserting_replaces_completes(mongo_uri, db_name):
    """Twice: the second pass matches all 150 documents, which hung FerretDB's update command."""
    client = pymongo.MongoClient(mongo_uri, socketTimeoutMS=30_000, serverSelectionTimeoutMS=30_000)
    try:
        coll = client[db_name].snapshots
        for attempt in range(2):
            ops = [pymongo.ReplaceOne({"_id": f"s{i}"}, {"_id": f"s{i}", "pass": attempt}, upsert=True)
                   for i in range(150)]
            result = coll.bulk_write(ops, ordered=False)
            assert result.upserted_count + result.matched_count == 150
        assert coll.count_documents({"pass": 1}) == 150
    finally:
        client.close()
