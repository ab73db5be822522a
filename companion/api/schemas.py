"""Answer schemas more than one area of the API shares, and what every change feed takes and answers."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from companion.http.paging import next_field
from companion.http.schemas import StrictSchema

FEED_LIMIT = 500


class TaskProgressSchema(Schema):
    """One kind of task on one day (TENS, mindfulness or medication): the domain's DayAdherence."""

    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    state = fields.String(metadata={"description": "no_tasks | no_events | progress"})
    fraction = fields.Float(allow_none=True)
    minutes = fields.Float()
    minutes_target = fields.Float()
    done = fields.Integer()
    planned = fields.Integer()


def version_field() -> fields.Integer:
    """The object's version: its ETag without the quotes; compare it for equality only."""
    return fields.Integer(attribute="seq", dump_default=0, metadata={
        "description": 'the version of this object (its ETag is "<version>"): send it in If-Match to change '
                       "exactly this version; it grows with every change, by unspecified steps"})


class ChangesArgs(StrictSchema):
    cursor = fields.String(load_default=None, validate=validate.Length(max=40), metadata={
        "description": "the next_cursor of your previous answer; none to read from the start. A cursor that can "
                       "no longer be continued from is answered 410: drop what you hold and read from the start"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=FEED_LIMIT))


def changes_schema(name: str, item_schema: type[Schema]) -> type[Schema]:
    """The answer of a change feed whose items are ``item_schema`` (one class per feed: each has its name in
    the OpenAPI document)."""
    return type(name, (Schema,), {
        "__doc__": "Changes after the cursor, oldest change first: each item is the object as it is now "
                   "(deleted ones as tombstones, `deleted: true`).",
        "items": fields.List(fields.Nested(item_schema), required=True),
        "next_cursor": fields.String(required=True, metadata={"description": "where to continue from next time (opaque): keep it "
                                                              "for the next sync, even when `next` is null"}),
        "has_more": fields.Boolean(required=True, metadata={"description": "true: ask again at once with next_cursor (or follow "
                                                            "`next`)"}),
        "next": next_field(),
    })
