"""The mindfulness library: browse, filter, search; a patient's favourites and practice."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate, validates_schema

from companion.api import examples
from companion.api.moments import RANGE_RULE, check_range, reported_moment
from companion.api.schemas import ChangesArgs, changes_schema, version_field
from companion.domain.access import Operation, Role
from companion.domain.content_library import CATEGORIES, LEVELS
from companion.http import auditing, conditional, paging, services
from companion.http.conditional import ETAG_HEADERS
from companion.http.idempotency import idempotent, request_key
from companion.http.paging import (
    LINK_HEADER,
    cursor_field,
    keyset_cursor,
    keyset_place,
    next_field,
    next_link,
    offset_page,
)
from companion.http.schemas import Pattern, StrictSchema, text
from companion.http.security import allow, patient_may, require_patient

blp = Blueprint("library", __name__, url_prefix="/api/v1", description="Mindfulness library and practice")
SLUG = Pattern(r"^[a-z0-9][a-z0-9-]{0,79}$", error="a library item slug")
READERS = (Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)


class LibraryArgs(StrictSchema):
    category = fields.String(load_default=None, validate=validate.OneOf(CATEGORIES))
    level = fields.String(load_default=None, validate=validate.OneOf(LEVELS))
    tag = text(40, load_default=None)
    max_minutes = fields.Float(load_default=None, validate=validate.Range(min=0, max=600))
    q = text(100, load_default=None, metadata={"description": "words to find in title, summary or tags"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    cursor = cursor_field()


class LibraryItemSummarySchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    slug = fields.String()
    title = fields.String()
    category = fields.String()
    duration_min = fields.Float()
    level = fields.String()
    summary = fields.String()
    tags = fields.List(fields.String())
    language = fields.String()
    audio_url = fields.String(allow_none=True)
    suitable_during_tens = fields.Boolean()


class LibraryItemSchema(LibraryItemSummarySchema):
    steps = fields.List(fields.String())
    contraindications = fields.List(fields.String())


class LibraryListSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    items = fields.List(fields.Nested(LibraryItemSummarySchema), required=True)
    next = next_field()


class PracticeStartSchema(StrictSchema):
    item_slug = fields.String(required=True, validate=SLUG)
    started_at = reported_moment(load_default=None)


class PracticeCompleteSchema(StrictSchema):
    completed_at = reported_moment(load_default=None)
    minutes = fields.Float(load_default=None, validate=validate.Range(min=0, max=600),
                           metadata={"description": "minutes actually practised, if the app knows"})


class PracticeArgs(StrictSchema):
    class Meta:
        rules = RANGE_RULE

    start = fields.AwareDateTime(required=True, data_key="from")
    end = fields.AwareDateTime(required=True, data_key="to", metadata={"description": RANGE_RULE})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = cursor_field()

    @validates_schema
    def bounded(self, data, **kwargs):
        check_range(data["start"], data["end"])


class PracticeSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    id = fields.String(attribute="_id")
    item_slug = fields.String()
    started_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)
    minutes = fields.Float()
    version = version_field()


class PracticeListSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    items = fields.List(fields.Nested(PracticeSchema), required=True)
    next = next_field()


class FavouriteSchema(Schema):
    item_slug = fields.String()
    created_at = fields.DateTime(metadata={"description": "when it was chosen (the list's order)"})
    deleted = fields.Boolean(dump_default=False, metadata={"description": "a tombstone: no longer a favourite"})
    version = version_field()


PracticeChangesSchema = changes_schema("PracticeChangesSchema", PracticeSchema)
FavouriteChangesSchema = changes_schema("FavouriteChangesSchema", FavouriteSchema)


@blp.route("/library")
class Library(MethodView):
    @allow(*READERS)
    @blp.arguments(LibraryArgs, location="query")
    @blp.response(200, LibraryListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_library_items")
    def get(self, args):
        """Browse the library: filter by category, level, tag and maximum duration; search by text."""
        items, following = offset_page(lambda count: services().library.browse(
            category=args["category"], level=args["level"], tag=args["tag"], max_minutes=args["max_minutes"],
            text=args["q"], limit=count), args["cursor"], args["limit"])
        return {"items": items, "next": following}


@blp.route("/library/<slug>")
class LibraryItem(MethodView):
    @allow(*READERS)
    @blp.response(200, LibraryItemSchema)
    @blp.doc(operationId="get_library_item")
    def get(self, slug):
        """One item with its step-by-step script."""
        return services().library.item(slug)


@blp.route("/patients/<patient_id>/favourites")
class FavouriteList(MethodView):
    @allow(*READERS)
    @blp.response(200, LibraryListSchema)
    @blp.doc(operationId="list_favourites")
    def get(self, patient_id):
        """The patient's favourite items, in the order they were chosen."""
        require_patient(patient_id, Operation.READ)
        items = services().library.favourite_items(patient_id)
        auditing.note(patient_ids=[patient_id], resource="favourite", action="R", resource_ids=[i["_id"] for i in items])
        return {"items": items, "next": None}  # all of them: the list is never cut


