"""Which notified records a transfer may store: in sequence while it runs, so a stale or reordered
notification can never make the gateway skip (and then acknowledge away) records it has not stored.

The unit is asked to send from the record after the one stored last (or after the last undecodable frames
acknowledged), never from a number worked out of its summary's counts: its highest number is the highest it
ever *assigned*, which may belong to a session still running (numbered at its start, not stored yet), and
numbers may be missing below it (an aborted session's, or records another gateway of the patient's took and
the unit freed), so "highest minus how many it stores" is not where its records start.

A gap is admitted only when something explains it: undecodable frames received since the last stored record
(their sequence numbers are unknown, and they are dead-lettered raw), or the unit's own transfer skipping it. A
record received beyond a gap that the frames cannot explain is kept aside (``ahead``) until the transfer
summary says the transfer ended: only then is it known that the unit sent everything it holds from the number
asked, so the numbers it did not send below a record it did send are not held (``close``: skipped, noted
missing by the caller). A number above the highest record sent is not known to be skipped: the highest one may
be a session still running. It is neither noted missing nor acknowledged; the next transfer asks from it again.

An undecodable frame that names no number is held until its run is closed: by the next record admitted, or by
the transfer summary for a missing tail. Only then is it known how many records the run stood for (the gap it
explains), and that many of its frames are placed, one a sequence number each, from the record after the one
stored last (``settled``): a frame notified twice does not become a second loss at the place of a record stored,
and byte-identical frames of different records (erased flash) are a loss each. A transfer cut short before its
run closed places none of it; asked again from the record after the one stored last, the same frames take the
same places. A run of fewer frames than the numbers it leaves (some of them skipped by the unit) is placed from
the first of them.

A unit that still holds the record stored last either never heard the last acknowledgement, or restarted its
counter (reflashed, or replaced under the same serial) and has since counted past it. The transfer then asks
from that record, and nothing is admitted until it came back the same (``verify``): a different record under
that number is a restarted counter, and nothing is stored or acknowledged. When it does not come back at all
and a frame that does not decode (its number unknown) came in its place, the unit's copy of it is likely
damaged (``verify_undecodable``): nothing can tell the two apart then, and nothing is stored or acknowledged
either.
"""

from dataclasses import dataclass, field


