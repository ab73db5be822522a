"""How one round of sends to a person's phones settles their notification (pure, no server)."""

from __future__ import annotations

from datetime import timedelta

from companion.notify.push import Outcome, PushResult
from companion.services.push_settlement import settle
from tests.notify.clock import T0


def phone(outcome: Outcome, **kw) -> PushResult:
    return PushResult("ob-1", outcome, **kw)


def test_one_phone_reached_and_another_answering_not_now_retries_that_phone_alone():
    result = settle([("a", phone(Outcome.RETRY, retry_at=T0, error_code="UNAVAILABLE")),
                     ("b", phone(Outcome.SENT, message_name="projects/p/messages/1")),
                     ("c", phone(Outcome.FAILED, error_code="INVALID_ARGUMENT"))])
    assert (result.state, result.not_before, result.pending_phones) == ("scheduled", T0, ["a"])


def test_one_phone_reached_and_the_others_failed_for_good_means_sent():
    result = settle([("a", phone(Outcome.TOKEN_DEAD, error_code="UNREGISTERED")),
                     ("b", phone(Outcome.SENT, message_name="projects/p/messages/1"))])
    assert (result.state, result.error_codes, result.pending_phones) == ("sent", ["UNREGISTERED"], None)


def test_a_round_to_the_phones_still_owed_it_ends_sent_once_none_is_owed():
    assert settle([("a", phone(Outcome.EXPIRED))], reached_before=True).state == "sent"
    assert settle([], reached_before=True).state == "sent"  # the phone owed it was signed out
    again = settle([("a", phone(Outcome.RETRY, retry_at=T0))], reached_before=True)
    assert (again.state, again.pending_phones) == ("scheduled", ["a"])


def test_while_no_phone_has_it_a_retry_goes_to_every_phone_again():
    assert settle([("a", phone(Outcome.RETRY, retry_at=T0))]).pending_phones is None


def test_only_retryable_failures_reschedule_at_the_earliest_retry_time():
    result = settle([("a", phone(Outcome.RETRY, retry_at=T0 + timedelta(seconds=30))),
                     ("b", phone(Outcome.RETRY, retry_at=T0 + timedelta(seconds=12))),
                     ("c", phone(Outcome.TOKEN_DEAD, error_code="UNREGISTERED"))])
    assert (result.state, result.not_before) == ("scheduled", T0 + timedelta(seconds=12))


def test_all_phones_expired_means_expired():
    assert settle([("a", phone(Outcome.EXPIRED)), ("b", phone(Outcome.EXPIRED))]).state == "expired"


def test_dead_and_failed_phones_mean_failed_with_their_codes():
    result = settle([("a", phone(Outcome.TOKEN_DEAD, error_code="UNREGISTERED")),
                     ("b", phone(Outcome.FAILED, error_code="INVALID_ARGUMENT"))])
    assert (result.state, result.error_codes) == ("failed", ["INVALID_ARGUMENT", "UNREGISTERED"])


def test_no_phone_at_all_fails_with_no_device():
    assert (settle([]).state, settle([]).error_codes) == ("failed", ["NO_DEVICE"])


def test_per_phone_record_names_the_install_not_the_token():
    [record] = settle([("install-7", phone(Outcome.SENT, message_name="m"))]).phones
    assert record == {"install_id": "install-7", "outcome": "sent", "message_name": "m", "error_code": None}
