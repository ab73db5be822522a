"""JSON as the API writes it: every date and time in ISO 8601.

Flask's own provider writes a ``datetime`` it meets outside a marshmallow field (inside a ``Dict`` or ``Raw``
field's value, say) as an HTTP date, "Mon, 30 Nov 2026 01:48:12 GMT"; here it is ISO 8601 like every other
date of the API ("2026-11-30T01:48:12+00:00"; a date alone "2026-11-30")."""

from __future__ import annotations

from datetime import date, datetime, time

from flask.json.provider import DefaultJSONProvider


class IsoJSONProvider(DefaultJSONProvider):
    @staticmethod
    def default(o):
        if isinstance(o, date | datetime | time):
            return o.isoformat()
        return DefaultJSONProvider.default(o)
