"""Fields for moments a patient's app reports: timezone-aware, never in the future, not too old."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from marshmallow import ValidationError, fields

from companion.clock import now
from companion.domain.localtime import REPORTED_AHEAD

FUTURE_TOLERANCE = REPORTED_AHEAD  # phones' clocks drift; more than this is a bad clock or a bad app
OLDEST = timedelta(days=366)
MAX_RANGE = timedelta(days=366)


def range_rule(limit: timedelta = MAX_RANGE) -> str:
    """The rule :func:`check_range` applies, as the OpenAPI document states it."""
    return f"'to' may not be before 'from' (equal: a range all the same), and at most {limit.days} days later"


RANGE_RULE = range_rule()


def _plausible(value: datetime) -> None:
    current = now()
    if value > current + FUTURE_TOLERANCE:
        raise ValidationError("must not be more than 5 minutes in the future")
    if value < current - OLDEST:
        raise ValidationError("must not be more than 366 days in the past")


def reported_moment(**kwargs) -> fields.AwareDateTime:
    """A timezone-aware moment, at most 5 minutes ahead of the server and at most 366 days old."""
    return fields.AwareDateTime(validate=_plausible, **kwargs)


def check_range(start: datetime | date, end: datetime | date, limit: timedelta = MAX_RANGE) -> None:
    """Refuse a range that runs backwards or spans more than the limit (422 with a field error). ``to`` equal
    to ``from`` is a range all the same: one day of dates, or an empty range of moments."""
    if end < start:
        raise ValidationError("may not be before 'from'", "to")
    if end - start > limit:
        raise ValidationError(f"the range may span at most {limit.days} days", "to")
