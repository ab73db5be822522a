"""Tamper evidence for the audit trail: canonical hashing and chain verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64
_HASHED_OUT = {"_id", "hash"}


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


def event_hash(event: dict) -> str:
    """SHA-256 over the event's canonical JSON (sorted keys, no spaces), excluding _id and hash."""
    body = {k: v for k, v in event.items() if k not in _HASHED_OUT}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_default)
    return hashlib.sha256(canonical.encode()).hexdigest()


def link(event: dict, prev_hash: str, seq: int, chain_id: str) -> dict:
    """Return the event placed at position seq of a chain, with prev_hash and hash set."""
    linked = {**event, "chain_id": chain_id, "seq": seq, "prev_hash": prev_hash}
    linked["hash"] = event_hash(linked)
    return linked


@dataclass(frozen=True)
class ChainBreak:
    chain_id: str
    seq: int
    problem: str


def verify_chain(chain_id: str, events: Iterable[dict]) -> list[ChainBreak]:
    """Walk one chain in seq order; report each altered, missing or re-linked event."""
    breaks: list[ChainBreak] = []
    expected_seq, prev = 0, GENESIS
    for event in events:
        seq = event.get("seq")
        if seq != expected_seq:
            breaks.append(ChainBreak(chain_id, expected_seq, f"missing events {expected_seq}..{seq - 1}"))
        if event.get("prev_hash") != prev:
            breaks.append(ChainBreak(chain_id, seq, "prev_hash does not match the previous event"))
        if event_hash(event) != event.get("hash"):
            breaks.append(ChainBreak(chain_id, seq, "content changed after it was written"))
        prev, expected_seq = event.get("hash"), seq + 1
    return breaks