@dataclass
class TransferWindow:
    """The next sequence number a transfer may store, the undecodable frames naming no number since the record
    stored last (``held``: each may explain one record of a gap), and the record stored last with its content hash
    while it is still to be seen again (``verify``). ``held`` and ``settled`` hold whatever the caller notes with
    each frame (compared with ``==`` to tell a frame repeated)."""

    expected: int
    held: list = field(default_factory=list)
    verify: tuple[int, str] | None = None
    verify_undecodable: bool = False  # while verifying, a frame came that does not decode and names no number
    settled: list[tuple[int, object]] = field(default_factory=list)  # held frames placed, for the caller to keep
    # Records received beyond a gap the held frames cannot explain, until the transfer ends: (number, what the
    # caller noted with it, the frames that name no number received just before it).
    ahead: list[tuple[int, object, list]] = field(default_factory=list)

    def first_to_ask(self) -> int:
        """The sequence number to ask the unit to send from."""
        return self.verify[0] if self.verify is not None else self.expected

    def seen_again(self, seq: int, content_hash: str) -> bool | None:
        """The record stored last came again: True if it is the same (the same content hash), False if another
        record holds its number (the counter restarted); None for any other record."""
        if self.verify is None or seq != self.verify[0]:
            return None
        same = content_hash == self.verify[1]
        if same:
            self.verify = None
        return same

    def note_undecodable(self, seq: int | None = None, content_hash: str = "", frame: object = None) -> bool:
        """An undecodable frame arrived. Its sequence number unknown, it may have been the record with the expected
        one (or any in a gap): ``frame`` is held until its run closes (see the module docstring). Its sequence
        number known (a sound frame holding a value the profile does not define), it explains that record and no
        other (the caller keeps it under that number): a copy of it notified twice must not let the window jump
        over a record that comes late. Under the number of the record stored last, it is that record only if it is
        the same frame (``content_hash``; the record stored had decoded, so another frame is another record).
        False: another record holds that number (the counter restarted)."""
        if seq is None:
            self.held.append(frame)
            self.verify_undecodable = self.verify_undecodable or self.verify is not None
            return True
        same = self.seen_again(seq, content_hash)
        if same is None:
            self.admit(seq)
        return same is not False

    def take_settled(self) -> list[tuple[int, object]]:
        """The held frames placed since the last call, each with the sequence number it stands for."""
        settled, self.settled = self.settled, []
        return settled

    def settle_unreadable_last(self) -> None:
        """The transfer ends with the record stored last not seen again, and frames that name no number in its
        place (``verify_undecodable``): nothing is stored or acknowledged. The first of them, likely the unit's
        damaged copy of it, is placed after it, so that what the unit sends is kept; the rest are copies or
        records the unit still holds."""
        if self.held:
            self.settled.append((self.expected, self.held[0]))
            self.held = []

    def admit(self, seq: int, record: object = None) -> bool | None:
        """True if the record with ``seq`` is the next one to store (then the window moves past it, and the
        undecodable frames held before it are placed in the gap it leaves, as many as it has). None if it lies
        beyond a gap nothing explains yet: ``record`` (whatever the caller notes with it) is kept aside until the
        transfer ends (``close``), and so is every record after it. False if it is not to be stored: already
        stored, or before the record stored last came back."""
        if self.verify is not None:
            return False  # not before the record stored last has come back the same
        gap = seq - self.expected
        if gap < 0:
            return False
        if self.ahead or gap > len(self.held):
            self.ahead.append((seq, record, self.held))
            self.held = []
            return None
        self._settle(gap)
        self.expected = seq + 1
        return True

    def _settle(self, places: int) -> int:
        """The run of held frames closed, explaining ``places`` records from ``expected``: that many of them are
        placed there and the rest let go, first those that repeat the frame before them (a notification twice).
        Returns how many were placed (fewer than ``places`` when the run was shorter)."""
        kept = list(self.held)
        at = len(kept) - 1
        while len(kept) > places and at > 0:
            if kept[at] == kept[at - 1]:
                del kept[at]
            at -= 1
        placed = kept[:places]
        self.settled += [(self.expected + n, frame) for n, frame in enumerate(placed)]
        self.held = []
        return len(placed)

    def close(self, unit_highest_seq: int) -> "Closing":
        """The transfer ended (its summary came, ``verify`` settled): the unit sent every record it holds from the
        number asked. The records kept aside are admitted in order: the numbers before each that no frame
        explains were not sent, so the unit does not hold them (skipped). After the last record sent, a tail of
        frames that name no number explains the numbers up to ``unit_highest_seq`` when there are as many (more
        are copies); fewer are placed from the first, and the window stays there: a number the unit assigned
        and did not send, with nothing sent after it, may be a session still running, neither skipped nor
        explained. Frames that repeat the one before them count once there.

        Returns the records now admitted and the numbers skipped (``Closing``)."""
        tail, closing = self.held, Closing()
        for seq, record, frames in sorted(self.ahead, key=lambda kept: kept[0]):
            if seq < self.expected:
                continue  # the same record notified twice
            gap = seq - self.expected
            self.held = frames
            placed = self._settle(gap)
            if placed < gap:
                closing.skipped.append((self.expected + placed, seq - 1))
            self.expected = seq + 1
            closing.records.append(record)
        self.ahead, self.held = [], tail
        missing = unit_highest_seq - self.expected + 1
        # A frame repeated in the tail is taken for one notified twice: counted twice, it could explain the number
        # of a session still running, and the acknowledgement would free it when it is stored.
        frames = sum(1 for n, frame in enumerate(tail) if n == 0 or frame != tail[n - 1])
        if missing <= frames:  # a tail they explain, or none: frames held after the last record are copies
            self._settle(max(missing, 0))
            self.expected = max(self.expected, unit_highest_seq + 1)
        elif frames:  # reported where they would stand; the window does not move past them
            self._settle(frames)
        return closing


@dataclass
class Closing:
    """What a transfer's end decided: the records kept aside now admitted, in order (what the caller noted with
    each), and the runs of numbers the unit skipped (first, last), which no acknowledgement may cover before
    they are noted."""

    records: list = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)
