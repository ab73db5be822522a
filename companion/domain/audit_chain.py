"""Tamper evidence for the audit trail: a keyed hash chain, anchors kept outside the database, keyed cuts.

- **Keyed chain.** Each event's ``hash`` is HMAC-SHA256, under a key kept outside the database
  (``COMPANION_AUDIT_KEY``), of its canonical JSON, which includes ``prev_hash`` (the previous event's hash),
  its chain and its position (``seq``). Someone who can write to the database but does not hold the key cannot
  change an event, delete one and re-link the rest, or forge a chain: every hash after the change would have
  to be recomputed with the key.
- **Anchors.** What the key cannot show is that the *end* of a chain, or a whole chain, was removed: what is
  left verifies. So the writer periodically writes an anchor, "chain C had reached seq N with hash H", where the
  database writer cannot rewrite it (a log line, and a file), itself MACed. The verifier checks every chain
  against its latest anchor: shorter than anchored is a truncation, a different hash at the anchored seq is a
  rewrite, a missing chain was deleted.
- **Key fingerprint.** Each anchor line also carries ``key=``, a fingerprint of the key it was written under (an
  HMAC of a constant: it tells keys apart and reveals nothing of them). It is outside the MAC on purpose: it is
  what the verifier reads when no MAC matches, as a hint of whether the key is the writers'. Being outside the MAC,
  anyone who rewrites the anchors can write any fingerprint there, so it is never taken as proof: when nothing
  verifies, the verifier says that the key is wrong or the trail and its anchors were rewritten, and counts the
  breaks, whatever the fingerprints say.
- **Cuts.** The retention job deletes a chain's oldest events; it first writes a *cut* (chain, last deleted
  seq, that event's hash), MACed, so the verifier starts the chain there instead of reporting the gap. A cut
  cannot be forged to hide a deletion without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64
_HASHED_OUT = {"_id", "hash"}
ANCHOR_TAG = "audit-anchor v1"
_ANCHOR = re.compile(r"audit-anchor v1 chain=(?P<chain>[0-9a-f-]{36}) seq=(?P<seq>\d+) hash=(?P<hash>[0-9a-f]{64}) "
                     r"at=(?P<at>\S+) mac=(?P<mac>[0-9a-f]{64})(?: key=(?P<key>[0-9a-f]{16}))?")
_FINGERPRINT_OF = b"companion audit key fingerprint v1"


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


def canonical(event: dict) -> bytes:
    """The event's canonical JSON (sorted keys, no spaces), without _id and hash."""
    body = {k: v for k, v in event.items() if k not in _HASHED_OUT}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=_default).encode()


def event_hash(event: dict, key: bytes) -> str:
    """HMAC-SHA256 under ``key`` of the event's canonical JSON."""
    return hmac.new(key, canonical(event), hashlib.sha256).hexdigest()


def link(event: dict, prev_hash: str, seq: int, chain_id: str, key: bytes) -> dict:
    """Return the event placed at position seq of a chain, with prev_hash and hash set."""
    linked = {**event, "chain_id": chain_id, "seq": seq, "prev_hash": prev_hash}
    linked["hash"] = event_hash(linked, key)
    return linked


@dataclass(frozen=True)
class ChainBreak:
    chain_id: str
    seq: int
    problem: str


@dataclass(frozen=True)
class Anchor:
    """A chain's head as its writer saw it: it had reached ``seq`` with ``hash`` at ``at``."""

    chain_id: str
    seq: int
    hash: str
    at: str


@dataclass(frozen=True)
class Cut:
    """The retention job deleted a chain's events up to and including ``seq`` (whose hash was ``hash``)."""

    chain_id: str
    seq: int
    hash: str
    at: str
    mac: str


