"""Sync: every change an app syncs is stamped with the patient's change sequence, and each change feed
reads only as far as every write has finished, so a write that commits late is never skipped.

Writers use :meth:`Changes.stamp` around the write::

    with self.changes.stamp(patient_id, self.entries) as seq:
        self.entries.update(..., seq=seq)

which reserves the numbers before the write and settles them after it (whatever happened in between, but a
lost answer or a write the database did not acknowledge as asked: a write that may still land, or become visible
to the majority reads later, keeps its numbers until the settle time has passed). A
feed asks :meth:`Changes.page` for the documents changed after a cursor: it never reads past the horizon
(companion.store.changes), answers in sequence order, and hands back the cursor to continue from. The
cursor is ``<last change read>.<since>`` (opaque to the app), where ``since`` is how far the patient's changes
were all written when the app's copy was read from the start: an app whose copy began there cannot hold
anything deleted up to it.

A feed some callers read with parts withheld (the diary's notes, an occurrence's reason for skipping, from a
caregiver the patient has not allowed their own words: :func:`feed_view`) marks a caregiver's cursor with the
view their copy was read in, ``<last change read>.<since>.<view>``: ``n`` with the patient's words, ``w``
without. A cursor read on in another view than the caller's now (the notes granted, or withdrawn, since) is
answered ResyncRequired: the feed hands out only what changed, so a copy read without the notes would never
get them, and one read with them would keep them. The patient's and the care team's cursors carry no view
(they always read everything), and so does every cursor issued before views were marked: a caregiver's
unmarked cursor is answered ResyncRequired once, since the view their copy was read in is not known.

A cursor that may have missed a deletion whose tombstone was purged (it is below the highest purged change,
and its copy began before that change), one this server never issued (a database restored from a backup), or
one from an older version of the API is answered :class:`~companion.domain.errors.ResyncRequired`: the app
drops its copy and reads the feed from the start. The purge is checked again after the rows are read, since the
housekeeping job may purge in between. A read from the start pages through to its end whatever was
purged before it began.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from pymongo.errors import ConnectionFailure, WriteConcernError

from companion.clock import Clock, now
from companion.domain.access import Grant, Relationship, sees_free_text
from companion.domain.errors import ResyncRequired, ServiceUnavailable
from companion.store.changes import SequenceBusy
from companion.store.stores import Stores

DEFAULT_SETTLE = timedelta(seconds=30)
SETTLE_ATTEMPTS = 20
# A bare number: a cursor issued before ``since``; without a view: one issued before views were marked, or to
# a caller who reads everything.
_CURSOR = re.compile(r"^(\d{1,18})(?:\.(\d{1,18})(?:\.([nw]))?)?$")
WITH_WORDS, WITHOUT_WORDS = "n", "w"  # a caregiver's views of a feed (feed_view)
# How far each sequence moves on after a restore: more numbers than any patient's feed hands out in years
# (cursors stay within 18 digits for thousands of restores).
RESTORE_JUMP = 10**12


class Synced(Protocol):
    """A store whose documents carry ``seq`` and ``patient_id`` (see companion.store.feeds)."""

    def changed_between(self, patient_id: str, after: int, upto: int, limit: int) -> list[dict]: ...

    def restamp(self, patient_id: str, first: int, count: int, new_first: int) -> int: ...


@dataclass
class Reservation:
    """The change numbers held for one write: ``first`` (stamp the write with it) and, once settled, ``final``:
    the first number what was written is stored with (another one when it had to be stamped again)."""

    first: int
    count: int
    final: int

    def as_stored(self, doc: dict | None) -> dict | None:
        """``doc`` as this write left it in the store: with the number it was stamped again with, if it was (a
        document this write did not stamp is as it is). An answer shows this version, the one the feed shows
        and the one an If-Match must name."""
        seq = (doc or {}).get("seq")
        if doc is None or seq is None or not self.first <= seq < self.first + self.count:
            return doc
        return {**doc, "seq": self.final + seq - self.first}


@dataclass(frozen=True)
class FeedPage:
    """Documents changed after a cursor, oldest change first, and where to continue from."""

    items: list[dict]
    next_cursor: str
    has_more: bool

    def with_items(self, items: list[dict]) -> dict:
        """The page as the API answers it, with ``items`` shown as the caller may see them."""
        return {"items": items, "next_cursor": self.next_cursor, "has_more": self.has_more}


class Changes:
    def __init__(self, stores: Stores, clock: Clock = now, *, settle_after: timedelta = DEFAULT_SETTLE):
        self.sequences = stores.change_sequences
        self.clock = clock
        self.settle_after = settle_after

    @contextmanager
    def stamp(self, patient_id: str, synced: Synced, count: int = 1) -> Iterator[int]:
        """Reserve ``count`` change numbers for one write to ``synced`` (yields the first) and settle them
        once the write is over, successful or not."""
        with self.reservation(patient_id, synced, count) as held:
            yield held.first

    @contextmanager
    def reservation(self, patient_id: str, synced: Synced, count: int = 1) -> Iterator[Reservation]:
        """As :meth:`stamp`, yielding the :class:`Reservation`: after the block, ``as_stored`` gives a document
        written in it with the number it is stored with, for a write that answers what it wrote."""
        try:
            first = self.sequences.reserve(patient_id, count, self.clock())
        except SequenceBusy:
            raise ServiceUnavailable("too many changes to this patient's data at once; try again",
                                     retry_after_s=1) from None
        held = Reservation(first, count, first)
        outcome_unknown = False
        try:
            yield held
        except (ConnectionFailure, WriteConcernError):
            # The write's answer was lost (a dropped connection, a timeout): it may still land. Or it was applied
            # on the primary but not acknowledged as asked (a write concern error, WTimeoutError among them): it
            # may yet reach the majority the feeds read from, or be rolled back. Either way its numbers stay
            # held, as a crashed writer's do, until the settle time has passed (far longer than the database
            # takes to finish or drop a write it was sent: at least three times COMPANION_DB_TIMEOUT_MS, which the
            # settings check at start-up); no feed reads past them meanwhile, so a write that lands late is read,
            # not skipped behind a cursor that moved on. For a write concern error this
            # holds while the majority confirms it within the settle time (COMPANION_SYNC_SETTLE_S, 30 s; the
            # write concern's own timeout is 5 s): a replica set lagging longer than that (a member down and
            # another far behind) should have it raised, at the cost of feeds waiting as long after each such
            # error; a write confirmed later is past the feeds' cursors (the item's next change carries it).
            outcome_unknown = True
            raise
        finally:
            if not outcome_unknown:
                held.final = self._settle(patient_id, synced, first, count)

    def _settle(self, patient_id: str, synced: Synced, first: int, count: int) -> int:
        """Settle a reservation; returns the first number what was written is stored with."""
        for _ in range(SETTLE_ATTEMPTS):
            if self.sequences.settle(patient_id, first):
                return first
            # A reader gave this reservation up (the write took longer than the settle time) and may have
            # read past it: stamp what was written again, with numbers no reader has passed.
            new_first = self.sequences.reserve(patient_id, count, self.clock())
            synced.restamp(patient_id, first, count, new_first)
            first = new_first
        raise RuntimeError("could not settle a change reservation")

    def departed(self, patient_id: str) -> None:
        """Something the patient's feeds handed out has left them with no tombstone to say so (a session placed
        with another patient, or with nobody until the care team decides): every cursor issued so far is
        answered ResyncRequired, and the app reads its feeds again from the start (without it)."""
        first = self.sequences.reserve(patient_id, 1, self.clock())
        self.sequences.settle(patient_id, first)
        self.sequences.note_purged(patient_id, first)

    def after_restore(self, progress=None) -> int:
        """After the database is restored from a backup: every cursor the phones hold was issued by the lost
        timeline, and new writes would soon reuse its numbers (a phone at cursor N would then skip the changes
        numbered up to N). Each patient's sequence skips ``RESTORE_JUMP`` numbers ahead and everything before
        is marked purged, so every cursor issued before is answered ResyncRequired. Returns how many
        patients' sequences moved."""
        return self.sequences.skip_ahead(RESTORE_JUMP, progress)

    def page(self, patient_id: str, synced: Synced, cursor: str | None, limit: int, *,
             view: str | None = None) -> FeedPage:
        """The documents of ``synced`` changed after ``cursor`` (None: from the start), at most ``limit``, for a
        caller who reads them in ``view`` (feed_view; None: everything, always): a cursor issued in another view
        is answered ResyncRequired."""
        after, since, issued_in = _position(cursor)
        if cursor and issued_in != view:
            raise ResyncRequired("this cursor was issued for a copy read with other permissions (the patient "
                                 "has allowed or withdrawn their own words since): sync again from the start, "
                                 "without a cursor")
        horizon = self.sequences.horizon(patient_id, self.clock() - self.settle_after)
        if max(after, since) > horizon.issued:
            raise ResyncRequired("this cursor was not issued for the data held now (restored from a backup?): "
                                 "sync again from the start, without a cursor")
        fresh = cursor is None or cursor == ""
        if fresh:
            # Every change up to ``settled`` is written: the copy begins after them all. Nothing purged (or gone
            # to another patient) up to ``purged_through`` can be in it either, though a write below that is still
            # pending: the copy begins after those too, or its next page would be told to start again.
            since = max(horizon.settled, horizon.purged_through)
        else:
            _check_not_purged_past(after, since, horizon.purged_through)
        rows = synced.changed_between(patient_id, after, horizon.settled, limit + 1)
        if not fresh:
            # The housekeeping job may have purged, since the horizon was read, a tombstone these rows were to
            # hand out, and the cursor would move past the deletion for good. It notes a purge before it deletes
            # (note_purged, then purge), so asking again now that the rows are read catches any purge they
            # missed: one more find_one of one field by _id. (A copy read from the start cannot hold what was
            # purged before it read it; one that went to another patient meanwhile, its next page is told.)
            _check_not_purged_past(after, since, self.sequences.purged_through(patient_id))
        has_more = len(rows) > limit
        rows = rows[:limit]
        position = rows[-1]["seq"] if has_more else max(after, horizon.settled)
        return FeedPage(rows, f"{position}.{since}" + (f".{view}" if view else ""), has_more)


