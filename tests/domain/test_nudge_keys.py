"""The source keys of a reminder occurrence's nudges: plain for a slot never brought back by a move undone (the
keys earlier releases queued under, so a nudge in flight at an upgrade is not queued again), keyed by the due
instant for one brought back (its nudges on the restored clock are not those sent on the other one)."""

from __future__ import annotations

from datetime import UTC, datetime

from companion.domain.notifications import left_on_the_other_clock, nudge_key, reminding_keys_of

DUE = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)


def test_a_slot_never_brought_back_keeps_the_plain_nudge_keys():
    occurrence = {"_id": "occ-1", "due_at": DUE}
    assert nudge_key(occurrence, 3) == "reminder:occ-1:repeat:3"
    assert nudge_key({**occurrence, "restored_at": None}, 3) == "reminder:occ-1:repeat:3"
    assert nudge_key({**occurrence, "push_with": "occ-0"}, 1) == "reminder:occ-0:repeat:1"


def test_a_slot_brought_back_keys_its_nudges_by_its_due_instant_and_still_names_the_earlier_ones():
    occurrence = {"_id": "occ-1", "due_at": DUE, "restored_at": datetime(2026, 3, 2, 17, 33, tzinfo=UTC)}
    assert nudge_key(occurrence, 3) == f"reminder:occ-1:repeat:3@{int(DUE.timestamp())}"
    keys = reminding_keys_of(occurrence)
    assert {"reminder:occ-1", nudge_key(occurrence, 3), "reminder:occ-1:repeat:3"} <= set(keys)


def test_a_slot_brought_back_leaves_its_nudges_and_resend_of_the_other_clock_but_not_its_first_push():
    east = {"_id": "occ-1", "due_at": datetime(2026, 3, 2, 17, 0, tzinfo=UTC),
            "snoozed_until": datetime(2026, 3, 2, 17, 40, tzinfo=UTC)}
    back = {**east, "due_at": DUE, "restored_at": datetime(2026, 3, 2, 17, 33, tzinfo=UTC)}
    left = left_on_the_other_clock(east, back)
    assert "reminder:occ-1:repeat:3" in left and "reminder:occ-1:resend" in left
    assert not {"reminder:occ-1", nudge_key(back, 3), "reminder:occ-1:snooze:20260302T174000"} & set(left)
    # Brought back twice: the nudges keyed by the earlier restored instant are left too.
    again = {**back, "due_at": datetime(2026, 3, 2, 19, 0, tzinfo=UTC)}
    assert nudge_key(back, 1) in left_on_the_other_clock(back, again)
