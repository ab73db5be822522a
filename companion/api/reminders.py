"""Reminders (the patient's own, in wall-clock terms in their zone) and their occurrences; change feeds of
both; changes and stops that name the version they change (ETag / If-Match)."""

from __future__ import annotations

from datetime import datetime

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from companion.api import examples
from companion.api.reminder_schemas import (
    OccurrenceChangesSchema,
    OccurrenceListSchema,
    OccurrenceOutcomeSchema,
    OccurrenceRangeArgs,
    OccurrenceSchema,
    ReminderChangesSchema,
    ReminderEditSchema,
    ReminderInputSchema,
    ReminderListArgs,
    ReminderListSchema,
    ReminderSchema,
    SnoozeSchema,
)
from companion.api.schemas import ChangesArgs
from companion.domain.access import Operation, Role
from companion.http import auditing, conditional, paging, services
from companion.http.conditional import (
    ETAG_HEADERS,
    IF_MATCH_DOC,
    IF_NONE_MATCH_DOC,
    NOT_MODIFIED_DOC,
    PRECONDITION_FAILED_DOC,
)
from companion.http.idempotency import idempotent, request_key
from companion.http.problems import conflict_doc
from companion.http.security import allow, current_actor, patient_may, require_patient

blp = Blueprint("reminders", __name__, url_prefix="/api/v1", description="Reminders and their occurrences")
READERS = (Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN)
WRITERS = (Role.PATIENT, Role.CAREGIVER)


@blp.route("/patients/<patient_id>/reminders")
class ReminderList(MethodView):
    @allow(*READERS)
    @blp.arguments(ReminderListArgs, location="query")
    @blp.response(200, ReminderListSchema, headers=paging.LINK_HEADER)
    @blp.doc(operationId="list_reminders")
    def get(self, args, patient_id):
        """The patient's reminders: first every active one (a patient has at most 50), oldest first, then the
        stopped ones, the most recently stopped first. Stopping keeps a reminder with its history, so stopped
        ones accumulate without limit: follow `next` for the older ones. The first page at the default `limit`
        holds every active reminder. Each page continues after the last reminder of the one before, in its part
        of the list (active or stopped): a reminder stopped between two pages loses none still to come (it moves
        to the head of the stopped ones, so it may be listed again there), and a reminder created, started again
        or changed while stopped between two pages is in a page after the ones already read only if its new
        place is. (The app keeps its copy with the change feed, `reminders/changes`, which misses no change.)"""
        require_patient(patient_id, Operation.READ)
        after = _list_place(args["cursor"]) if args["cursor"] else None
        items, last = services().reminders.list(patient_id, args["limit"], after)
        following = None if last is None else paging.next_link(cursor=paging.keyset_cursor(last[1], last[2],
                                                                                         part=last[0]))
        auditing.note(patient_ids=[patient_id], resource="reminder", action="search",
                      resource_ids=[r["_id"] for r in items])
        return {"items": items, "next": following}

    @allow(*WRITERS)
    @idempotent(access=patient_may(Operation.WRITE),
                conflict="this Idempotency-Key named another reminder, made before this version of the server (send "
                         "the request with a new key)")
    @blp.arguments(ReminderInputSchema, example=examples.REMINDER_INPUT)
    @blp.response(201, ReminderSchema, headers=ETAG_HEADERS)
    @blp.doc(operationId="create_reminder")
    def post(self, body, patient_id):
        """Create a reminder; its occurrences for the next two days are materialized at once. Send an
        Idempotency-Key to make a retry safe."""
        reminder = services().reminders.create(patient_id, body, request_key=request_key())
        auditing.note(patient_ids=[patient_id], resource="reminder", action="C", resource_ids=[reminder["_id"]])
        return conditional.tagged(reminder, reminder.get("seq"), 201, location=f"{request.path}/{reminder['_id']}")


