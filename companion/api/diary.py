"""The pain diary: NRS and Brief Pain Inventory entries, offline batches stored once, sync by cursor,
edits and deletions that name the version they change (ETag / If-Match)."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from companion.api import examples
from companion.api.diary_schemas import (
    PainBatchResultSchema,
    PainEntryBatchSchema,
    PainEntryChangesSchema,
    PainEntryEditSchema,
    PainEntryInputSchema,
    PainEntryListSchema,
    PainEntrySchema,
    PainRangeArgs,
)
from companion.api.schemas import ChangesArgs
from companion.domain.access import Operation, Role
from companion.domain.errors import Conflict
from companion.http import auditing, conditional, paging, services
from companion.http.conditional import (
    ETAG_HEADERS,
    IF_MATCH_DOC,
    IF_NONE_MATCH_DOC,
    NOT_MODIFIED_DOC,
    PRECONDITION_FAILED_DOC,
)
from companion.http.paging import LINK_HEADER, offset_page
from companion.http.problems import PROBLEM_JSON, conflict_doc
from companion.http.schemas import ProblemSchema, SetAside
from companion.http.security import allow, require_patient

blp = Blueprint("diary", __name__, url_prefix="/api/v1", description="Pain diary")
RESOURCE = "pain_entry"
REUSED_ID_DOC = {"description": "this client_entry_id already holds an entry with other content (`current` is the "
                                "stored entry), or held one deleted longer ago than the sync window (no "
                                "`current`; the entry stays deleted): nothing was written", "schema": ProblemSchema,
                 "content_type": PROBLEM_JSON}


@blp.route("/patients/<patient_id>/pain-entries")
class PainEntriesView(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(PainRangeArgs, location="query")
    @blp.response(200, PainEntryListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_pain_entries")
    def get(self, args, patient_id):
        """Entries recorded in a range (at most 366 days; `to` may equal `from`), oldest first; deleted
        entries left out. At most `limit` per page: follow `next` for more."""
        grant = require_patient(patient_id, Operation.READ)
        items, following = offset_page(
            lambda count: services().diary.entries_between(grant, args["start"], args["end"], count),
            args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="search",
                      resource_ids=[e["_id"] for e in items])
        return {"items": items, "next": following}

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PainEntryInputSchema, example=examples.PAIN_ENTRY_INPUT)
    @blp.response(201, PainEntrySchema, headers=ETAG_HEADERS, example=examples.PAIN_ENTRY)
    @blp.alt_response(200, schema=PainEntrySchema, headers=ETAG_HEADERS, success=True,
                      description="sent before with the same content: the entry as stored now (a safe retry)")
    @blp.alt_response(409, **REUSED_ID_DOC)
    @conditional.shows_current(PainEntrySchema)
    @blp.doc(operationId="create_pain_entry")
    def post(self, body, patient_id):
        """Record one entry (201). The same client_entry_id again: 200 with the stored entry if it was created
        with the same content, 409 with the stored entry if not."""
        grant = require_patient(patient_id, Operation.WRITE)
        try:
            entry, created = services().diary.record_entry(grant, body)
        except Conflict as refused:
            if refused.current is not None:  # the answer shows the stored entry: a read
                auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="R",
                              resource_ids=[refused.current["_id"]])
            raise
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="C" if created else "R",
                      resource_ids=[entry["_id"]])
        return conditional.tagged(entry, entry.get("seq"), 201 if created else 200,
                                  location=f"{request.path}/{entry['_id']}", view=conditional.view_of(grant))


@blp.route("/patients/<patient_id>/pain-entries/batch")
class PainEntryBatch(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PainEntryBatchSchema)
    @blp.response(200, PainBatchResultSchema)
    @blp.doc(operationId="create_pain_entries_batch")
    def post(self, body, patient_id):
        """Upload up to 500 entries recorded offline; each is stored once however often it is sent. Each item
        answers created, duplicate (sent before with the same content), conflict (its client_entry_id holds
        other content; nothing written), deleted (its entry was deleted; it stays deleted, nothing written) or
        rejected (not valid: its `errors`, nothing written); one item rejected never keeps the others out."""
        grant = require_patient(patient_id, Operation.WRITE)
        sent = body["entries"]
        valid = [entry for entry in sent if not isinstance(entry, SetAside)]
        results = iter(services().diary.record_batch(grant, valid) if valid else [])
        items, counts = [], dict.fromkeys(("created", "duplicate", "conflict", "deleted", "rejected"), 0)
        for index, entry in enumerate(sent):
            if isinstance(entry, SetAside):
                items.append({"index": index, "client_entry_id": entry.client_id, "status": "rejected",
                              "errors": entry.errors})
                counts["rejected"] += 1
                continue
            stored, status = next(results)
            items.append({"index": index, "client_entry_id": stored["client_entry_id"], "id": stored["_id"],
                          "status": status, **({} if stored.get("purged") else {"entry": stored})})
            counts[status] += 1
        created = [item["id"] for item in items if item["status"] == "created"]
        repeated = [item["id"] for item in items if item["status"] not in ("created", "rejected")]
        if created:
            auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="C", resource_ids=created)
        if repeated:
            auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="R", resource_ids=repeated)
        return {"items": items, "created": counts["created"], "duplicates": counts["duplicate"],
                "conflicts": counts["conflict"], "deleted": counts["deleted"], "rejected": counts["rejected"]}


@blp.route("/patients/<patient_id>/pain-entries/changes")
class PainEntryChanges(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, PainEntryChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="the cursor can no longer be continued from (for a "
                                                       "caregiver, also one issued before the patient allowed or "
                                                       "withdrew their notes): read again from the start, without "
                                                       "a cursor")
    @blp.doc(operationId="list_pain_entry_changes")
    def get(self, args, patient_id):
        """Entries created, edited or deleted after the cursor (none: from the start), oldest change first;
        deleted entries come as tombstones (`deleted: true`). See the README's "Sync" section."""
        grant = require_patient(patient_id, Operation.READ)
        page = services().diary.changes_since(grant, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="search",
                      resource_ids=[e["_id"] for e in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/pain-entries/<entry_id>")
class PainEntryView(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.doc(parameters=[IF_NONE_MATCH_DOC])
    @blp.response(200, PainEntrySchema, headers=ETAG_HEADERS)
    @blp.alt_response(304, **NOT_MODIFIED_DOC)
    @blp.doc(operationId="get_pain_entry")
    def get(self, patient_id, entry_id):
        """One entry (a deleted one is shown as deleted)."""
        grant = require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="R", resource_ids=[entry_id])
        entry = services().diary.entry(grant, entry_id)
        view = conditional.view_of(grant)
        return conditional.not_modified(entry.get("seq"), view) or conditional.tagged(entry, entry.get("seq"),
                                                                                     view=view)

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.arguments(PainEntryEditSchema)
    @blp.response(200, PainEntrySchema, headers=ETAG_HEADERS)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(PainEntrySchema)
    @blp.doc(operationId="update_pain_entry")
    def patch(self, body, patient_id, entry_id):
        """Correct an entry: the fields sent replace the stored ones; of the context and the pain form, the items
        sent (the others stay; null clears one, and the context or form sent as null is removed). With If-Match,
        only if the entry is still at that version (else 412 with the current entry: its tombstone if it was
        deleted meanwhile); without it, on the current version (404 for a deleted entry). A PATCH that changes
        nothing is answered 200 with the entry, so a retried PATCH succeeds."""
        grant = require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="U", resource_ids=[entry_id])
        entry = services().diary.edit_entry(grant, entry_id, body, if_versions=conditional.if_match())
        return conditional.tagged(entry, entry.get("seq"), view=conditional.view_of(grant))

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.response(204)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(PainEntrySchema)
    @blp.doc(operationId="delete_pain_entry")
    def delete(self, patient_id, entry_id):
        """Delete an entry (kept as a tombstone for the sync window). Deleting a deleted entry answers 204
        again, whatever If-Match says: a retried DELETE succeeds as the first did."""
        grant = require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="D", resource_ids=[entry_id])
        services().diary.delete_entry(grant, entry_id, if_versions=conditional.if_match())
