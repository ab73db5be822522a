"""The shape of a reminder schedule on the wire (the rules it must meet live in companion.domain.schedules)."""

from __future__ import annotations

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from companion.http.schemas import Pattern, StrictSchema

CLOCK = Pattern(r"^([01]\d|2[0-3]):[0-5]\d$", error="use HH:MM on a 24-hour clock")
TYPES = ("weekly", "every_n_days", "hourly")
NEEDS = {"weekly": ("times",), "every_n_days": ("times", "every_days"),
         "hourly": ("window_start", "window_end", "every_hours")}


class ScheduleSchema(StrictSchema):
    class Meta:
        rules = ("weekly needs times (weekdays optional); every_n_days needs times and every_days; hourly needs "
                 "window_start, window_end and every_hours; each type refuses the other types' fields")

    type = fields.String(required=True, validate=validate.OneOf(TYPES),
                         metadata={"description": "weekly: times on weekdays; every_n_days: times every N days "
                                                  "from start_date; hourly: every N hours inside a daily window. "
                                                  "Each type needs its own fields and refuses the others' (422): "
                                                  "weekly `times` (and optionally `weekdays`); every_n_days `times` "
                                                  "and `every_days`; hourly `window_start`, `window_end` and "
                                                  "`every_hours`. `end_date` may not be before `start_date`"})
    times = fields.List(fields.String(validate=CLOCK), validate=validate.Length(max=24),
                        metadata={"description": "wall-clock times in the patient's zone"})
    weekdays = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=7)),
                           validate=validate.Length(max=7), metadata={"description": "1 = Monday ... 7 = Sunday"})
    every_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=366))
    window_start = fields.String(validate=CLOCK)
    window_end = fields.String(validate=CLOCK)
    every_hours = fields.Integer(strict=True, validate=validate.Range(min=1, max=23))
    start_date = fields.Date(load_default=None, allow_none=True,
                             metadata={"description": "first local date (default: today on the patient's clock)"})
    end_date = fields.Date(load_default=None, allow_none=True, metadata={"description": "last local date"})

    @validates_schema
    def fields_for_type(self, data, **kwargs):
        kind = data.get("type")
        missing = [name for name in NEEDS.get(kind, ()) if data.get(name) in (None, [])]
        if missing:
            raise ValidationError({name: [f"required for a {kind} schedule"] for name in missing})
        foreign = [name for name in ("times", "weekdays", "every_days", "window_start", "window_end", "every_hours")
                   if name in data and name not in NEEDS.get(kind, ()) + (("weekdays",) if kind == "weekly" else ())]
        if foreign:
            raise ValidationError({name: [f"not part of a {kind} schedule"] for name in foreign})

    @post_load
    def as_stored(self, data, **kwargs):
        for name in ("start_date", "end_date"):
            if data.get(name) is not None:
                data[name] = data[name].isoformat()
        return data
