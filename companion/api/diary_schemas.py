"""What the pain diary accepts and what it answers."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from companion.api.moments import RANGE_RULE, check_range, reported_moment
from companion.api.schemas import changes_schema, version_field
from companion.domain.pain import bpi_severity_problems
from companion.http.paging import cursor_field, next_field
from companion.http.schemas import EachOnItsOwn, Pattern, StrictSchema, edit_form, text

SCORE = validate.Range(min=0, max=10)
CLIENT_ID = Pattern(r"^[A-Za-z0-9_-]{8,64}$", error="8-64 letters, digits, '-' or '_' (e.g. a UUID)")
SESSION_RECORD_ID = Pattern(r"^[A-Za-z0-9-]{1,40}:\d{1,12}$", error="a session record id (SERIAL:SEQ)")
BATCH_LIMIT = 500


def score(**kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=SCORE, **kwargs)


class PainContextSchema(StrictSchema):
    location = text(100, load_default=None, allow_none=True)
    activity = text(100, load_default=None, allow_none=True)
    sleep_quality = score(load_default=None, allow_none=True)
    mood = score(load_default=None, allow_none=True)
    note = text(2000, load_default=None, allow_none=True)


class InterferenceSchema(StrictSchema):
    general_activity = score(load_default=None, allow_none=True)
    mood = score(load_default=None, allow_none=True)
    walking_ability = score(load_default=None, allow_none=True)
    normal_work = score(load_default=None, allow_none=True)
    relations = score(load_default=None, allow_none=True)
    sleep = score(load_default=None, allow_none=True)
    enjoyment_of_life = score(load_default=None, allow_none=True)


class BriefPainInventorySchema(StrictSchema):
    """The BPI short form: worst and least pain of the last 24 hours bound the average and the pain now."""

    class Meta:
        rules = "least <= average <= worst and least <= now <= worst (equal answers are consistent)"

    worst = score(required=True, metadata={"description": "pain at its worst in the last 24 hours"})
    least = score(required=True, metadata={"description": "pain at its least in the last 24 hours (<= worst)"})
    average = score(required=True, metadata={"description": "pain on the average (between least and worst)"})
    now = score(required=True, metadata={"description": "pain right now (between least and worst)"})
    interference = fields.Nested(InterferenceSchema, load_default=dict)

    @validates_schema
    def consistent(self, data, **kwargs):
        problems = bpi_severity_problems(data["worst"], data["least"], data["average"], data["now"])
        if problems:
            raise ValidationError({item: [reason] for item, reason in problems.items()})


def _linked_session(data: dict) -> None:
    if bool(data.get("phase")) != bool(data.get("session_record_id")):
        raise ValidationError("a before/after rating needs both phase and session_record_id", "phase")


class PainEntryInputSchema(StrictSchema):
    class Meta:
        rules = "phase and session_record_id go together: a before/after rating names both, other entries neither"

    client_entry_id = fields.String(required=True, validate=CLIENT_ID,
                                    metadata={"description": "the app's own id; a repeat returns the original"})
    recorded_at = reported_moment(required=True)
    nrs = score(required=True, metadata={"description": "numeric rating scale 0-10 (LOINC 72514-3)"})
    context = fields.Nested(PainContextSchema, load_default=None, allow_none=True)
    bpi = fields.Nested(BriefPainInventorySchema, load_default=None, allow_none=True)
    session_record_id = fields.String(load_default=None, allow_none=True, validate=SESSION_RECORD_ID)
    phase = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(("before", "after")))

    @validates_schema
    def linked_session(self, data, **kwargs):
        _linked_session(data)


class PainEntryBatchSchema(StrictSchema):
    class Meta:
        rules = ("each entry is checked on its own: one that is not valid is answered `rejected` with its errors "
                 "and the others are stored; a body that is not a list of 1 to 500 entries is refused whole (422)")

    entries = EachOnItsOwn(fields.Nested(PainEntryInputSchema), client_id="client_entry_id", required=True,
                           validate=validate.Length(min=1, max=BATCH_LIMIT))


PainContextEditSchema = edit_form(PainContextSchema, "PainContextEditSchema")
BriefPainInventoryEditSchema = edit_form(
    BriefPainInventorySchema, "BriefPainInventoryEditSchema",
    interference=fields.Nested(edit_form(InterferenceSchema, "InterferenceEditSchema")))


class PainEntryEditSchema(StrictSchema):
    class Meta:
        rules = ("context and bpi change only the items named (an item sent as null is cleared; context or bpi "
                 "sent as null removes it); the pain form's items, merged with the stored ones, must all be "
                 "there and agree (least <= average <= worst, least <= now <= worst)")

    recorded_at = reported_moment()
    nrs = score()
    context = fields.Nested(PainContextEditSchema, allow_none=True)
    bpi = fields.Nested(BriefPainInventoryEditSchema, allow_none=True)
    session_record_id = fields.String(allow_none=True, validate=SESSION_RECORD_ID)
    phase = fields.String(allow_none=True, validate=validate.OneOf(("before", "after")))


class PainRangeArgs(StrictSchema):
    class Meta:
        rules = RANGE_RULE

    start = fields.AwareDateTime(required=True, data_key="from")
    end = fields.AwareDateTime(required=True, data_key="to", metadata={"description": RANGE_RULE})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()

    @validates_schema
    def bounded(self, data, **kwargs):
        check_range(data["start"], data["end"])


class PainContextOutSchema(Schema):
    location = fields.String(allow_none=True)
    activity = fields.String(allow_none=True)
    sleep_quality = fields.Integer(allow_none=True)
    mood = fields.Integer(allow_none=True)
    note = fields.String(allow_none=True)


class BriefPainInventoryOutSchema(Schema):
    worst = fields.Integer()
    least = fields.Integer()
    average = fields.Integer()
    now = fields.Integer()
    interference = fields.Dict(keys=fields.String(), values=fields.Integer(allow_none=True))
    severity = fields.Float()
    interference_score = fields.Float(allow_none=True)


class PainEntrySchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    id = fields.String(attribute="_id")
    client_entry_id = fields.String()
    recorded_at = fields.DateTime()
    nrs = fields.Integer()
    context = fields.Nested(PainContextOutSchema, allow_none=True)
    bpi = fields.Nested(BriefPainInventoryOutSchema, allow_none=True)
    session_record_id = fields.String(allow_none=True)
    phase = fields.String(allow_none=True)
    server_received_at = fields.DateTime()
    updated_at = fields.DateTime()
    deleted = fields.Boolean(metadata={"description": "a tombstone: the entry was deleted (kept for the sync window)"})
    version = version_field()


class PainEntryListSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    items = fields.List(fields.Nested(PainEntrySchema), required=True)
    next = next_field()


class PainBatchItemResultSchema(Schema):
    index = fields.Integer(metadata={"description": "where the item stood in the batch sent (from 0)"})
    client_entry_id = fields.String(allow_none=True, metadata={
        "description": "null only for a rejected item that gave none as text"})
    id = fields.String(metadata={"description": "absent when status is rejected"})
    status = fields.String(metadata={"description": "created | duplicate (sent before with the same content: the "
                                                   "entry as stored now) | conflict (this client_entry_id holds "
                                                   "other content: the stored entry, nothing written) | "
                                                   "deleted (its entry was deleted, here or on another phone: "
                                                   "it stays deleted, nothing written; `entry` is its tombstone "
                                                   "while the sync window keeps it, absent after) | rejected "
                                                   "(not valid: `errors` says why, nothing written; correct it "
                                                   "and send it again, or drop it)",
                                    "enum": ["created", "duplicate", "conflict", "deleted", "rejected"]})
    entry = fields.Nested(PainEntrySchema, metadata={"description": "absent when status is rejected, or deleted "
                                                                    "longer ago than the sync window"})
    errors = fields.Dict(metadata={"description": "rejected only: the item's errors by field, as a 422 gives them"})


class PainBatchResultSchema(Schema):
    items = fields.List(fields.Nested(PainBatchItemResultSchema), required=True)
    created = fields.Integer()
    duplicates = fields.Integer()
    conflicts = fields.Integer()
    deleted = fields.Integer(metadata={"description": "items whose entry was deleted"})
    rejected = fields.Integer(metadata={"description": "items not valid, nothing written for them"})


PainEntryChangesSchema = changes_schema("PainEntryChangesSchema", PainEntrySchema)
