"""Ids derived from a request's Idempotency-Key: the object a request creates gets the same id on every
attempt, so a retry after a crash finds what the first attempt stored instead of storing a second one."""

from __future__ import annotations

import hashlib


def derived_id(kind: str, request_key: str) -> str:
    """A stable id (24 hex digits) for the ``kind`` of object a request with ``request_key`` creates."""
    return hashlib.blake2b(f"{kind}\x1f{request_key}".encode(), digest_size=12).hexdigest()
