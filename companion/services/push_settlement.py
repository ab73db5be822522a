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
    attempted: bool = True  # False: this round went to no phone (held for quiet hours at sending)
    reason: str | None = None  # why a round that went to no phone ended so (the round's log)

    def details(self) -> dict:
        """The details :meth:`companion.store.outbox.Outbox.settle` records."""
        return {"phones": self.phones, "error_codes": self.error_codes, "not_before": self.not_before,
                "pending_phones": self.pending_phones, **({} if self.attempted else {"attempted": False}),
                **({"reason": self.reason} if self.reason else {})}

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


QUIET_HOURS = "quiet_hours"  # the reason logged for a round held for them at sending


def quiet_hours_hold(doc: dict, at: datetime, recipient: Account | None) -> datetime | None:
    """When a push that was due outside its recipient's quiet hours goes, if ``at`` (its sending, or a retry of it)
    falls inside them: at their end. None when it may go at ``at``: outside them, a push that goes whatever the hour
    (an urgent alert, a snooze the patient asked for), or one that was due inside them."""
    if recipient is None or recipient.quiet_hours is None or ignores_quiet_hours(doc["kind"], doc["source_key"]):
        return None
    if recipient.quiet_at(doc["not_before"]) or not recipient.quiet_at(at):
        return None
    return next_allowed(at, recipient.zone_history().zone_at(at), recipient.quiet_hours)


def retried_outside_quiet_hours(doc: dict, settlement: Settlement, recipient: Account | None) -> Settlement:
    """A retry of a push that was due outside its recipient's quiet hours goes outside them too: at their end, or
    not at all if that is past its lifetime (expired; sent, if a phone has it already). Not a push that goes
    whatever the hour (an urgent alert, a snooze the patient asked for): retried as FCM said."""
    if settlement.state != SCHEDULED or settlement.not_before is None:
        return settlement
    after = quiet_hours_hold(doc, settlement.not_before, recipient)
    if after is None:
        return settlement
    if after >= doc["expires_at"]:
        return replace(settlement, state=SENT if settlement.reached else EXPIRED, not_before=None,
                       pending_phones=None)
    return replace(settlement, not_before=after)


def held_for_quiet_hours(doc: dict, now: datetime, recipient: Account | None) -> Settlement | None:
    """A push about to go at ``now``, inside its recipient's quiet hours, when it was due outside them (the sender,
    FCM or the worker was down, or a backlog held it): not sent, but held for their end, as its retries are; or not
    at all if that is past its lifetime (expired; sent, if a phone has it already, the others owed it getting nothing
    more). None: it goes now. The round goes to no phone and counts no attempt."""
    after = quiet_hours_hold(doc, now, recipient)
    if after is None:
        return None
    if after >= doc["expires_at"]:
        return Settlement(SENT if doc.get("sent_at") is not None else EXPIRED, [], [], attempted=False,
                          reason=QUIET_HOURS)
    return Settlement(SCHEDULED, [], [], not_before=after, pending_phones=doc.get("pending_phones"), attempted=False,
                      reason=QUIET_HOURS)
