"""Many documents at once: read by a list of keys, a bounded ``$in`` at a time; inserted unordered, with
the ones already stored (a duplicate key) told apart from real failures."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pymongo.errors import BulkWriteError

CHUNK = 2000  # keys per $in query unless a caller says otherwise
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


def insert_new(collection, docs: list[dict]) -> set[int]:
    """Insert ``docs`` unordered (one duplicate does not stop the rest); return the positions refused as
    duplicates of documents already stored. Any other error raises."""
    if not docs:
        return set()
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {e["index"] for e in errors}
    return set()