def _list_place(cursor: str) -> tuple[str, datetime, str]:
    """The (part, sort key, id) a reminders list's cursor names; one this API did not make is a 422."""
    at, reminder_id, value = paging.keyset_place(cursor)
    if value.get("part") not in ("active", "stopped"):
        raise paging.not_ours()
    return value["part"], at, reminder_id


@blp.route("/patients/<patient_id>/reminders/changes")
class ReminderChanges(MethodView):
    @allow(*READERS)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, ReminderChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor")
    @blp.doc(operationId="list_reminder_changes")
    def get(self, args, patient_id):
        """Reminders created, changed or stopped after the cursor (none: from the start), oldest change first.
        See the README's "Sync" section."""
        grant = require_patient(patient_id, Operation.READ)
        page = services().reminders.changes_since(grant, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="reminder", action="search",
                      resource_ids=[r["_id"] for r in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/reminders/<reminder_id>")
class ReminderView(MethodView):
    @allow(*READERS)
    @blp.doc(parameters=[IF_NONE_MATCH_DOC])
    @blp.response(200, ReminderSchema, headers=ETAG_HEADERS)
    @blp.alt_response(304, **NOT_MODIFIED_DOC)
    @blp.doc(operationId="get_reminder")
    def get(self, patient_id, reminder_id):
        """One reminder."""
        require_patient(patient_id, Operation.READ)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="R", resource_ids=[reminder_id])
        reminder = services().reminders.get(patient_id, reminder_id)
        return conditional.not_modified(reminder.get("seq")) or conditional.tagged(reminder, reminder.get("seq"))

    @allow(*WRITERS)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.arguments(ReminderEditSchema)
    @blp.response(200, ReminderSchema, headers=ETAG_HEADERS)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(ReminderSchema)
    @blp.doc(operationId="update_reminder")
    def patch(self, body, patient_id, reminder_id):
        """Change a reminder: the fields sent replace the stored ones (a schedule without start_date keeps
        the current one). With If-Match, only if it is still at that version (else 412 with the current
        reminder); without it, on the current version. Pending future occurrences follow; recorded ones are
        kept. A PATCH that changes nothing is answered 200, so a retried PATCH succeeds."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="U", resource_ids=[reminder_id])
        reminder = services().reminders.update(patient_id, reminder_id, body,
                                               if_versions=conditional.if_match())
        return conditional.tagged(reminder, reminder.get("seq"))

    @allow(*WRITERS)
    @blp.doc(parameters=[IF_MATCH_DOC])
    @blp.response(204)
    @blp.alt_response(412, **PRECONDITION_FAILED_DOC)
    @blp.alt_response(409, **conflict_doc(contended=True))
    @conditional.shows_current(ReminderSchema)
    @blp.doc(operationId="stop_reminder")
    def delete(self, patient_id, reminder_id):
        """Stop a reminder (its history stays; its pending future occurrences are cancelled). Stopping a
        stopped reminder answers 204 again: a retried DELETE succeeds as the first did."""
        require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder", action="D", resource_ids=[reminder_id])
        services().reminders.stop(patient_id, reminder_id, if_versions=conditional.if_match())


@blp.route("/patients/<patient_id>/occurrences")
class OccurrenceList(MethodView):
    @allow(*READERS)
    @blp.arguments(OccurrenceRangeArgs, location="query")
    @blp.response(200, OccurrenceListSchema)
    @blp.doc(operationId="list_occurrences")
    def get(self, args, patient_id):
        """Reminder occurrences due in a range of at most 31 days, in time order. Those due more than 31 days
        ahead are the slots planned there, not yet made (version 0; made under the same id once in reach)."""
        grant = require_patient(patient_id, Operation.READ)
        items = services().reminders.occurrences_between(grant, args["start"], args["end"])
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="search",
                      resource_ids=[o["_id"] for o in items])
        return {"items": items}


@blp.route("/patients/<patient_id>/occurrences/changes")
class OccurrenceChanges(MethodView):
    @allow(*READERS)
    @blp.arguments(ChangesArgs, location="query")
    @blp.response(200, OccurrenceChangesSchema, headers=paging.LINK_HEADER)
    @blp.alt_response(410, response="GONE", description="read again from the start, without a cursor (for a "
                                                       "caregiver, also a cursor issued before the patient allowed "
                                                       "or withdrew their own words, the reasons for skipping)")
    @blp.doc(operationId="list_occurrence_changes")
    def get(self, args, patient_id):
        """Occurrences created, moved, recorded, missed or cancelled (tombstones) after the cursor, oldest
        change first. Only occurrences the server has materialized appear: it keeps two days ahead; read a
        range (GET occurrences) to have further ones made, up to 31 days ahead. See the README's "Sync" section."""
        grant = require_patient(patient_id, Operation.READ)
        page = services().reminders.occurrence_changes_since(grant, args["cursor"], args["limit"])
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="search",
                      resource_ids=[o["_id"] for o in page["items"]])
        return paging.feed_page(page)


