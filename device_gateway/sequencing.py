"""Which notified records a transfer may store: strictly in sequence, so a stale or reordered
notification can never make the gateway skip (and then acknowledge away) records it has not stored.

A gap is admitted only when something explains it: undecodable frames received since the last stored
record (their sequence numbers are unknown, and they are dead-lettered raw), or the unit no longer
holding the first records asked for (known from its transfer summary before the transfer starts).

A unit that still holds the record stored last either never heard the last acknowledgement, or restarted its
counter (reflashed, or replaced under the same serial) and has since counted past it. The transfer then asks
from that record, and nothing is admitted until it came back the same (``verify``): a different record under
that number is a restarted counter, and nothing is stored or acknowledged. When it does not come back at all
and a frame that does not decode (its number unknown) came in its place, the unit's copy of it is likely
damaged (``verify_undecodable``): nothing can tell the two apart then, and nothing is stored or acknowledged
either.
"""

from dataclasses import dataclass


@dataclass
class TransferWindow:
    """The next sequence number a transfer may store, how many undecodable frames may explain a gap, and the
    record stored last with its content hash while it is still to be seen again (``verify``)."""

    expected: int
    undecodable_since_stored: int = 0
    verify: tuple[int, str] | None = None
    verify_undecodable: bool = False  # while verifying, a frame came that does not decode and names no number

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

    @classmethod
    def start(cls, last_stored_seq: int, unit_highest_seq: int, unit_records_stored: int) -> "TransferWindow":
        """Begin after ``last_stored_seq``, or at the unit's lowest held record if that is later."""
        lowest_held = unit_highest_seq - unit_records_stored + 1
        return cls(expected=max(last_stored_seq + 1, lowest_held))

    def note_undecodable(self, seq: int | None = None, content_hash: str = "") -> bool:
        """An undecodable frame arrived (dead-lettered raw). Its sequence number unknown, it may have been the
        record with the expected one (or any in a gap). Its sequence number known (a sound frame holding a value
        the profile does not define), it explains that record and no other: a copy of it notified twice must
        not let the window jump over a record that comes late. Under the number of the record stored last, it
        is that record only if it is the same frame (``content_hash``; the record stored had decoded, so
        another frame is another record). False: another record holds that number (the counter restarted)."""
        if seq is None:
            self.undecodable_since_stored += 1
            self.verify_undecodable = self.verify_undecodable or self.verify is not None
            return True
        same = self.seen_again(seq, content_hash)
        if same is None:
            self.admit(seq)
        return same is not False

    def slot_of_undecodable(self, seq: int | None = None) -> int:
        """The sequence number an undecodable frame just noted (``note_undecodable``) stands for: the one it names,
        else the place it takes after the record stored last (the first such frame the record after that one, the
        next the one after, as a gap it may explain is counted). A transfer cut short asks again from the record
        after the one stored last, so the same frame sent again takes the same place; byte-identical frames of
        different records (erased flash) each take their own."""
        return seq if seq is not None else self.expected + self.undecodable_since_stored - 1

    def admit(self, seq: int) -> bool:
        """True if the record with ``seq`` is the next one to store (then the window moves past it)."""
        if self.verify is not None:
            return False  # not before the record stored last has come back the same
        gap = seq - self.expected
        if gap < 0 or gap > self.undecodable_since_stored:
            return False
        self.expected = seq + 1
        self.undecodable_since_stored = 0
        return True

    def is_complete(self, unit_highest_seq: int) -> bool:
        """True once every record up to the unit's highest sequence is admitted or explained.

        A missing tail counts as explained when as many undecodable frames arrived since the last
        stored record; the window then moves past it.
        """
        if self.verify is not None:
            return False
        missing = unit_highest_seq - self.expected + 1
        if 0 < missing <= self.undecodable_since_stored:
            self.expected = unit_highest_seq + 1
            self.undecodable_since_stored = 0
        return self.expected > unit_highest_seq