@blp.route("/patients/<patient_id>/favourites/changes")
class FavouriteChanges(MethodView):
    @allow(*READERS)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, FavouriteChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor")
    @blp.doc(operationId="list_favourite_changes")
    def get(self, args, patient_id):
        """Favourites chosen or removed (tombstones) after the cursor, oldest change first. See the README's
        "Sync" section."""
        require_patient(patient_id, Operation.READ)
        page = services().library.favourite_changes_since(patient_id, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="favourite", action="search",
                      resource_ids=[f["item_slug"] for f in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/favourites/<slug>")
class Favourite(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.response(200, LibraryItemSummarySchema)
    @blp.doc(operationId="add_favourite")
    def put(self, patient_id, slug):
        """Mark an item as a favourite (doing it twice is harmless)."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="favourite", action="C", resource_ids=[slug])
        return services().library.add_favourite(patient_id, slug)

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.response(204)
    @blp.doc(operationId="remove_favourite")
    def delete(self, patient_id, slug):
        """Remove an item from the favourites. Removing it again answers 204 as the first removal did (404 only
        for an item that was never a favourite)."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="favourite", action="D", resource_ids=[slug])
        services().library.remove_favourite(patient_id, slug)


@blp.route("/patients/<patient_id>/practice")
class PracticeList(MethodView):
    @allow(*READERS)
    @blp.arguments(PracticeArgs, location="query")
    @blp.response(200, PracticeListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_practice")
    def get(self, args, patient_id):
        """Practice started in a range (at most 366 days; `to` may equal `from`), oldest first. At most `limit`
        per page: follow `next` for more. Each page continues after the last practice of the one before, so a
        practice recorded between two pages shifts nothing."""
        require_patient(patient_id, Operation.READ)
        after = keyset_place(args["cursor"])[:2] if args["cursor"] else None
        items, last = services().library.practice_between(patient_id, args["start"], args["end"], args["limit"],
                                                          after)
        auditing.note(patient_ids=[patient_id], resource="practice", action="search",
                      resource_ids=[p["_id"] for p in items])
        following = None if last is None else next_link(cursor=keyset_cursor(*last))
        return {"items": items, "next": following}

    @allow(Role.PATIENT, Role.CAREGIVER)
    @idempotent(access=patient_may(Operation.WRITE),
                conflict="this Idempotency-Key named another practice, made before this version of the server (send "
                         "the request with a new key)")
    @blp.arguments(PracticeStartSchema, example=examples.PRACTICE_START)
    @blp.response(201, PracticeSchema, headers=ETAG_HEADERS)
    @blp.doc(operationId="start_practice")
    def post(self, body, patient_id):
        """Start practising an item."""
        practice = services().library.start_practice(patient_id, body["item_slug"], body["started_at"],
                                                     request_key=request_key())
        auditing.note(patient_ids=[patient_id], resource="practice", action="C", resource_ids=[practice["_id"]])
        return conditional.tagged(practice, practice.get("seq"), 201)


@blp.route("/patients/<patient_id>/practice/changes")
class PracticeChanges(MethodView):
    @allow(*READERS)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, PracticeChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor")
    @blp.doc(operationId="list_practice_changes")
    def get(self, args, patient_id):
        """Practice started or completed after the cursor, oldest change first. See the README's "Sync"
        section."""
        require_patient(patient_id, Operation.READ)
        page = services().library.practice_changes_since(patient_id, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="practice", action="search",
                      resource_ids=[p["_id"] for p in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/practice/<practice_id>/complete")
class PracticeComplete(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @idempotent(access=patient_may(Operation.WRITE),
                conflict="the practice was completed already with another time or other minutes (read it again)")
    @blp.arguments(PracticeCompleteSchema)
    @blp.response(200, PracticeSchema, headers=ETAG_HEADERS)
    @conditional.shows_current(PracticeSchema)
    @blp.doc(operationId="complete_practice")
    def post(self, body, patient_id, practice_id):
        """Finish a practice; the server records the minutes practised. The same completion again (a retry:
        no `completed_at` or the same one, and the same minutes) is answered 200 with the stored one; another
        completion of a completed practice is 409, with the practice as stored in `current`."""
        auditing.note(patient_ids=[patient_id], resource="practice", action="U", resource_ids=[practice_id])
        done = services().library.complete_practice(patient_id, practice_id, body["completed_at"], body["minutes"])
        return conditional.tagged(done, done.get("seq"))
