"""Many documents at once: read by a list of keys, a bounded ``$in`` at a time, or a whole time range a page at a
time; inserted unordered, with the ones already stored (a duplicate key) told apart from real failures and from
writes the database did not acknowledge."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, WriteConcernError, WTimeoutError

from companion.domain.errors import ServiceUnavailable

CHUNK = 2000  # keys per $in query unless a caller says otherwise
PAGE = 1000  # documents per page of a range read in order
DUPLICATE_KEY = 11000


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def find_among_patients(collection, query: dict, fields: dict | None,
                        patient_ids: Iterable[str] | None = None) -> Iterator[dict]:
    """``find(query, fields)`` over every patient, or over ``patient_ids`` only, a bounded ``$in`` at a time."""
    if patient_ids is None:
        yield from collection.find(query, fields)
        return
    for part in chunks(sorted(set(patient_ids))):
        yield from collection.find({**query, "patient_id": {"$in": part}}, fields)


def oldest_first(collection, query: dict, field: str, start: datetime, end: datetime,
                 page: int = PAGE) -> Iterator[dict]:
    """Every document matching ``query`` whose ``field`` lies in [start, end], in the order of ``field`` (ties by
    ``str(_id)``), however many there are, holding one page at a time. Read on an index of the query's equality
    fields then ``field``, as a keyset: each page starts after the instant the last one ended on (an instant a
    page ends on is read again whole, so that none of its documents is cut off or read twice)."""
    after: dict = {"$gte": start}
    while True:
        found = list(collection.find({**query, field: {**after, "$lte": end}}).sort(field, ASCENDING).limit(page))
        if len(found) < page:
            yield from sorted(found, key=lambda d: (d[field], str(d["_id"])))
            return
        last = found[-1][field]
        found = [d for d in found if d[field] < last] + list(collection.find({**query, field: last}))
        yield from sorted(found, key=lambda d: (d[field], str(d["_id"])))
        after = {"$gt": last}


def newest_first(collection, query: dict, field: str, limit: int, page: int = PAGE) -> list[dict]:
    """The first ``limit`` documents matching ``query``, the latest ``field`` first (ties by ``str(_id)``,
    descending), however many that is: read as a keyset on an index of the query's equality fields then ``field``,
    one page at a time, each page starting before the instant the last one ended on (an instant a page ends on is
    read again whole, so that none of its documents is cut off or read twice). No cap of its own: ``limit`` is
    the one applied."""
    found: list[dict] = []
    before: dict | None = None
    while len(found) < limit:
        bounded = {**query, field: before} if before is not None else query
        batch = list(collection.find(bounded).sort(field, DESCENDING).limit(page))
        if len(batch) < page:
            found += sorted(batch, key=lambda d: (d[field], str(d["_id"])), reverse=True)
            break
        last = batch[-1][field]
        batch = [d for d in batch if d[field] > last] + list(collection.find({**query, field: last}))
        found += sorted(batch, key=lambda d: (d[field], str(d["_id"])), reverse=True)
        before = {"$lt": last}
    return found[:limit]


def insert_new(collection, docs: list[dict]) -> set[int]:
    """Insert ``docs`` unordered (one duplicate does not stop the rest); return the positions refused as
    duplicates of documents already stored. Any other error raises (see :func:`refused_as_stored`)."""
    if not docs:
        return set()
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        return refused_as_stored(exc)
    return set()


def refused_as_stored(exc: BulkWriteError) -> set[int]:
    """The positions an unordered insert refused as duplicates of documents already stored, when that is all that
    went wrong; otherwise raises.

    A write concern error (on a replica set: the inserts were applied on the primary, but not acknowledged by as
    many members as asked, in time) raises WriteConcernError (WTimeoutError when it timed out), as pymongo does for
    a single write: what this insert wrote may yet be rolled back, so it must not be answered as stored (a gateway
    would delete its buffered copy). Raised, it is answered 503 and retried; the retry is deduplicated by the
    unique keys. Any write error but a duplicate key re-raises ``exc``."""
    concern = exc.details.get("writeConcernErrors") or []
    if concern:
        error = concern[-1]
        kind = WTimeoutError if (error.get("errInfo") or {}).get("wtimeout") else WriteConcernError
        raise kind(error.get("errmsg"), error.get("code"), error) from exc
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return {e["index"] for e in errors}


def already_stored(collection, query: dict) -> dict:
    """The document an insert refused as a duplicate is, read back. When it cannot be read (on a replica set: an
    earlier attempt wrote it on the primary, and it is not yet on the majority that reads see; or it was deleted
    between the two), ServiceUnavailable: the retry shortly finds it. Answered as anything else (a 409 "this key
    made another", a 500), a client would send the request again under a new key, and the patient would have the
    thing twice once the first write is confirmed."""
    stored = collection.find_one(query)
    if stored is None:
        raise ServiceUnavailable("an earlier attempt of this request is still being stored: retry shortly")
    return stored
