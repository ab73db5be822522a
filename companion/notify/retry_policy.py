"""When to try a push again after FCM said "not now" (429, 500, 503).

Counting attempts honestly: every app-level attempt is one ``send_each`` entry, and inside it
firebase-admin's HTTP transport (urllib3, configured by :class:`companion.notify.push.TransportRetry`)
retries 500 and 503 answers up to 4 more times. So with the defaults FCM sees at most
``(1 + 4) * 3 = 15`` requests for one message, and 429 answers only ``3`` (the transport leaves 429 to
this policy so that a long Retry-After never blocks a sending thread).

Pure Python: no firebase-admin, no database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter above a floor, a cap on attempts and a cap on delay.

    The delay after attempt ``n`` (1-based) is ``floor + U(0, step * 2**(n-1))``, capped at
    ``max_delay`` (but never below the floor), where ``floor`` is FCM's Retry-After when it sent one and ``min_first_delay``
    (10 s, FCM's scaling guidance) otherwise. The bounds never shrink from one attempt to the next.
    """

    max_attempts: int = 3
    min_first_delay: timedelta = timedelta(seconds=10)
    step: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(minutes=15)

    def delay_bounds(self, attempts_made: int, retry_after: timedelta | None) -> tuple[timedelta, timedelta]:
        """The (shortest, longest) wait after ``attempts_made`` failed attempts."""
        if attempts_made < 1:
            raise ValueError("attempts_made counts failed attempts and starts at 1")
        floor = retry_after if retry_after is not None else self.min_first_delay
        spread = self.step * (2 ** (attempts_made - 1))
        # Retry-After is honoured even beyond max_delay; the cap only bounds the jitter above it.
        return floor, max(floor, min(floor + spread, self.max_delay))

    def earliest_retry(self, now: datetime, attempts_made: int, retry_after: timedelta | None,
                       rng: random.Random) -> datetime | None:
        """When the next attempt may start, or ``None`` when ``attempts_made`` used up the attempts."""
        if attempts_made >= self.max_attempts:
            return None
        shortest, longest = self.delay_bounds(attempts_made, retry_after)
        jitter = rng.uniform(0, (longest - shortest).total_seconds())
        return now + shortest + timedelta(seconds=jitter)
