"""Settings of the scheduler worker and its jobs (environment variables documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta


def _minutes(name: str, default: float) -> timedelta:
    value = os.environ.get(name)
    return timedelta(minutes=float(value) if value else default)


@dataclass(frozen=True)
class JobSettings:
    """How the jobs behave; every field has a safe default and a COMPANION_* variable.

    - ``reminder_grace``: a push planned for T still goes out until T + grace (catch-up after a
      restart); later than that it is not sent (APScheduler's misfire grace for reminders too).
    - ``reminder_resend_after``: a reminder the app has not confirmed (no delivery receipt) is sent
      once more this long after it went out.
    - ``materialize_horizon``: how far ahead occurrences are kept materialized.
    - ``lease_ttl``: the leader lease's length; the holder renews it every ttl/3.
    - ``push_lease``: how long a dispatcher holds a batch it is sending; a batch whose worker died is
      sent again (by any worker) once it lapses.
    - ``caregiver_alert_delay``: used when a patient has not chosen their own delay.

    The alert thresholds themselves (24 h of silence, 3 low days, ...) are rules: companion.domain.alerts.
    """

    reminder_grace: timedelta = timedelta(minutes=15)
    reminder_resend_after: timedelta = timedelta(minutes=10)
    materialize_horizon: timedelta = timedelta(days=2)
    lease_ttl: timedelta = timedelta(seconds=30)
    dispatch_batch: int = 500
    push_lease: timedelta = timedelta(minutes=5)
    push_token_stale_after: timedelta = timedelta(days=60)
    caregiver_alert_delay: timedelta = timedelta(minutes=60)

    @classmethod
    def from_env(cls) -> JobSettings:
        """Read the COMPANION_* variables, falling back to the defaults above."""
        lease = os.environ.get("COMPANION_LEASE_TTL_S")
        push_lease = os.environ.get("COMPANION_PUSH_LEASE_S")
        return replace(
            cls(),
            reminder_grace=_minutes("COMPANION_REMINDER_GRACE_MIN", 15),
            reminder_resend_after=_minutes("COMPANION_REMINDER_RESEND_MIN", 10),
            caregiver_alert_delay=_minutes("COMPANION_CAREGIVER_ALERT_DELAY_MIN", 60),
            lease_ttl=timedelta(seconds=float(lease)) if lease else cls.lease_ttl,
            push_lease=timedelta(seconds=float(push_lease)) if push_lease else cls.push_lease,
        )
