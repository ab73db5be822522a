"""Writes the database applied but did not acknowledge as asked (on a replica set, a write concern error: w:majority
timed out, the primary stepped down) are not answered as stored: they may yet be rolled back. The API answers 503
and the sender keeps its copy and sends it again, which the unique keys deduplicate.

FerretDB has no replica set and ignores the write concern it is sent (w:5 is acknowledged), so the error is the one
pymongo raises for a MongoDB replica set's answer, raised here after the real insert on FerretDB has landed."""

from __future__ import annotations

import pytest
from pymongo.errors import BulkWriteError, WriteConcernError, WTimeoutError

from companion.store.batches import DUPLICATE_KEY, refused_as_stored
from tests.support.problems import assert_problem
from tests.support.records import session_record

URL = "/api/v1/gateway/session-records"
TIMED_OUT = {"code": 64, "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}}
STEPPED_DOWN = {"code": 189, "errmsg": "Primary stepped down while waiting for replication"}


def _batch_answer(write_errors: list[dict], concern_errors: list[dict], inserted: int) -> BulkWriteError:
    """The BulkWriteError pymongo raises for an unordered insert_many the server answered so."""
    return BulkWriteError({"writeErrors": write_errors, "writeConcernErrors": concern_errors, "nInserted": inserted,
                           "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": []})


def _duplicate(index: int) -> dict:
    return {"index": index, "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key error", "op": {"_id": index}}


def test_an_insert_applied_but_not_acknowledged_in_time_is_not_reported_as_stored():
    with pytest.raises(WTimeoutError):
        refused_as_stored(_batch_answer([], [TIMED_OUT], inserted=2))


def test_an_insert_whose_primary_stepped_down_is_not_reported_as_stored_even_beside_duplicates():
    with pytest.raises(WriteConcernError) as raised:
        refused_as_stored(_batch_answer([_duplicate(0)], [STEPPED_DOWN], inserted=1))
    assert raised.value.code == 189


def test_an_acknowledged_insert_reports_the_duplicates_it_refused_and_raises_on_any_other_refusal():
    assert refused_as_stored(_batch_answer([_duplicate(0), _duplicate(2)], [], inserted=1)) == {0, 2}
    other = _batch_answer([_duplicate(0), {"index": 1, "code": 121, "errmsg": "Document failed validation"}], [], 0)
    with pytest.raises(BulkWriteError):
        refused_as_stored(other)


class _AppliedButUnacknowledged:
    """A store's real collection, whose first ``method`` call (``insert_many``, ``bulk_write``) lands and is then
    answered as a replica set answers one whose write concern failed."""

    def __init__(self, collection, method: str, concern_error: dict):
        self._collection, self._method, self._concern_error, self.failed = collection, method, concern_error, False

    def __getattr__(self, name):
        real = getattr(self._collection, name)
        if name != self._method:
            return real

        def applied_then_unacknowledged(*args, **kwargs):
            result = real(*args, **kwargs)
            if self.failed:
                return result
            self.failed = True
            raise _batch_answer([], [self._concern_error], inserted=len(getattr(result, "inserted_ids", [])))
        return applied_then_unacknowledged


def _upload_unacknowledged_then_again(client, world, db, unacknowledged):
    batch = [session_record(world.a_device, seq) for seq in (1, 2, 3)]
    gateway = world["gateway_a"].headers

    first = client.post(URL, json={"records": batch}, headers=gateway)
    assert_problem(first, 503)
    assert first.headers["Retry-After"]
    assert unacknowledged.failed

    retry = client.post(URL, json={"records": batch}, headers=gateway)
    assert retry.status_code == 200, retry.get_data(as_text=True)
    assert sorted(r["record_id"] for r in retry.json["results"]) == sorted(r["record_id"] for r in batch)
    stored = sorted(d["_id"] for d in db.session_records.find({}, {"_id": 1}))
    assert stored == sorted(r["record_id"] for r in batch)


@pytest.mark.parametrize("concern_error", [TIMED_OUT, STEPPED_DOWN], ids=["timed-out", "stepped-down"])
def test_a_batch_the_database_did_not_acknowledge_is_answered_503_and_its_retry_stores_it_once(
        client, world, db, services, monkeypatch, concern_error):
    records = services.stores.session_records
    unacknowledged = _AppliedButUnacknowledged(records.col, "insert_many", concern_error)
    monkeypatch.setattr(records, "col", unacknowledged)
    _upload_unacknowledged_then_again(client, world, db, unacknowledged)


def test_a_bulk_write_after_the_insert_the_database_did_not_acknowledge_is_answered_503(
        client, world, db, services, monkeypatch):
    marks = services.stores.days_to_recompute
    unacknowledged = _AppliedButUnacknowledged(marks.col, "bulk_write", STEPPED_DOWN)
    monkeypatch.setattr(marks, "col", unacknowledged)
    _upload_unacknowledged_then_again(client, world, db, unacknowledged)
    assert db.days_to_recompute.count_documents({"patient_id": world["patient_a"].id}) >= 1
