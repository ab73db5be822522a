"""How one round of sends settles a notification: from what each phone answered, its new state and the phones
still owed it.

A notification goes to every phone its recipient has until one of them gets it. From then on it is owed only to
the phones that answered a retryable error (``pending_phones``, by install id), and retried on those alone, with
the retry policy of a whole notification (:mod:`companion.notify.retry_policy`), while its validity lasts. It is
``sent`` once no phone is owed it any more: each owed phone got it, or failed for good, or its validity ended,
or the phone was signed out. Until then it stays ``scheduled`` (not final, counted as waiting), with ``sent_at``
the moment the first phone got it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from companion.domain.notifications import ignores_quiet_hours
from companion.domain.people import Account
from companion.domain.quiet_hours import next_allowed
from companion.notify.push import Outcome, PushResult
from companion.store.outbox import EXPIRED, FAILED, SCHEDULED, SENT


@dataclass(frozen=True)
class Settlement:
    """The new state of one notification after a round of sends, with what each phone answered.

    ``pending_phones``: for a notification some phone has got (in this round or an earlier one) and that goes
    back to ``scheduled``, the install ids still owed it; None when no phone has it yet (its next round goes to
    every phone the person has then)."""

    state: str
    phones: list[dict]
    error_codes: list[str]
    not_before: datetime | None = None
    pending_phones: list[str] | None = None

    def details(self) -> dict:
        """The details :meth:`companion.store.outbox.Outbox.settle` records."""
        return {"phones": self.phones, "error_codes": self.error_codes, "not_before": self.not_before,
                "pending_phones": self.pending_phones}

    @property
    def reached(self) -> bool:
        """Whether a phone has it (a retry owed to the others, or final)."""
        return self.state == SENT or self.pending_phones is not None


def settle(results: Sequence[tuple[str, PushResult]], *, reached_before: bool = False) -> Settlement:
    """Decide a notification's state from its phones' results (``(install_id, result)`` pairs) in this round;
    ``reached_before``: a phone got it in an earlier round (this round went only to the phones owed it)."""
    phones = [{"install_id": install, "outcome": r.outcome.value, "message_name": r.message_name,
               "error_code": r.error_code} for install, r in results]
    errors = sorted({r.error_code for _, r in results if r.error_code})
    outcomes = {r.outcome for _, r in results}
    reached = reached_before or Outcome.SENT in outcomes
    retries = [(install, r.retry_at) for install, r in results if r.outcome is Outcome.RETRY and r.retry_at is not None]
    if retries and reached:
        return Settlement(SCHEDULED, phones, errors, not_before=min(at for _, at in retries),
                          pending_phones=sorted({install for install, _ in retries}))
    if reached:
        return Settlement(SENT, phones, errors)
    if retries:
        return Settlement(SCHEDULED, phones, errors, not_before=min(at for _, at in retries))
    if outcomes == {Outcome.EXPIRED}:
        return Settlement(EXPIRED, phones, errors)
    return Settlement(FAILED, phones, errors or ["NO_DEVICE"])


def retried_outside_quiet_hours(doc: dict, settlement: Settlement, recipient: Account | None) -> Settlement:
    """A retry of a push that was due outside its recipient's quiet hours goes outside them too: at their end, or
    not at all if that is past its lifetime (expired; sent, if a phone has it already). Not a push that goes
    whatever the hour (an urgent alert, a snooze the patient asked for): retried as FCM said."""
    if settlement.state != SCHEDULED or recipient is None or recipient.quiet_hours is None \
            or ignores_quiet_hours(doc["kind"], doc["source_key"]):
        return settlement
    retry_at = settlement.not_before
    if retry_at is None or recipient.quiet_at(doc["not_before"]) or not recipient.quiet_at(retry_at):
        return settlement
    after = next_allowed(retry_at, recipient.zone_history().zone_at(retry_at), recipient.quiet_hours)
    if after >= doc["expires_at"]:
        return replace(settlement, state=SENT if settlement.reached else EXPIRED, not_before=None,
                       pending_phones=None)
    return replace(settlement, not_before=after)
