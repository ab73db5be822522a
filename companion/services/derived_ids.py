"""Ids derived from a request's Idempotency-Key: the object a request creates gets the same id on every
attempt, so a retry after a crash finds what the first attempt stored instead of storing a second one.

The request key names the caller, the key and the claim of the key (companion.store.idempotency): keys are
kept 24 hours, and a caller may use one again after that for another request, which must make a new object
rather than find the old one. A store that finds the id taken by something the request did not ask for (an
object made under a key stored before claims had ids) answers Conflict, never the unsaved document."""

from __future__ import annotations

import hashlib


def derived_id(kind: str, request_key: str) -> str:
    """A stable id (24 hex digits) for the ``kind`` of object a request with ``request_key`` (its caller, key and
    claim: companion.http.idempotency.request_key) creates."""
    return hashlib.blake2b(f"{kind}\x1f{request_key}".encode(), digest_size=12).hexdigest()
