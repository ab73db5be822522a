"""How one round of sends to a person's phones settles their notification (pure, no server)."""

from __future__ import annotations

from datetime import timedelta

from companion.notify.push import Outcome, PushResult
from companion.services.push_delivery import settle
from tests.notify.clock import T0


def phone(outcome: Outcome, **kw) -> PushResult:
    return PushResult("ob-1", outcome, **kw)


def test_one_phone_reached_means_sent_even_if_another_failed():
    result = settle([("a", phone(Outcome.RETRY, retry_at=T0, error_code="UNAVAILABLE")),
                     ("b", phone(Outcome.SENT, message_name="projects/p/messages/1"))])
    assert (result.state, result.error_codes) == ("sent", ["UNAVAILABLE"])


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