@blp.route("/patients/<patient_id>/occurrences/<occurrence_id>")
class OccurrenceView(MethodView):
    @allow(*WRITERS)
    @blp.arguments(OccurrenceOutcomeSchema)
    @blp.response(200, OccurrenceSchema, headers=ETAG_HEADERS)
    @blp.alt_response(409, **conflict_doc(
        "another outcome is recorded already, or a skip with another reason (the same one again is a 200); "
        "`current` holds the occurrence as stored, as you may see it"))
    @conditional.shows_current(OccurrenceSchema)
    @blp.doc(operationId="record_occurrence_outcome")
    def patch(self, body, patient_id, occurrence_id):
        """Record an occurrence as done, or skipped with a reason, saying when (`at`, default now). An
        outcome is a state change, not an edit, so it takes no If-Match: the patient's outcome replaces
        `missed` whenever it arrives (on_time when `at` was inside the window); the same outcome again is
        answered 200 (a skip: with the same reason, spacing and case aside); a different recorded outcome, or
        a skip with another reason, is 409 with the stored occurrence in `current`, nothing written. A caregiver
        not allowed the patient's own words is not shown the recorded reason, nor compared with one someone else
        gave: their skip of a skipped occurrence is 409 unless they recorded it themselves. An answer is judged
        against every time the occurrence was shown due (a phone that has not synced a move or a change sends
        it for the time it knows; README, "Reminders at the edges"): one on an occurrence called off when its
        reminder was re-timed settles the day's new slot (`settled_by`), and that slot answered with the same
        outcome is 200 as it stands, another 409."""
        grant = require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="U",
                      resource_ids=[occurrence_id])
        occurrence = services().reminders.record_outcome(grant, occurrence_id, body["status"],
                                                         body["skip_reason"], at=body["at"],
                                                         by=current_actor().id)
        return conditional.tagged(occurrence, occurrence.get("seq"), view=conditional.view_of(grant))


@blp.route("/patients/<patient_id>/occurrences/<occurrence_id>/snooze")
class OccurrenceSnooze(MethodView):
    @allow(*WRITERS)
    @blp.arguments(SnoozeSchema)
    @blp.response(200, OccurrenceSchema, headers=ETAG_HEADERS)
    @blp.alt_response(409, **conflict_doc(
        "the occurrence has an outcome already (`current` holds it as stored, as you may see it), or its time has "
        "passed", contended=True))
    @conditional.shows_current(OccurrenceSchema)
    @blp.doc(operationId="snooze_occurrence")
    def post(self, body, patient_id, occurrence_id):
        """Remind again in a few minutes, counted from the due time when it has not come yet (a snooze never
        brings a reminder forward); pushes planned before the snooze time are held back. Never past the end
        of the completion window."""
        grant = require_patient(patient_id, Operation.WRITE)
        auditing.note(patient_ids=[patient_id], resource="reminder_occurrence", action="U",
                      resource_ids=[occurrence_id])
        occurrence = services().reminders.snooze(grant, occurrence_id, body["minutes"])
        return conditional.tagged(occurrence, occurrence.get("seq"), view=conditional.view_of(grant))
