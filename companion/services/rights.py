"""The patient's own rights over their record: to see who accessed it, to download all of it, and to close
the account (companion.services.lifecycle does the closing; this says what it does before and after).

The download is one JSON document: the account, every consent (caregivers, care teams, invitations,
emergency access), devices and gateways (and what they could not deliver), reminders, the clinical record
(therapy plans, TENS sessions, pain diary, practice, adherence, alerts, clinical notes, notifications) and the
access history from the audit trail. The same FHIR R4 and CSV exports a clinician gets are open to the patient too
(``/patients/{id}/exports/fhir`` and ``/exports/csv``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.people import Account
from companion.domain.sessions import ERASED_WEARER
from companion.services.audit_subjects import named_subjects
from companion.services.care import Care
from companion.services.reminders import STORED_AHEAD
from companion.services.review import PatientReview
from companion.settings import Settings
from companion.store.audit import EventPosition
from companion.store.relationships import permissions_doc
from companion.store.stores import Stores

ACCESS_LOG_EXPORTED = 10_000
MAX_EXPORT_DAYS = 3660  # ten years: the record's figures over the whole life of the account
# How long before an instant the app may report something as having happened (companion.api.moments.OLDEST):
# a patient who signs up today may enter last month's pain ratings, so the download reaches that far before
# the account's creation.
BACKDATED_DAYS = 366
DOWNLOAD_ROWS = 100_000  # of each kind of record in the download (ten years at several a day is far fewer)
# What the patient is shown of each audit event: who, what, when, with what outcome (not the staff's addresses).
ACCESS_FIELDS = ("at", "actor_id", "actor_role", "action", "resource_type", "outcome", "route", "method")
# A session record names the patients it concerns: its owner, those whose it may be (a unit that changed hands),
# whose gateway handed it over, and (a copy kept apart) the owner of the copy stored first. In one patient's
# download, anyone else named there is "another patient": their id is not the downloader's to have.
OTHER_PATIENT = "another patient"
NAMING_ONE = ("patient_id", "delivered_for", "first_patient_id")
NAMING_SEVERAL = ("candidate_patient_ids", "also_delivered_for")


def _plain(items):
    """Frozen values (links, teams, grants, units) as plain dicts for the JSON download."""
    out = []
    for item in items:
        if hasattr(item, "__dataclass_fields__"):
            item = {k: getattr(item, k) for k in item.__dataclass_fields__ if k not in ("secret_hash", "password_hash",
                                                                                          "mfa_secret")}
        out.append(item)
    return out


def _naming_only(patient_id: str, records: list[dict]) -> list[dict]:
    """Session records as ``patient_id``'s download shows them: every other patient they name as
    :data:`OTHER_PATIENT` (nobody nameable, ``erased``, and nobody at all stay as they are)."""
    def shown(named):
        return named if named in (None, patient_id, ERASED_WEARER) else OTHER_PATIENT

    out = []
    for record in records:
        record = {**record, **{f: shown(record[f]) for f in NAMING_ONE if f in record}}
        record.update({f: [shown(p) for p in record[f]] for f in NAMING_SEVERAL if record.get(f)})
        if isinstance(record.get("resolution"), dict) and "patient_id" in record["resolution"]:
            record["resolution"] = {**record["resolution"], "patient_id": shown(record["resolution"]["patient_id"])}
        out.append(record)
    return out


class PatientRights:
    def __init__(self, settings: Settings, stores: Stores, care: Care, clock: Clock = now):
        self.settings = settings
        self.stores = stores
        self.care = care
        self.clock = clock

    def access_log(self, patient_id: str, *, limit: int, before: datetime | None = None,
                   after: EventPosition | None = None) -> tuple[list[dict], EventPosition | None]:
        """Who accessed the patient's data, newest first: every audit event about them by anyone but themselves
        (care team, caregivers, emergency access, gateways, admins), denials included. At most ``limit``, those
        before an instant or after a position; with the position of the last one answered while more follow."""
        events = self.stores.audit_events.about_patient(patient_id, before=before, after=after, limit=limit + 1,
                                                        excluding_actor=patient_id)
        events, more = events[:limit], len(events) > limit
        names = self.stores.users.names(e["actor_id"] for e in events if e.get("actor_id"))
        gateways = {g.id: g.name for g in self.stores.gateways.for_patient(patient_id)}
        items = [{**{k: e.get(k) for k in ACCESS_FIELDS},
                  "actor_name": names.get(e.get("actor_id")) or gateways.get(e.get("actor_id")), **subject}
                 for e, subject in zip(events, named_subjects(self.stores, events), strict=True)]
        last = events[-1] if more else None
        return items, (last["at"], last["chain_id"], last["seq"]) if last else None

    def export(self, patient: Account) -> dict:
        """Everything held about the patient, as one JSON document.

        Each kind of record is read up to ``DOWNLOAD_ROWS`` by a read that applies that limit and no smaller cap
        of its own; one that comes back that long may have been cut, and ``records_complete`` is false, naming it
        in ``records_cut_short`` (as is ``period`` when the account is older than the ``MAX_EXPORT_DAYS`` the
        download reaches back). Only the phones (at most ``MAX_PHONES_PER_USER``, kept so at registration) and
        the library favourites (one per item of the shipped library) are bounded where they are written."""
        at = self.clock()
        lived = max(1, (at - (patient.created_at or at)).days + 2)  # the account's days
        days = min(MAX_EXPORT_DAYS, lived + BACKDATED_DAYS)  # and what may have been entered as before them
        review = PatientReview(self.stores, patient, at=at, rows=DOWNLOAD_ROWS)
        pid = patient.id
        stores = self.stores
        cut = [] if lived + BACKDATED_DAYS <= MAX_EXPORT_DAYS else ["period"]

        def whole(kind: str, rows: list, read: list | None = None) -> list:
            """``rows`` as they are, noting ``kind`` as cut short when the read they came from (``read``, before
            any filter; else ``rows``) reached the limit."""
            if len(rows if read is None else read) >= DOWNLOAD_ROWS:
                cut.append(kind)
            return rows

        access, more_access = self.access_log(pid, limit=ACCESS_LOG_EXPORTED)
        # The diary and practice of the period's local days (a day's margin either side covers every zone; kept
        # by local day below), one reported a little ahead included, as the clinician's review reads them.
        since, until = at - timedelta(days=days + 1), at + timedelta(minutes=5)
        entries = stores.pain_entries.recorded_between(pid, since, until, DOWNLOAD_ROWS)
        practice = stores.practice.started_since(pid, since, DOWNLOAD_ROWS, until=until)
        grants = whole("emergency_access", self.care.emergency_grants_for(pid, DOWNLOAD_ROWS))
        names = self.stores.users.names(g.clinician_id for g in grants)
        records = {
            "tens_sessions": _naming_only(pid, whole("tens_sessions",
                                                     stores.session_records.every_one_of(pid, DOWNLOAD_ROWS))),
            "tens_session_copies_kept_apart": _naming_only(pid, whole(
                "tens_session_copies_kept_apart", stores.session_conflicts.delivered_for(pid, DOWNLOAD_ROWS)[0])),
            "pain_diary": whole("pain_diary", [e for e in reversed(entries) if review.in_period(days, e["recorded_at"])],
                                entries),
            "pain_diary_deleted": whole("pain_diary_deleted", stores.pain_entries.deleted_not_purged(pid, DOWNLOAD_ROWS)),
            "practice": whole("practice", [p for p in practice if review.in_period(days, p["started_at"])], practice),
            "alerts": whole("alerts", stores.alerts.every_one_of(pid, DOWNLOAD_ROWS)),
            "clinical_notes": whole("clinical_notes", stores.clinical_notes.for_patient(pid, DOWNLOAD_ROWS)),
            "notifications": whole("notifications", stores.outbox.for_patient(pid, limit=DOWNLOAD_ROWS)),
            "device_events": whole("device_events", stores.device_events.for_patient(pid, at - timedelta(days=days),
                                                                                     DOWNLOAD_ROWS)),
            # What the patient's gateways could not hand over (bytes a unit sent that could not be read, records the
            # server refused, records a buffer could no longer read), reported with their content and kept with
            # the record (and deleted with it).
            "gateway_dead_letters": whole("gateway_dead_letters",
                                          stores.gateway_dead_letters.for_patient(pid, DOWNLOAD_ROWS)),
            # Up to the furthest ahead an occurrence is stored (companion.services.reminders.STORED_AHEAD).
            "reminder_occurrences": whole("reminder_occurrences", stores.occurrences.newest_between(
                pid, at - timedelta(days=days), at + STORED_AHEAD + timedelta(days=1), DOWNLOAD_ROWS)),
        }
        return {
            "generated_at": at,
            "account": {"id": pid, "email": patient.email, "display_name": patient.display_name,
                        "time_zone": patient.time_zone, "status": patient.status, "created_at": patient.created_at,
                        "time_zone_history": _plain(patient.time_zone_history),
                        "quiet_hours": {"start": patient.quiet_hours.start.strftime("%H:%M"),
                                        "end": patient.quiet_hours.end.strftime("%H:%M")}
                        if patient.quiet_hours else None,
                        "caregiver_alert_delay_min": patient.caregiver_alert_delay_min,
                        "mfa_enabled": patient.mfa_enabled},
            "consents": {
                "caregivers": [{**view, "permissions": permissions_doc(view["permissions"])}
                               for view in whole("caregivers", self.care.caregivers_of(
                                   pid, by_the_patient=True, limit=DOWNLOAD_ROWS))],
                # What the links above no longer show: each earlier period of a caregiver's access and each
                # earlier set of permissions, who ended it (the patient, the caregiver, or a closure) and when.
                "caregivers_before": whole("caregivers_before", self._caregivers_before(pid)),
                "care_teams": whole("care_teams", self.care.teams_of_patient(pid, DOWNLOAD_ROWS)),
                "care_teams_before": [{k: e.get(k) for k in ("team_id", "enrolled_at", "consent", "ended_at",
                                                             "ended_by")}
                                      for e in whole("care_teams_before",
                                                     stores.care_teams.enrolments_ended(pid, DOWNLOAD_ROWS))],
                "invitations_waiting": whole("invitations_waiting", self.care.invitations_for(patient, DOWNLOAD_ROWS)),
                "invitations_accepted": [{k: i.get(k) for k in ("_id", "team_id", "reason", "created_at",
                                                                "answered_at")}
                                         for i in whole("invitations_accepted",
                                                        stores.care_invitations.accepted_by(pid, DOWNLOAD_ROWS))],
                "emergency_access": [{"clinician_name": names.get(g.clinician_id), "reason": g.reason,
                                      "granted_at": g.granted_at, "expires_at": g.expires_at} for g in grants],
            },
            "devices": _plain(whole("devices", stores.devices.for_patient(pid, DOWNLOAD_ROWS))),
            "devices_worn_before": whole("devices_worn_before", stores.devices.released_by(pid, DOWNLOAD_ROWS)),
            "library_favourites": stores.favourites.slugs(pid),
            "gateways": _plain(whole("gateways", stores.gateways.for_patient(pid, DOWNLOAD_ROWS))),
            "phones": [{k: p.get(k) for k in ("install_id", "platform", "updated_at")}
                       for p in stores.push_tokens.for_users([pid]).get(pid, [])],
            "reminders": whole("reminders", stores.reminders.every_one_of(pid, DOWNLOAD_ROWS)),
            "therapy_plans": whole("therapy_plans", review.plans(DOWNLOAD_ROWS)),
            **records,
            "adherence": review.adherence(days)["calendar"],  # the whole life of the account, as the records
            # Whether every kind of record above came whole, and which did not (see above).
            "records_complete": not cut,
            "records_cut_short": cut,
            "access_log": access,
            "access_log_complete": more_access is None,
            "also_available": {"fhir": f"/api/v1/patients/{pid}/exports/fhir?days=366",
                               "csv": f"/api/v1/patients/{pid}/exports/csv?days=366"},
        }

    def _caregivers_before(self, patient_id: str) -> list[dict]:
        history = self.stores.care_links.history_of(patient_id, DOWNLOAD_ROWS)
        names = self.stores.users.names(h["caregiver_id"] for h in history)
        return [{"caregiver_id": h["caregiver_id"], "caregiver_name": names.get(h["caregiver_id"]),
                 **{k: h.get(k) for k in ("offer_id", "permissions", "granted_at", "ended_at", "ended_by", "status")}}
                for h in history]
