"""When to try a push again after FCM said "not now" (429, 500, 503, no answer).

What ends the retries is the notification's validity: a reminder is worth sending for as long as its
completion window is open, so an FCM outage of a few minutes (or of this host's route to it) delays it
and never loses it; a retry that would land after the validity ends it as ``expired``
(:meth:`companion.notify.push.PushSender`). A kind whose validity is not a window but a lifetime of 6 to
72 hours (alerts, device care, summaries) also stops after ``max_attempts`` (then ``failed``): one
message FCM keeps refusing should not be sent for days.

Counting attempts honestly: every app-level attempt is one ``send_each`` entry, and inside it
firebase-admin's HTTP transport (urllib3, configured by :class:`companion.notify.push.TransportRetry`)
retries 500 and 503 answers up to 4 more times. So with the defaults FCM sees at most
``(1 + 4) * 10 = 50`` requests for an alert or a summary (429 answers only ``10``: the transport leaves 429
to this policy so that a long Retry-After never blocks a sending thread); for a reminder, at most one
attempt every 10 s while FCM fails fast, fewer as the delay grows to its 5-minute cap.

Pure Python: no firebase-admin, no database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

_LONGEST_DOUBLING = 20  # the exponent stops growing here (the delay is capped long before; no overflow)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter above a floor, a cap on delay, and a cap on attempts for the kinds
    without a window.

    The delay after attempt ``n`` (1-based) is ``floor + U(0, step * 2**(n-1))``, capped at ``max_delay``
    (``max_delay_in_window`` for a notification with a completion window; never below the floor), where
    ``floor`` is FCM's Retry-After when it sent one and ``min_first_delay`` (10 s, FCM's scaling guidance)
    otherwise. The bounds never shrink from one attempt to the next.

    ``max_attempts`` (10) applies only to the kinds without a window: their retries span about 27 minutes on
    average (1 in 100 under 11 minutes; longer with Retry-After), which outlasts a short outage of FCM. A
    notification with a window is tried until the window closes.
    """

    max_attempts: int = 10
    min_first_delay: timedelta = timedelta(seconds=10)
    step: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(minutes=15)
    max_delay_in_window: timedelta = timedelta(minutes=5)  # a reminder's window is an hour or two

    def delay_bounds(self, attempts_made: int, retry_after: timedelta | None, *,
                     in_window: bool = False) -> tuple[timedelta, timedelta]:
        """The (shortest, longest) wait after ``attempts_made`` failed attempts."""
        if attempts_made < 1:
            raise ValueError("attempts_made counts failed attempts and starts at 1")
        floor = retry_after if retry_after is not None else self.min_first_delay
        spread = self.step * (2 ** min(attempts_made - 1, _LONGEST_DOUBLING))
        cap = self.max_delay_in_window if in_window else self.max_delay
        # Retry-After is honoured even beyond the cap; the cap only bounds the jitter above it.
        return floor, max(floor, min(floor + spread, cap))

    def earliest_retry(self, now: datetime, attempts_made: int, retry_after: timedelta | None,
                       rng: random.Random, *, in_window: bool = False) -> datetime | None:
        """When the next attempt may start. ``None`` when ``attempts_made`` used up the attempts of a notification
        without a window; one with a window (``in_window``) always gets a time, which its validity judges."""
        if not in_window and attempts_made >= self.max_attempts:
            return None
        shortest, longest = self.delay_bounds(attempts_made, retry_after, in_window=in_window)
        jitter = rng.uniform(0, (longest - shortest).total_seconds())
        return now + shortest + timedelta(seconds=jitter)
