"""Only records in sequence are stored during a transfer (pure rules)."""

from device_gateway.sequencing import TransferWindow


def test_records_in_sequence_are_admitted():
    window = TransferWindow(expected=1)
    assert [window.admit(seq) for seq in (1, 2, 3)] == [True, True, True]
    assert window.expected == 4


def test_a_record_past_a_gap_is_kept_aside_until_the_transfer_ends():
    window = TransferWindow(expected=43)
    assert window.admit(150, "150") is None  # not stored before the transfer ends: a stale notification, say
    assert window.expected == 43
    assert [window.admit(seq, str(seq)) for seq in (43, 44)] == [None, None]  # after it, everything waits
    closing = window.close(unit_highest_seq=150)
    # The unit sent 43 and 44 and then 150: 45..149 it does not hold, 150 is stored after 44.
    assert (closing.records, closing.skipped, window.expected) == (["43", "44", "150"], [(45, 149)], 151)


def test_numbers_the_unit_skipped_are_known_only_once_it_sent_a_higher_one():
    window = TransferWindow(expected=11)
    assert [window.admit(seq, seq) for seq in (11, 12, 13, 14)] == [True] * 4
    assert [window.admit(seq, seq) for seq in (16, 17)] == [None, None]
    closing = window.close(unit_highest_seq=18)  # 18 assigned, not sent: a session still running
    assert (closing.records, closing.skipped) == ([16, 17], [(15, 15)])
    assert window.expected == 18  # 18 is neither skipped nor explained: asked for again next time


def test_a_highest_number_the_unit_did_not_send_is_not_skipped():
    window = TransferWindow(expected=11)
    closing = window.close(unit_highest_seq=11)  # nothing sent: 11 may be the session running now
    assert (closing.records, closing.skipped, window.expected) == ([], [], 11)


def test_a_gap_with_fewer_undecodable_frames_than_numbers_is_placed_from_its_start_and_the_rest_skipped():
    window = TransferWindow(expected=2)
    window.note_undecodable(frame="x")
    assert window.admit(5, 5) is None
    closing = window.close(unit_highest_seq=5)
    assert (closing.records, closing.skipped, window.take_settled()) == ([5], [(3, 4)], [(2, "x")])


def test_a_tail_with_fewer_frames_than_numbers_is_reported_but_not_passed():
    window = TransferWindow(expected=20)
    window.note_undecodable(frame="x")
    window.note_undecodable(frame="x")  # notified twice: it stands for one number, not 20 and 21
    window.close(unit_highest_seq=21)  # 21: a session still running, perhaps
    assert (window.take_settled(), window.expected) == ([(20, "x")], 20)


def test_already_stored_record_is_not_admitted_again():
    window = TransferWindow(expected=5)
    assert window.admit(4) is False


def test_gap_explained_by_an_undecodable_frame_is_admitted():
    window = TransferWindow(expected=3)
    window.note_undecodable()
    assert window.admit(4) is True
    assert window.admit(6) is None  # unexplained: not before the transfer ends


def test_the_transfer_passes_the_unit_highest_sequence_once_it_is_admitted():
    window = TransferWindow(expected=10)
    window.admit(10)
    window.close(10)
    assert window.expected == 11


def test_missing_tail_explained_by_undecodable_frames_completes_the_transfer():
    window = TransferWindow(expected=5)
    window.note_undecodable()
    window.close(5)
    assert window.expected == 6


def test_missing_tail_without_explanation_is_not_passed():
    window = TransferWindow(expected=5)
    assert window.close(6).skipped == [] and window.expected == 5


def test_an_undecodable_record_whose_sequence_is_known_explains_that_record_and_no_other():
    # Record 5 holds a value this gateway's profile does not define (newer firmware): dead-lettered, its number
    # known. Notified twice, then 7 before 6: the window must not jump from 5 to 7 and drop the late 6.
    window = TransferWindow(expected=5)
    window.note_undecodable(5)
    window.note_undecodable(5)
    assert window.admit(7, "7") is None  # kept aside, not stored before 6
    assert window.admit(6) is None  # after a record kept aside, everything waits for the transfer's end
    closing = window.close(8)
    assert (closing.records, closing.skipped, window.expected) == ([None, "7"], [], 8)  # 8 not sent: asked again


def test_the_record_stored_last_must_come_back_the_same_before_anything_is_admitted():
    window = TransferWindow(expected=6, verify=(5, "hash-of-5"))
    assert window.first_to_ask() == 5
    assert window.admit(6) is False  # not before 5 came back
    assert window.seen_again(6, "other") is None  # not the record to verify
    assert window.seen_again(5, "hash-of-5") is True and window.first_to_ask() == 6
    assert window.admit(6) is True
    restarted = TransferWindow(expected=6, verify=(5, "hash-of-5"))
    assert restarted.seen_again(5, "another record numbered 5") is False  # a counter that restarted
    undecodable = TransferWindow(expected=6, verify=(5, "hash-of-5"))
    assert undecodable.note_undecodable(5, "hash-of-5") is True  # the same frame, which no longer decodes here
    assert undecodable.admit(6) is True
    # Another frame under that number that does not decode: the record stored had decoded, so it is another record.
    restarted_undecodable = TransferWindow(expected=6, verify=(5, "hash-of-5"))
    assert restarted_undecodable.note_undecodable(5, "hash of a frame with an end reason this gateway lacks") is False
    assert restarted_undecodable.admit(6) is False and restarted_undecodable.first_to_ask() == 5


def test_each_undecodable_frame_stands_for_its_place_after_the_record_stored_last():
    window = TransferWindow(expected=2)  # record 1 stored
    for _ in range(3):  # three frames that name no number (identical, say: erased flash)
        window.note_undecodable(frame="ff")
    assert window.take_settled() == []  # how many records they stand for is not known yet
    assert window.admit(5) and window.take_settled() == [(2, "ff"), (3, "ff"), (4, "ff")]
    # Cut short before the run closed and asked again from the record after the one stored last, the same frames
    # take the same places.
    cut = TransferWindow(expected=2)
    cut.note_undecodable(frame="a")
    assert cut.take_settled() == []  # cut short: no summary, no close
    again = TransferWindow(expected=2)
    again.note_undecodable(frame="a")
    assert again.admit(3) and again.take_settled() == [(2, "a")]


def test_a_frame_notified_twice_is_placed_once_and_never_where_a_record_is_stored():
    window = TransferWindow(expected=2)
    window.note_undecodable(frame="frame of 2")
    window.note_undecodable(frame="frame of 2")  # the same notification again
    assert window.admit(3) and window.take_settled() == [(2, "frame of 2")]
    window.note_undecodable(frame="frame of 2")  # once more, after 3: nothing is missing before 4
    assert window.admit(4) and window.take_settled() == []
    window.close(4)
    assert window.expected == 5 and window.take_settled() == []


def test_of_more_frames_than_records_missing_the_repeats_are_let_go_first():
    window = TransferWindow(expected=2)
    for frame in ("frame of 2", "frame of 2", "frame of 3", "frame of 3"):
        window.note_undecodable(frame=frame)
    assert window.admit(4) and window.take_settled() == [(2, "frame of 2"), (3, "frame of 3")]


def test_an_undecodable_tail_is_placed_when_the_summary_closes_it():
    window = TransferWindow(expected=4)
    window.note_undecodable(frame="frame of 4")
    window.note_undecodable(frame="frame of 4")
    window.close(4)
    assert window.expected == 5 and window.take_settled() == [(4, "frame of 4")]
