"""Listing and replaying the buffer's dead letters (``device-gateway dead-letters``).

A dead letter is what the gateway could not deliver as a record: a frame a unit sent that could not be
decoded (``unit``), a record the server refused (``server``: only a record with no identity to be stored under),
a sync the server refused (``sync``), a record whose stored content no longer opens or that was lost with a
damaged buffer (``buffer``), or a note that a unit no longer holds records never stored. Each is reported to the
server once the upload queue is empty.

Replaying puts one back in the upload queue: a refused record as it was (after a fix on either side), a frame
decoded again (after a gateway upgrade that understands it). A replayed frame's time is unknown to the gateway
(no sync read the unit's clock for it), so it goes up with clock status ``reset``: the server stores it held,
for a clinician to place.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from device_gateway.buffer import RecordBuffer
from device_gateway.capture import CLOCK_RESET, capture
from device_gateway.profiles import companion_tens as profile


@dataclass(frozen=True, slots=True)
class Replay:
    """What replaying one dead letter did."""

    dead_letter_id: int
    queued: bool
    outcome: str


def _dead_at(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def replay(buffer: RecordBuffer, ids: set[int] | None = None) -> list[Replay]:
    """Put the dead letters ``ids`` (None: every one) back in the upload queue where there is a record to send."""
    done = []
    for dead in buffer.dead_letters():
        if ids is not None and dead["id"] not in ids:
            continue
        done.append(_replay_one(buffer, dead))
    return done


def _replay_one(buffer: RecordBuffer, dead: dict) -> Replay:
    number = dead["id"]
    if dead["source"] == "server":
        queued = buffer.requeue(number)
        return Replay(number, queued, "queued again" if queued else "nothing to queue")
    if dead["source"] != "unit":
        return Replay(number, False, f"nothing to replay ({dead['source']}: {dead['reason']})")
    try:
        frame = bytes.fromhex(dead["payload"])
    except ValueError:
        return Replay(number, False, f"nothing to replay ({dead['reason']})")
    try:
        decoded = profile.decode_frame(frame)
    except profile.ProfileError as exc:
        return Replay(number, False, f"still undecodable ({type(exc).__name__}: {exc})")
    if not isinstance(decoded, profile.SessionRecord):
        return Replay(number, False, "not a session record")
    record = capture(dead["device_serial"], decoded, frame, 0.0, _dead_at(dead["dead_at"]))
    record = replace(record, clock_status=CLOCK_RESET)
    queued = buffer.requeue(number, record)
    return Replay(number, queued, "decoded and queued (its time is for the server to place)" if queued
                  else "nothing to queue")