def _mac(key: bytes, *parts: object) -> str:
    return hmac.new(key, "\x1f".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """16 hex digits that tell audit keys apart without revealing them (an HMAC of a constant under the key)."""
    return hmac.new(key, _FINGERPRINT_OF, hashlib.sha256).hexdigest()[:16]


def anchor_line(anchor: Anchor, key: bytes) -> str:
    """The anchor as one line of text (for a log and a file), MACed so that it cannot be forged, and the
    fingerprint of the key it was written under (outside the MAC: see the module's docstring)."""
    mac = _mac(key, "anchor", anchor.chain_id, anchor.seq, anchor.hash, anchor.at)
    return (f"{ANCHOR_TAG} chain={anchor.chain_id} seq={anchor.seq} hash={anchor.hash} at={anchor.at} mac={mac} "
            f"key={key_fingerprint(key)}")


def anchor_fingerprints(lines: Iterable[str]) -> set[str]:
    """The key fingerprints the anchor lines among ``lines`` name (anchors written before there were none name
    none), whether or not their MACs match."""
    return {found["key"] for line in lines if ANCHOR_TAG in line
            and (found := _ANCHOR.search(line)) and found["key"]}


def parse_anchors(lines: Iterable[str], key: bytes) -> tuple[list[Anchor], list[str]]:
    """The anchors found anywhere in ``lines`` (a log or an anchor file), and a problem for each line that
    looks like an anchor but whose MAC does not match (altered or forged)."""
    anchors, problems = [], []
    for number, line in enumerate(lines, 1):
        if ANCHOR_TAG not in line:
            continue
        found = _ANCHOR.search(line)
        if not found:
            problems.append(f"line {number}: an anchor that cannot be read")
            continue
        anchor = Anchor(found["chain"], int(found["seq"]), found["hash"], found["at"])
        expected = _mac(key, "anchor", anchor.chain_id, anchor.seq, anchor.hash, anchor.at)
        if not hmac.compare_digest(expected, found["mac"]):
            problems.append(f"line {number}: an anchor whose MAC does not match (altered or forged)")
            continue
        anchors.append(anchor)
    return anchors, problems


def make_cut(chain_id: str, seq: int, hash_: str, at: str, key: bytes) -> Cut:
    return Cut(chain_id, seq, hash_, at, _mac(key, "cut", chain_id, seq, hash_, at))


def cut_is_genuine(cut: Cut, key: bytes) -> bool:
    return hmac.compare_digest(cut.mac, _mac(key, "cut", cut.chain_id, cut.seq, cut.hash, cut.at))


@dataclass(frozen=True)
class ChainWalk:
    """What walking one chain found: its breaks, the events it checked and how many of their hashes matched."""

    breaks: list[ChainBreak]
    checked: int
    verified: int


def verify_chain(chain_id: str, events: Iterable[dict], key: bytes, *, cut: Cut | None = None,
                 anchor: Anchor | None = None) -> list[ChainBreak]:
    """Walk one chain in seq order; report each altered, missing or re-linked event, and, against its latest
    anchor, a truncated or rewritten end. Events at or before a (genuine) retention cut are skipped."""
    return walk_chain(chain_id, events, key, cut=cut, anchor=anchor).breaks


def walk_chain(chain_id: str, events: Iterable[dict], key: bytes, *, cut: Cut | None = None,
               anchor: Anchor | None = None) -> ChainWalk:
    """:func:`verify_chain`, counting the events checked and those whose keyed hash matched."""
    breaks: list[ChainBreak] = []
    checked = verified = 0
    expected_seq, prev = 0, GENESIS
    if cut is not None:
        if not cut_is_genuine(cut, key):
            breaks.append(ChainBreak(chain_id, cut.seq, "retention cut not written with the audit key (forged)"))
        else:
            expected_seq, prev = cut.seq + 1, cut.hash
    last_seq, hashes = None, {}
    for event in events:
        seq = event.get("seq")
        if not isinstance(seq, int) or seq < expected_seq:
            continue  # at or before the cut (deleted by retention, or about to be)
        if seq != expected_seq:
            breaks.append(ChainBreak(chain_id, expected_seq, f"missing events {expected_seq}..{seq - 1}"))
        if event.get("prev_hash") != prev:
            breaks.append(ChainBreak(chain_id, seq, "prev_hash does not match the previous event"))
        checked += 1
        if hmac.compare_digest(event_hash(event, key), str(event.get("hash"))):
            verified += 1
        else:
            breaks.append(ChainBreak(chain_id, seq, "content changed after it was written"))
        prev, expected_seq, last_seq = event.get("hash"), seq + 1, seq
        hashes[seq] = event.get("hash")
    if anchor is not None and (cut is None or anchor.seq > cut.seq):
        if last_seq is None or last_seq < anchor.seq:
            reached = "no events" if last_seq is None else f"only up to seq {last_seq}"
            breaks.append(ChainBreak(chain_id, anchor.seq, f"truncated: anchored at seq {anchor.seq} on {anchor.at}, "
                                                           f"the database has {reached}"))
        elif hashes.get(anchor.seq) != anchor.hash:
            breaks.append(ChainBreak(chain_id, anchor.seq, "rewritten: the event at the anchored seq is not the "
                                                           "one anchored"))
    elif anchor is not None and cut is not None and anchor.seq == cut.seq and anchor.hash != cut.hash:
        breaks.append(ChainBreak(chain_id, anchor.seq, "rewritten: the retention cut does not match the anchor"))
    return ChainWalk(breaks, checked, verified)


@dataclass(frozen=True)
class NothingVerifies:
    """Not one event hash nor one anchor MAC matches under the verifier's key: the key is not the writers', or the
    trail and its anchors were rewritten without it. The two cannot be told apart with certainty (the anchors' key
    fingerprints are outside their MAC, so a rewriter can put any there); ``message`` says both, counts the breaks
    and gives what the fingerprints hint. ``names_this_key``: the anchors name the verifier's key fingerprint (the
    key is most likely right, and the breaks are worth listing as they are)."""

    message: str
    names_this_key: bool


def nothing_verifies(key: bytes, *, events_checked: int, events_verified: int, anchors_verified: int,
                     anchors_refused: int, fingerprints: set[str], breaks: int) -> NothingVerifies | None:
    """Whether nothing that was there to check verifies under ``key`` (None: something does, or there was
    nothing). The anchors' ``fingerprints`` are only a hint: a trail rewritten without the key may carry anchors
    naming any fingerprint, so they never decide whether ``breaks`` are tampering."""
    if events_verified or anchors_verified or not (events_checked or anchors_refused):
        return None
    mine = key_fingerprint(key)
    if mine in fingerprints:
        hint = (f"the anchors name this key's fingerprint{' among others' if len(fingerprints) > 1 else ''}: "
                "the trail was most likely rewritten")
    elif fingerprints:
        hint = (f"the anchors name key fingerprint {', '.join(sorted(fingerprints))}, not this key's: a hint (not "
                "proof, the fingerprint is outside the anchors' MAC) that this key is not the writers'")
    else:
        hint = "no anchor names a key fingerprint"
    return NothingVerifies(
        f"none of the {events_checked} event(s) and {anchors_refused} anchor(s) verifies under COMPANION_AUDIT_KEY "
        f"(fingerprint {mine}): the key is not the writers', or the trail and its anchors were rewritten "
        f"({breaks} break(s)); {hint}. If the web and worker processes run with another COMPANION_AUDIT_KEY, "
        "verify again with theirs; if they run with this one, treat every break as tampering",
        names_this_key=mine in fingerprints)