def _check_not_purged_past(after: int, since: int, purged_through: int) -> None:
    """ResyncRequired if a copy that began at ``since`` and has read up to ``after`` may hold something purged
    (or gone to another patient) since: it began before the purged change and has not read as far as it."""
    if after < purged_through and since < purged_through:
        raise ResyncRequired("this cursor is older than the sync window: deletions it has not seen were "
                             "purged (or a session it holds is no longer this patient's); sync again from the "
                             "start, without a cursor")


def feed_view(grant: Grant) -> str | None:
    """The view in which the caller reads a feed holding the patient's own words, as its cursors record it:
    None for the patient and the care team (everything, always), and for a caregiver, whose view follows what
    the patient allows, WITH_WORDS or WITHOUT_WORDS (sees_free_text)."""
    if grant.relationship is not Relationship.CAREGIVER:
        return None
    return WITH_WORDS if sees_free_text(grant) else WITHOUT_WORDS


def _position(cursor: str | None) -> tuple[int, int, str | None]:
    """(the last change read, where the copy began, the view it was read in) of a cursor; (0, 0, None) for
    none."""
    if cursor is None or cursor == "":
        return 0, 0, None
    matched = _CURSOR.fullmatch(cursor)
    if not matched:
        raise ResyncRequired("this cursor comes from an older version of the API or was not issued by it: "
                             "sync again from the start, without a cursor")
    return int(matched[1]), int(matched[2] or 0), matched[3]
