"""Answer schemas more than one area of the API shares."""

from __future__ import annotations

from marshmallow import Schema, fields


class TaskProgressSchema(Schema):
    """One kind of task on one day (TENS, mindfulness or medication): the domain's DayAdherence."""

    state = fields.String(metadata={"description": "no_tasks | no_events | progress"})
    fraction = fields.Float(allow_none=True)
    minutes = fields.Float()
    minutes_target = fields.Float()
    done = fields.Integer()
    planned = fields.Integer()
