"""The pain diary: NRS and Brief Pain Inventory entries, offline batches stored once, sync by cursor."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from companion.api.diary_schemas import (
    ChangesArgs,
    ChangesSchema,
    PainBatchResultSchema,
    PainEntryBatchSchema,
    PainEntryEditSchema,
    PainEntryInputSchema,
    PainEntryListSchema,
    PainEntrySchema,
    PainRangeArgs,
)
from companion.domain.access import Operation, Role
from companion.http import auditing, services
from companion.http.security import allow, require_patient

blp = Blueprint("diary", __name__, url_prefix="/api/v1", description="Pain diary")
RESOURCE = "pain_entry"


@blp.route("/patients/<patient_id>/pain-entries")
class PainEntriesView(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(PainRangeArgs, location="query")
    @blp.response(200, PainEntryListSchema)
    def get(self, args, patient_id):
        """Entries recorded in a range (at most 366 days), oldest first; deleted entries left out."""
        grant = require_patient(patient_id, Operation.READ)
        items = services().diary.entries_between(grant, args["start"], args["end"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="search",
                      resource_ids=[e["_id"] for e in items])
        return {"items": items}

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PainEntryInputSchema)
    @blp.response(201, PainEntrySchema)
    def post(self, body, patient_id):
        """Record one entry (201); the same client_entry_id again answers 200 with the original."""
        require_patient(patient_id, Operation.WRITE)
        entry, created = services().diary.record_entry(patient_id, body)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="C" if created else "R",
                      resource_ids=[entry["_id"]])
        return entry, (201 if created else 200)


@blp.route("/patients/<patient_id>/pain-entries/batch")
class PainEntryBatch(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PainEntryBatchSchema)
    @blp.response(200, PainBatchResultSchema)
    def post(self, body, patient_id):
        """Upload up to 500 entries recorded offline; each is stored once however often it is sent."""
        require_patient(patient_id, Operation.WRITE)
        results = services().diary.record_batch(patient_id, body["entries"])
        created = [e["_id"] for e, new in results if new]
        repeated = [e["_id"] for e, new in results if not new]
        if created:
            auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="C", resource_ids=created)
        if repeated:
            auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="R", resource_ids=repeated)
        items = [{"client_entry_id": e["client_entry_id"], "id": e["_id"],
                  "status": "created" if new else "duplicate", "entry": e} for e, new in results]
        return {"items": items, "created": len(created), "duplicates": len(repeated)}


@blp.route("/patients/<patient_id>/pain-entries/changes")
class PainEntryChanges(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, ChangesSchema)
    def get(self, args, patient_id):
        """Entries created, edited or deleted since the cursor (none: from the beginning), oldest first."""
        grant = require_patient(patient_id, Operation.READ)
        page = services().diary.changes_since(grant, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="search",
                      resource_ids=[e["_id"] for e in page["items"]])
        return page


@blp.route("/patients/<patient_id>/pain-entries/<entry_id>")
class PainEntryView(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
    @blp.response(200, PainEntrySchema)
    def get(self, patient_id, entry_id):
        """One entry (a deleted one is shown as deleted)."""
        grant = require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="R", resource_ids=[entry_id])
        return services().diary.entry(grant, entry_id)

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.arguments(PainEntryEditSchema)
    @blp.response(200, PainEntrySchema)
    def patch(self, body, patient_id, entry_id):
        """Correct an entry."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="U", resource_ids=[entry_id])
        return services().diary.edit_entry(patient_id, entry_id, body)

    @allow(Role.PATIENT, Role.CAREGIVER)
    @blp.response(204)
    def delete(self, patient_id, entry_id):
        """Delete an entry (kept as a tombstone for sync)."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource=RESOURCE, action="D", resource_ids=[entry_id])
        services().diary.delete_entry(patient_id, entry_id)
