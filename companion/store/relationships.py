"""Who is related to which patient: caregiver consent, care teams, break-glass grants, gateways."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now, to_millis
from companion.domain.access import CaregiverPermissions
from companion.domain.errors import Contended
from companion.domain.people import (
    NEVER_CONNECTED,
    PATIENT_CLOSED,
    REVOKED_ON_REQUEST,
    CareLink,
    CareTeam,
    EmergencyAccess,
    Gateway,
)
from companion.store.batches import already_stored, insert_new
from companion.store.db import count_by_id
from companion.store.read_models import PanelEntries, PanelRowMarks

CHANGE_ATTEMPTS = 20  # a change of permissions that loses this many races in a row is told to try again

INDEXES = {
    "care_links": [
        IndexModel([("patient_id", ASCENDING), ("caregiver_id", ASCENDING)], unique=True, name="pair_unique"),
        IndexModel([("caregiver_id", ASCENDING), ("status", ASCENDING)], name="caregiver_status"),
    ],
    "care_link_history": [IndexModel([("patient_id", ASCENDING), ("ended_at", ASCENDING)], name="patient_ended")],
    "care_teams": [IndexModel([("clinician_ids", ASCENDING)], name="clinicians")],
    "team_enrolments": [
        IndexModel([("patient_id", ASCENDING), ("team_id", ASCENDING)], unique=True, name="enrolment_unique"),
        IndexModel([("team_id", ASCENDING)], name="team"),
    ],
    "team_enrolments_ended": [IndexModel([("patient_id", ASCENDING), ("ended_at", ASCENDING)], name="patient_ended")],
    "emergency_grants": [IndexModel([("clinician_id", ASCENDING), ("patient_id", ASCENDING)], name="pair")],
    "care_invitations": [
        IndexModel([("email_digest", ASCENDING), ("status", ASCENDING)], name="invitee_status"),
        IndexModel([("team_id", ASCENDING), ("created_at", ASCENDING)], name="team_time"),
    ],
    "caregiver_invitations": [
        IndexModel([("email_digest", ASCENDING), ("status", ASCENDING)], name="invitee_status"),
        IndexModel([("patient_id", ASCENDING), ("created_at", ASCENDING)], name="patient_time"),
    ],
    "gateways": [IndexModel([("patient_id", ASCENDING)], name="patient"),
                 IndexModel([("token_fetched", ASCENDING), ("created_at", ASCENDING)], name="unconnected")],
}


def new_id() -> str:
    return str(ObjectId())


def insert_once(col: Collection, doc: dict, given_id: str | None) -> dict:
    """Insert ``doc`` under ``given_id`` (an id derived from a request's Idempotency-Key) or a new id; a repeat
    of that request gets back what the first attempt stored instead of storing it twice."""
    doc = {**doc, "_id": given_id or new_id()}
    try:
        col.insert_one(doc)
    except DuplicateKeyError:
        if given_id is None:
            raise
        return already_stored(col, {"_id": given_id})
    return doc


def permissions_of(doc: dict | None) -> CaregiverPermissions:
    doc = doc or {}
    return CaregiverPermissions(write=bool(doc.get("write")), alerts=frozenset(doc.get("alerts") or ()),
                                diary_notes=bool(doc.get("diary_notes")))


def permissions_doc(permissions: CaregiverPermissions) -> dict:
    return {"write": permissions.write, "alerts": sorted(permissions.alerts), "diary_notes": permissions.diary_notes}


def _link(doc: dict | None) -> CareLink | None:
    if doc is None:
        return None
    return CareLink(id=doc["_id"], patient_id=doc["patient_id"], caregiver_id=doc["caregiver_id"],
                    status=doc["status"], permissions=permissions_of(doc.get("permissions")),
                    granted_at=doc["granted_at"], revoked_at=doc.get("revoked_at"), offer_id=doc.get("offer_id"))


def _team(doc: dict | None) -> CareTeam | None:
    if doc is None:
        return None
    return CareTeam(id=doc["_id"], name=doc["name"], clinician_ids=tuple(doc.get("clinician_ids") or ()),
                    created_at=doc.get("created_at"))


def _gateway(doc: dict | None) -> Gateway | None:
    if doc is None:
        return None
    return Gateway(id=doc["_id"], patient_id=doc["patient_id"], name=doc.get("name", ""),
                   secret_hash=doc["secret_hash"], revoked=bool(doc.get("revoked")), created_at=doc.get("created_at"),
                   revoked_at=doc.get("revoked_at"), revoked_reason=doc.get("revoked_reason"),
                   awaiting_first_token=doc.get("token_fetched") is False)


class CareLinks:
    """The patient's consent for each caregiver: one document per patient and caregiver, with what it covers now
    (active) or covered last (revoked, with when and by whom: ``ended_by`` patient, caregiver, or closure). What
    that document no longer shows, each earlier period of access and each earlier set of permissions, is kept in
    ``care_link_history``, written before the link is changed or given again: a stop between the two writes
    loses nothing, and an entry kept for a change that then did not happen is replaced by what really ended
    those permissions once that is known (one entry per set of permissions: the last word stands). The history
    stays with the patient's record and is deleted with it."""

    def __init__(self, db: Database):
        self.col = db.care_links
        self.history = db.care_link_history

    @staticmethod
    def _since(doc: dict) -> datetime:
        """Since when ``doc``'s permissions were given: its last change, or the grant."""
        return doc.get("changed_at") or doc["granted_at"]

    def _keep(self, doc: dict, *, ended_at: datetime, ended_by: str | None, status: str) -> str:
        """Keep in the history what ``doc`` shows (the permissions it has given since ``changed_at``, or since
        ``granted_at``), ended at ``ended_at``: ``revoked`` (access ended) or ``changed`` (the permissions
        replaced). One entry for those permissions, its id the link's and the instant they were given: kept again
        (a retry, or the true end of what a stopped change kept but never changed), the last word stands."""
        since = self._since(doc)
        kept_id = f"{doc['_id']}:{since.isoformat()}"
        entry = {"link_id": doc["_id"], "patient_id": doc["patient_id"], "caregiver_id": doc["caregiver_id"],
                 "offer_id": doc.get("offer_id"), "permissions": doc.get("permissions"), "granted_at": since,
                 "ended_at": ended_at, "ended_by": ended_by, "status": status}
        try:
            self.history.replace_one({"_id": kept_id}, entry, upsert=True)
        except DuplicateKeyError:  # two first keeps raced; the other inserted it
            self.history.replace_one({"_id": kept_id}, entry)
        return kept_id

    def _keep_ended(self, doc: dict) -> None:
        self._keep(doc, ended_at=doc.get("revoked_at") or doc["granted_at"], ended_by=doc.get("ended_by"),
                   status="revoked")

    def grant(self, patient_id: str, caregiver_id: str, permissions: CaregiverPermissions, *,
              at: datetime | None = None, offer_id: str | None = None) -> CareLink:
        """Make (or renew) the patient's consent for this caregiver, with these permissions, given ``at`` (now by
        default), by the acceptance of offer ``offer_id``. The link given before (ended, or active with other
        permissions) goes to the history first."""
        query = {"patient_id": patient_id, "caregiver_id": caregiver_id}
        before = self.col.find_one(query)
        if before is not None and before["status"] == "active":
            self._keep(before, ended_at=now(), ended_by="patient", status="changed")
        elif before is not None:
            self._keep_ended(before)
        update = {"$set": {"status": "active", "permissions": permissions_doc(permissions), "granted_at": at or now(),
                           "revoked_at": None, "offer_id": offer_id, "changed_at": None, "ended_by": None},
                  "$setOnInsert": {"_id": new_id()}}
        try:
            doc = self.col.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # Two first grants raced on the unique (patient, caregiver) pair; the other inserted it.
            doc = self.col.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        return _link(doc)

    def change_permissions(self, patient_id: str, caregiver_id: str,
                           permissions: CaregiverPermissions) -> CareLink | None:
        """New permissions for an active link, from now (since when access was given stays); None when it is not
        active (ended meanwhile: never revived). The permissions replaced go to the history first."""
        at = now()
        for _ in range(CHANGE_ATTEMPTS):
            doc = self.col.find_one({"patient_id": patient_id, "caregiver_id": caregiver_id, "status": "active"})
            if doc is None:
                return None
            kept_id = self._keep(doc, ended_at=at, ended_by="patient", status="changed")
            changed = self.col.find_one_and_update(
                {"_id": doc["_id"], "status": "active", "granted_at": doc["granted_at"],
                 "changed_at": doc.get("changed_at")},
                {"$set": {"permissions": permissions_doc(permissions), "changed_at": at}},
                return_document=ReturnDocument.AFTER)
            if changed is not None:
                return _link(changed)
            # Ended or changed by another request meanwhile. Still showing those permissions (ended, not changed),
            # the link holds them: what was kept is taken back. Changed, the other change kept them.
            now_doc = self.col.find_one({"_id": doc["_id"]})
            if now_doc is not None and self._since(now_doc) == self._since(doc):
                self.history.delete_one({"_id": kept_id})
        raise Contended("the caregiver's access is being changed by someone else right now; try again")

    def revoke(self, patient_id: str, link_id: str, *, ended_by: str) -> CareLink | None:
        """End an active link, noting who ended it (the patient, the caregiver, or ``closure``: an account closed,
        or the patient's suspended while the caregiver was accepting); None when it is not active."""
        return _link(self.col.find_one_and_update(
            {"_id": link_id, "patient_id": patient_id, "status": "active"},
            {"$set": {"status": "revoked", "revoked_at": now(), "ended_by": ended_by}},
            return_document=ReturnDocument.AFTER,
        ))

    def active(self, patient_id: str, caregiver_id: str) -> CareLink | None:
        return _link(self.col.find_one({"patient_id": patient_id, "caregiver_id": caregiver_id, "status": "active"}))

    def of_pair(self, patient_id: str, caregiver_id: str) -> CareLink | None:
        """The link between them, active or revoked (one per pair), if there ever was one."""
        return _link(self.col.find_one({"patient_id": patient_id, "caregiver_id": caregiver_id}))

    def for_patient(self, patient_id: str, limit: int = 100) -> list[CareLink]:
        return [_link(d) for d in self.col.find({"patient_id": patient_id}).sort("granted_at", ASCENDING).limit(limit)]

    def for_caregiver(self, caregiver_id: str) -> list[CareLink]:
        return [_link(d) for d in self.col.find({"caregiver_id": caregiver_id, "status": "active"}).limit(200)]

    def patient_ids_of(self, caregiver_id: str) -> list[str]:
        """The patients sharing their data with a caregiver now (active links; as many as ``revoke_all`` ends)."""
        return [d["patient_id"] for d in self.col.find({"caregiver_id": caregiver_id, "status": "active"},
                                                        {"patient_id": 1}).limit(1000)]

    def active_pairs(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], CareLink]:
        """The active links among (patient, caregiver) pairs, by pair (one read per caregiver)."""
        wanted = set(pairs)
        found: dict[tuple[str, str], CareLink] = {}
        for caregiver_id in sorted({c for _, c in wanted}):
            for doc in self.col.find({"caregiver_id": caregiver_id, "status": "active"}).limit(1000):
                if (doc["patient_id"], caregiver_id) in wanted:
                    found[(doc["patient_id"], caregiver_id)] = _link(doc)
        return found

    def offers_kept(self, patient_id: str) -> set[str]:
        """The offers whose access is in the patient's history (given, and ended or changed since)."""
        return {d["offer_id"] for d in self.history.find({"patient_id": patient_id}, {"offer_id": 1}).limit(1000)
                if d.get("offer_id")}

    def kept_of_offer(self, patient_id: str, offer_id: str) -> list[dict]:
        """What the history holds of the access an offer gave, oldest first (its sets of permissions)."""
        return list(self.history.find({"patient_id": patient_id, "offer_id": offer_id}).sort("ended_at", ASCENDING)
                    .limit(1000))

    def history_of(self, patient_id: str, limit: int = 1000) -> list[dict]:
        """What the patient's links no longer show, oldest first: each earlier period of a caregiver's access
        (``revoked``) and each earlier set of permissions (``changed``), from ``granted_at`` to ``ended_at``."""
        return list(self.history.find({"patient_id": patient_id}).sort("ended_at", ASCENDING).limit(limit))

    def delete_for_patient(self, patient_id: str) -> int:
        self.history.delete_many({"patient_id": patient_id})
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def revoke_all(self, *, patient_id: str | None = None, caregiver_id: str | None = None) -> list[CareLink]:
        """Revoke every active link of a patient or of a caregiver (an account closed or deleted: ``closure``)."""
        query: dict = {"status": "active"}
        if patient_id is not None:
            query["patient_id"] = patient_id
        if caregiver_id is not None:
            query["caregiver_id"] = caregiver_id
        links = [_link(d) for d in self.col.find(query).limit(1000)]
        for link in links:
            self.col.update_one({"_id": link.id, "status": "active"},
                                {"$set": {"status": "revoked", "revoked_at": now(), "ended_by": "closure"}})
        return links


class CareTeams:
    """Care teams, their clinicians and the patients enrolled in them. An enrolment marks the patient's panel row
    (its computation writes the patient's line on the team's panel, companion.store.read_models.PanelEntries); an
    enrolment ended takes that line off at once."""

    def __init__(self, db: Database):
        self.teams = db.care_teams
        self.enrolments = db.team_enrolments
        self.ended = db.team_enrolments_ended  # the history of which teams had access, kept with the record
        self.panel_entries = PanelEntries(db, self.panel_changed)
        self.panel_marks = PanelRowMarks(db)

    def create(self, name: str, team_id: str | None = None) -> CareTeam:
        return _team(insert_once(self.teams, {"name": name, "clinician_ids": [], "created_at": now()}, team_id))

    def get(self, team_id: str) -> CareTeam | None:
        return _team(self.teams.find_one({"_id": team_id}))

    def add_clinician(self, team_id: str, clinician_id: str) -> CareTeam | None:
        return _team(self.teams.find_one_and_update(
            {"_id": team_id}, {"$addToSet": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER))

    def remove_clinician(self, team_id: str, clinician_id: str) -> CareTeam | None:
        return _team(self.teams.find_one_and_update(
            {"_id": team_id}, {"$pull": {"clinician_ids": clinician_id}}, return_document=ReturnDocument.AFTER))

    def of_clinician(self, clinician_id: str, limit: int = 100) -> list[CareTeam]:
        return [_team(d) for d in self.teams.find({"clinician_ids": clinician_id}).limit(limit)]

    def team_ids_of(self, clinician_id: str) -> list[str]:
        return [t["_id"] for t in self.teams.find({"clinician_ids": clinician_id}, {"_id": 1})]

    def panel_changed(self, team_ids: list[str]) -> None:
        """Move on these teams' panel versions (after a change to their panel entries)."""
        self.teams.update_many({"_id": {"$in": team_ids}}, {"$inc": {"panel_v": 1}})

    def panel_versions_of(self, clinician_id: str) -> dict[str, int | None]:
        """The clinician's teams, each with its panel version (moved on by every change to the team's panel
        entries: companion.store.read_models.PanelEntries), or None while an enrolment of the team is ending
        (unenrol): no page of that team's panel may be served as kept then, for its entry may outlive the
        enrolment should the ending stop half-way."""
        return {t["_id"]: None if t.get("ending") else t.get("panel_v", 0)
                for t in self.teams.find({"clinician_ids": clinician_id}, {"_id": 1, "panel_v": 1, "ending": 1})}

    def finish_endings(self, started_before: datetime) -> int:
        """Finish the endings of enrolments that started before this instant and never finished (a process that
        stopped half-way through unenrol): the panel entry of each enrolment no longer there is deleted, and the
        team's ending cleared, so that its pages can be kept again. An ending begun meanwhile in the same team
        leaves it for a later run. Returns how many teams were cleared."""
        cleared = 0
        for team in self.teams.find({"ending_at": {"$lt": started_before}}, {"_id": 1, "ending": 1, "ending_at": 1}):
            pending = sorted(team.get("ending") or [])
            gone = set(pending) - self.enrolled(team["_id"], pending)  # (by pair too: a few, and an old id)
            self.panel_entries.delete_ids(f"{team['_id']}:{pid}" for pid in gone)
            change: dict = {"$unset": {"ending_at": ""}}
            if pending:
                change |= {"$pullAll": {"ending": pending}, "$inc": {"panel_v": 1}}
            cleared += self.teams.update_one({"_id": team["_id"], "ending_at": team["ending_at"]},
                                             change).modified_count
        return cleared

    def has_team(self, clinician_id: str) -> bool:
        return self.teams.find_one({"clinician_ids": clinician_id}, {"_id": 1}) is not None

    def enrol(self, team_id: str, patient_id: str, *, by: str | None = None, reason: str | None = None,
              consent: str | None = None) -> bool:
        """Enrol a patient in a team; True when newly enrolled (enrolling twice, or concurrently, is harmless).
        ``consent`` names how the patient agreed (the invitation they accepted, or ``admin``)."""
        fields = {"_id": f"{team_id}:{patient_id}", "enrolled_at": now()}
        if by is not None:
            fields.update({"enrolled_by": by, "reason": reason})
        if consent is not None:
            fields["consent"] = consent
        try:
            result = self.enrolments.update_one({"team_id": team_id, "patient_id": patient_id},
                                                {"$setOnInsert": fields}, upsert=True)
        except DuplicateKeyError:
            return False  # enrolled by a concurrent request: the same outcome
        if result.upserted_id is None:
            return False
        self.panel_marks.mark([patient_id], "enrolment", now())
        return True

    def unenrol(self, team_id: str, patient_id: str, *, ended_by: str) -> int:
        """End an enrolment (``ended_by``: patient, clinician or admin); its record goes to the history first."""
        # The row is marked first: should the process stop between the two deletions, the refresher's next
        # computation of the row (within a minute) takes the line off.
        at = now()
        self.panel_marks.mark([patient_id], "enrolment ended", at)
        # The team notes the ending first, so that no process serves a page of its panel kept from before while
        # the enrolment is gone and its entry is not (a stop between the two deletions): such a stop leaves the
        # note, and finish_endings (the panel refresher) deletes the entry and clears it.
        self.teams.update_one({"_id": team_id}, {"$addToSet": {"ending": patient_id}, "$set": {"ending_at": at},
                                                 "$inc": {"panel_v": 1}})
        current = self.enrolments.find_one({"team_id": team_id, "patient_id": patient_id})
        if current is not None:  # once (a retry after a stop between the writes finds it there)
            insert_new(self.ended, [{**current, "_id": f"{current['_id']}:{current['enrolled_at'].isoformat()}",
                                     "ended_at": at, "ended_by": ended_by}])
        deleted = self.enrolments.delete_one({"team_id": team_id, "patient_id": patient_id}).deleted_count
        self.panel_entries.delete_ids([f"{team_id}:{patient_id}"])
        self.teams.update_one({"_id": team_id}, {"$pull": {"ending": patient_id}, "$inc": {"panel_v": 1}})
        return deleted

    def enrolment(self, team_id: str, patient_id: str) -> dict | None:
        """The patient's enrolment in the team, if they are enrolled."""
        return self.enrolments.find_one({"team_id": team_id, "patient_id": patient_id})

    def enrolments_of(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The patient's enrolments (which teams can see their data, since when, by whose act)."""
        return list(self.enrolments.find({"patient_id": patient_id}).sort("enrolled_at", ASCENDING).limit(limit))

    def by_ids(self, team_ids: Iterable[str]) -> dict[str, CareTeam]:
        return {d["_id"]: _team(d) for d in self.teams.find({"_id": {"$in": sorted(set(team_ids))}})}

    def enrolments_ended(self, patient_id: str, limit: int = 1000) -> list[dict]:
        """The patient's ended enrolments, oldest first: which teams had access, from when to when, ended by whom."""
        return list(self.ended.find({"patient_id": patient_id}).sort("ended_at", ASCENDING).limit(limit))

    def ended_since(self, team_id: str, patient_id: str, since: datetime) -> bool:
        """Whether an enrolment of the patient in the team (however it was made) ended at or after ``since``."""
        return self.ended.find_one({"patient_id": patient_id, "ended_at": {"$gte": since}, "team_id": team_id},
                                   {"_id": 1}) is not None

    def enrolments_ended_in(self, team_id: str, patient_id: str) -> int:
        """How many of the patient's enrolments in this team have ended."""
        return self.ended.count_documents({"patient_id": patient_id, "team_id": team_id})

    def delete_enrolments_of(self, patient_id: str) -> int:
        self.ended.delete_many({"patient_id": patient_id})
        deleted = self.enrolments.delete_many({"patient_id": patient_id}).deleted_count
        self.panel_entries.delete_for_patient(patient_id)
        return deleted

    def enrolled_by_team(self) -> Iterator[tuple[str, list[str]]]:
        """Every team with the patients enrolled in it, a team at a time (an equality on the team index each)."""
        for team_id in [t["_id"] for t in self.teams.find({}, {"_id": 1})]:
            yield team_id, [e["patient_id"] for e in self.enrolments.find({"team_id": team_id}, {"patient_id": 1})]

    def team_ids_of_patient(self, patient_id: str) -> list[str]:
        """The teams the patient is enrolled in."""
        return sorted(e["team_id"] for e in self.enrolments.find({"patient_id": patient_id}, {"team_id": 1}))

    def enrolled(self, team_id: str, patient_ids: Iterable[str], *, by_pair: bool = True) -> set[str]:
        """Which of these patients are enrolled in the team: by the enrolments' ids (``<team>:<patient>``,
        counted from the ``_id`` index, and read, one lookup for all, only when the count falls short), then,
        with ``by_pair``, for each not found so, by team and patient (an enrolment written before its id was
        derived from them: one lookup each, so only for a few)."""
        wanted = sorted(set(patient_ids))
        if not wanted:  # no query: an empty `$in` is no _id lookup for the development server, but a full read
            return set()
        ids = {f"{team_id}:{pid}": pid for pid in wanted}
        if count_by_id(self.enrolments, {"$in": list(ids)}) == len(ids):
            return set(wanted)
        found = {ids[e["_id"]] for e in self.enrolments.find({"_id": {"$in": list(ids)}}, {"_id": 1})}
        if not by_pair:
            return found
        return found | {pid for pid in wanted if pid not in found
                        and self.enrolments.find_one({"patient_id": pid, "team_id": team_id}, {"_id": 1})}

    def remove_clinician_everywhere(self, clinician_id: str) -> int:
        """Take a clinician off every team (an account closed)."""
        return self.teams.update_many({"clinician_ids": clinician_id},
                                      {"$pull": {"clinician_ids": clinician_id}}).modified_count

    def patient_count(self, team_id: str) -> int:
        return self.enrolments.count_documents({"team_id": team_id})

    def is_on_team_of(self, clinician_id: str, patient_id: str) -> bool:
        team_ids = self.team_ids_of(clinician_id)
        return bool(team_ids) and self.enrolments.find_one(
            {"patient_id": patient_id, "team_id": {"$in": team_ids}}, {"_id": 1}
        ) is not None

    def patient_ids_for(self, clinician_id: str) -> list[str]:
        return self.patient_ids_of_teams(self.team_ids_of(clinician_id))

    def patient_ids_of_teams(self, team_ids: Iterable[str]) -> list[str]:
        """The patients enrolled in any of these teams."""
        # One equality a team: FerretDB serves a top-level string equality from the index.
        return sorted({e["patient_id"] for team_id in team_ids
                       for e in self.enrolments.find({"team_id": team_id}, {"patient_id": 1})})


class EmergencyGrants:
    def __init__(self, db: Database):
        self.col = db.emergency_grants

    def grant(self, clinician_id: str, patient_id: str, reason: str, expires_at: datetime,
              grant_id: str | None = None) -> EmergencyAccess:
        doc = insert_once(self.col, {"clinician_id": clinician_id, "patient_id": patient_id,  # dates as stored
                                     "reason": reason, "granted_at": to_millis(now()),
                                     "expires_at": to_millis(expires_at)}, grant_id)
        return EmergencyAccess(doc["_id"], doc["clinician_id"], doc["patient_id"], doc["reason"], doc["granted_at"],
                               doc["expires_at"])

    def active(self, clinician_id: str, patient_id: str) -> EmergencyAccess | None:
        doc = self.col.find_one({"clinician_id": clinician_id, "patient_id": patient_id, "expires_at": {"$gt": now()}})
        if doc is None:
            return None
        return EmergencyAccess(doc["_id"], doc["clinician_id"], doc["patient_id"], doc["reason"], doc["granted_at"],
                               doc["expires_at"])

    def for_patient(self, patient_id: str, limit: int = 200) -> list[EmergencyAccess]:
        """Every emergency grant about a patient, newest first (what the patient is shown about their data)."""
        return [EmergencyAccess(d["_id"], d["clinician_id"], d["patient_id"], d["reason"], d["granted_at"],
                                d["expires_at"])
                for d in self.col.find({"patient_id": patient_id}).sort("granted_at", -1).limit(limit)]

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def end_for_patient(self, patient_id: str, at: datetime) -> int:
        """End every running emergency grant to a patient's record now (the patient closed their account)."""
        return self.col.update_many({"patient_id": patient_id, "expires_at": {"$gt": at}},
                                    {"$set": {"expires_at": at}}).modified_count

    def end_for_clinician(self, clinician_id: str, at: datetime) -> int:
        """End a clinician's running emergency grants now (an account deactivated or closed)."""
        return self.col.update_many({"clinician_id": clinician_id, "expires_at": {"$gt": at}},
                                    {"$set": {"expires_at": at}}).modified_count


class Gateways:
    """Paired gateways. ``token_fetched`` is False from pairing until the gateway's first token (absent on gateways
    paired before it was kept: they are taken to have fetched one); until then its pairing may be answered again
    (:meth:`replace_unused_secret`), and a day on it is revoked (:meth:`revoke_never_connected`)."""

    def __init__(self, db: Database):
        self.col = db.gateways

    def create(self, *, patient_id: str, secret_hash: str, name: str, gateway_id: str | None = None) -> Gateway:
        doc = {"_id": gateway_id or new_id(), "patient_id": patient_id, "secret_hash": secret_hash, "name": name,
               "revoked": False, "created_at": now(), "token_fetched": False}
        self.col.insert_one(doc)
        return _gateway(doc)

    def get(self, gateway_id: str) -> Gateway | None:
        return _gateway(self.col.find_one({"_id": gateway_id}))

    def revoke(self, gateway_id: str, patient_id: str | None = None, *, reason: str = REVOKED_ON_REQUEST) -> bool:
        """Revoke a gateway (of ``patient_id``, if given): it can no longer get tokens or upload. False if it is
        revoked already (or not the patient's)."""
        query: dict = {"_id": gateway_id, "revoked": False}
        if patient_id is not None:
            query["patient_id"] = patient_id
        return self.col.update_one(query, {"$set": {"revoked": True, "revoked_at": now(),
                                                    "revoked_reason": reason}}).modified_count == 1

    def revoke_all_for(self, patient_id: str) -> list[str]:
        """Revoke every gateway of a patient (their account is closed); the ids revoked."""
        ids = [d["_id"] for d in self.col.find({"patient_id": patient_id, "revoked": False}, {"_id": 1})]
        for gateway_id in ids:
            self.revoke(gateway_id, reason=PATIENT_CLOSED)
        return ids

    def replace_unused_secret(self, gateway_id: str, patient_id: str, secret_hash: str, name: str) -> bool:
        """Give a gateway that never fetched a token a new secret (its pairing answered again: the first answer was
        lost); the earlier secret stops working. False once it has fetched one, or is revoked."""
        return self.col.update_one({"_id": gateway_id, "patient_id": patient_id, "revoked": False,
                                    "token_fetched": False},
                                   {"$set": {"secret_hash": secret_hash, "name": name}}).modified_count == 1

    def note_first_token(self, gateway_id: str, secret_hash: str) -> bool:
        """Note that the gateway fetched its first token with the secret whose hash is ``secret_hash``: from then on
        its pairing is never answered again. False if that secret was replaced (or the gateway revoked)
        meanwhile; one conditional update, so of a token and a repeated pairing racing exactly one wins."""
        if self.col.update_one({"_id": gateway_id, "secret_hash": secret_hash, "revoked": False,
                                "token_fetched": False},
                               {"$set": {"token_fetched": True, "first_token_at": now()}}).modified_count == 1:
            return True
        # (or a second token fetched with the same secret at the same moment noted it first)
        doc = self.col.find_one({"_id": gateway_id}, {"secret_hash": 1, "revoked": 1, "token_fetched": 1})
        return bool(doc and doc["secret_hash"] == secret_hash and not doc.get("revoked")
                    and doc.get("token_fetched") is not False)

    def revoke_never_connected(self, paired_before: datetime, limit: int = 1000) -> list[Gateway]:
        """Revoke the gateways paired before ``paired_before`` that never fetched a token (the pairing's answer was
        lost, the gateway gave the pairing up, or it has not run since); the ones revoked now. Each is
        marked for its audit event (:meth:`revoked_unaudited`), in the same write."""
        revoked = []
        for doc in self.col.find({"token_fetched": False, "created_at": {"$lt": paired_before},
                                  "revoked": False}).limit(limit):
            if self.col.update_one({"_id": doc["_id"], "token_fetched": False, "revoked": False},
                                   {"$set": {"revoked": True, "revoked_at": now(), "revoked_reason": NEVER_CONNECTED,
                                             "audit_pending": True}}).modified_count == 1:
                revoked.append(_gateway(doc))
        return revoked

    def revoked_unaudited(self, limit: int = 1000) -> list[Gateway]:
        """Gateways revoked by :meth:`revoke_never_connected` whose audit event is not yet written."""
        return [_gateway(d) for d in self.col.find({"audit_pending": True}).limit(limit)]

    def note_audited(self, gateway_id: str) -> None:
        self.col.update_one({"_id": gateway_id}, {"$unset": {"audit_pending": ""}})

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_many({"patient_id": patient_id}).deleted_count

    def for_patient(self, patient_id: str, limit: int = 100) -> list[Gateway]:
        """The gateways paired with a patient, revoked ones included, oldest first."""
        return [_gateway(d) for d in self.col.find({"patient_id": patient_id}).sort("created_at", ASCENDING)
                .limit(limit)]

    def note_clock(self, gateway_id: str, check: dict) -> None:
        """The server's last check of the gateway's clock (its offset, whether it vouched for it, when)."""
        self.col.update_one({"_id": gateway_id}, {"$set": {"clock": check}})

    def clock_of(self, gateway_id: str) -> dict | None:
        """The server's last check of the gateway's clock (``note_clock``), None before its first."""
        doc = self.col.find_one({"_id": gateway_id}, {"clock": 1})
        return (doc or {}).get("clock")

    def clocks_of(self, patient_id: str) -> list[dict]:
        """The last clock check of each of the patient's gateways (``_id``, ``name``, ``clock``)."""
        return list(self.col.find({"patient_id": patient_id}, {"name": 1, "clock": 1, "revoked": 1}).limit(50))


OPEN, ACCEPTED, DECLINED, WITHDRAWN, EXPIRED = "open", "accepted", "declined", "withdrawn", "expired"


class _ToAnEmail:
    """Invitations addressed to an email, matched to an account by the email's digest only when its owner looks."""

    col: Collection

    def open_for(self, email_digest: str, at: datetime, limit: int = 100) -> list[dict]:
        """Those waiting for the owner of an email (not answered, not expired), oldest first (up to ``limit``)."""
        return list(self.col.find({"email_digest": email_digest, "status": OPEN, "expires_at": {"$gt": at}})
                    .sort("created_at", ASCENDING).limit(limit))

    def close_open_for(self, email_digest: str, at: datetime, *, erase_with: str | None = None) -> int:
        """Close every open one to an email (its owner's account closed). ``erase_with``: the closed patient's
        id, with whose record every one to the email (answered or not: they hold the address) is deleted."""
        if erase_with is not None:
            self.col.update_many({"email_digest": email_digest}, {"$set": {"erase_with": erase_with}})
        return self.col.update_many({"email_digest": email_digest, "status": OPEN},
                                    {"$set": {"status": DECLINED, "answered_at": at}}).modified_count


class CareInvitations(_ToAnEmail):
    """A clinician's invitation to a patient, by email, to let a care team see their data. The patient sees it
    (matched by the digest of their email) and accepts or declines it in the app; until they accept, nothing
    is linked to any account, so the invitation says nothing about whether the email belongs to a patient."""

    def __init__(self, db: Database):
        self.col = db.care_invitations

    def create(self, *, team_id: str, clinician_id: str, email: str, email_digest: str, reason: str,
               at: datetime, expires_at: datetime, invitation_id: str | None = None) -> dict:
        return insert_once(self.col, {"team_id": team_id, "clinician_id": clinician_id, "email": email,
                                      "email_digest": email_digest, "reason": reason, "status": OPEN,
                                      "created_at": to_millis(at), "expires_at": to_millis(expires_at),
                                      "answered_at": None, "patient_id": None}, invitation_id)  # dates as stored

    def get(self, invitation_id: str) -> dict | None:
        return self.col.find_one({"_id": invitation_id})

    def of_team(self, team_id: str, limit: int = 200) -> list[dict]:
        return list(self.col.find({"team_id": team_id}).sort("created_at", -1).limit(limit))

    def answer(self, invitation_id: str, email_digest: str, status: str, at: datetime,
               patient_id: str | None = None) -> dict | None:
        """Answer an open, unexpired invitation addressed to ``email_digest`` (accepted or declined), once."""
        return self.col.find_one_and_update(
            {"_id": invitation_id, "email_digest": email_digest, "status": OPEN, "expires_at": {"$gt": at}},
            {"$set": {"status": status, "answered_at": at, "patient_id": patient_id}},
            return_document=ReturnDocument.AFTER)

    def answered(self, invitation_id: str, email_digest: str, status: str, patient_id: str | None) -> dict | None:
        """The invitation to ``email_digest``, if it was answered so (accepted by ``patient_id``, or declined:
        also once the team took the declined invitation back)."""
        query = {"_id": invitation_id, "email_digest": email_digest, "patient_id": patient_id}
        if status == DECLINED:
            return self.col.find_one({**query, "$or": [{"status": DECLINED}, {"status": WITHDRAWN, "declined": True}]})
        return self.col.find_one({**query, "status": status})

    def withdraw(self, invitation_id: str, team_id: str, at: datetime) -> dict | None:
        """The clinicians of the team take back an invitation not accepted: one declined as one never answered
        (the team cannot tell them apart, and must not learn it from this). The decline stays noted (``declined``),
        so that the patient's retry of it still answers as the first time."""
        for status, noted in ((OPEN, {}), (DECLINED, {"declined": True})):
            withdrawn = self.col.find_one_and_update({"_id": invitation_id, "team_id": team_id, "status": status},
                                                     {"$set": {"status": WITHDRAWN, "answered_at": at, **noted}},
                                                     return_document=ReturnDocument.AFTER)
            if withdrawn is not None:
                return withdrawn
        return None

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_many({"$or": [{"patient_id": patient_id}, {"erase_with": patient_id}]}).deleted_count

    def accepted_by(self, patient_id: str, limit: int = 200) -> list[dict]:
        return list(self.col.find({"patient_id": patient_id}).sort("created_at", ASCENDING).limit(limit))


class CaregiverInvitations(_ToAnEmail):
    """A patient's offer, by email, to share their data with a caregiver. The caregiver sees it (matched by the
    digest of their account's email) and accepts it with their password, or declines it; until they accept,
    nothing is linked to any account, so the offer says nothing to the patient about whether the email has an
    account. One offer is open per patient and email: offering again renews it with the new permissions."""

    def __init__(self, db: Database):
        self.col = db.caregiver_invitations

    def offer(self, *, patient_id: str, email: str, email_digest: str, permissions: CaregiverPermissions,
              at: datetime, expires_at: datetime) -> dict:
        """The open offer to this email (made, or renewed with these permissions and a new expiry). An offer
        declined is renewed as one never answered is (the same id, open again): a new one would tell the patient
        that the email has an account, which said no."""
        query = {"patient_id": patient_id, "email_digest": email_digest, "status": {"$in": [OPEN, DECLINED]}}
        update = {"$set": {"permissions": permissions_doc(permissions), "expires_at": expires_at, "renewed_at": at,
                           "status": OPEN, "answered_at": None},
                  "$setOnInsert": {"_id": new_id(), "email": email, "created_at": at, "caregiver_id": None}}
        return self.col.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.AFTER)

    def get(self, invitation_id: str, patient_id: str) -> dict | None:
        return self.col.find_one({"_id": invitation_id, "patient_id": patient_id})

    def patient_of(self, invitation_id: str) -> str | None:
        """The patient who made an offer, whatever its state (None for no such offer)."""
        doc = self.col.find_one({"_id": invitation_id}, {"patient_id": 1})
        return doc["patient_id"] if doc else None

    def waiting(self, invitation_id: str, email_digest: str, at: datetime) -> dict | None:
        """One offer waiting for the owner of an email (not answered, not expired)."""
        return self.col.find_one({"_id": invitation_id, "email_digest": email_digest, "status": OPEN,
                                  "expires_at": {"$gt": at}})

    def of_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The patient's offers not withdrawn, oldest first."""
        return list(self.col.find({"patient_id": patient_id, "status": {"$ne": WITHDRAWN}})
                    .sort("created_at", ASCENDING).limit(limit))

    def answer(self, invitation_id: str, email_digest: str, status: str, at: datetime,
               caregiver_id: str | None = None) -> dict | None:
        """Answer an open, unexpired offer addressed to ``email_digest`` (accepted or declined), once."""
        return self.col.find_one_and_update(
            {"_id": invitation_id, "email_digest": email_digest, "status": OPEN, "expires_at": {"$gt": at}},
            {"$set": {"status": status, "answered_at": at, "caregiver_id": caregiver_id}},
            return_document=ReturnDocument.AFTER)

    def answered(self, invitation_id: str, email_digest: str, status: str, caregiver_id: str | None) -> dict | None:
        """The offer to ``email_digest``, if it was answered so (accepted by ``caregiver_id``, or declined)."""
        return self.col.find_one({"_id": invitation_id, "email_digest": email_digest, "status": status,
                                  "caregiver_id": caregiver_id})

    def accepted_last(self, patient_id: str, caregiver_id: str, before: datetime) -> dict | None:
        """The patient's offer that this caregiver accepted last at or before ``before``, if any."""
        return next(iter(self.col.find({"patient_id": patient_id, "caregiver_id": caregiver_id, "status": ACCEPTED,
                                        "answered_at": {"$lte": before}}).sort("answered_at", -1).limit(1)), None)

    def close_older(self, offer: dict, at: datetime) -> int:
        """Close the offers of the patient to the email of ``offer`` (one accepted) made before it and still open
        (two offers raced). A newer one stays: it is what the patient offered last."""
        return self.col.update_many({"patient_id": offer["patient_id"], "email_digest": offer["email_digest"],
                                     "status": OPEN, "created_at": {"$lt": offer["created_at"]}},
                                    {"$set": {"status": WITHDRAWN, "answered_at": at}}).modified_count

    def newer_than(self, offer: dict) -> dict | None:
        """An offer of the patient to the same email made after ``offer`` (whatever became of it), if any."""
        return self.col.find_one({"patient_id": offer["patient_id"], "email_digest": offer["email_digest"],
                                  "created_at": {"$gt": offer["created_at"]}}, {"_id": 1})

    def withdraw(self, invitation_id: str, patient_id: str, at: datetime) -> dict | None:
        """The patient takes back an offer not accepted (declined or not: the patient cannot tell)."""
        return self.col.find_one_and_update({"_id": invitation_id, "patient_id": patient_id,
                                             "status": {"$in": [OPEN, DECLINED]}},
                                            {"$set": {"status": WITHDRAWN, "answered_at": at}},
                                            return_document=ReturnDocument.AFTER)

    def take_back(self, invitation_id: str, patient_id: str, at: datetime) -> None:
        """The patient ended what an accepted offer gave: noted on the offer, so that an acceptance still making
        its link sees it (companion.services.care)."""
        self.col.update_one({"_id": invitation_id, "patient_id": patient_id, "status": ACCEPTED,
                             "taken_back_at": None}, {"$set": {"taken_back_at": at}})

    def withdraw_all_of(self, patient_id: str, at: datetime) -> list[str]:
        """Take back every offer of a patient not accepted (their account closed); returns their ids."""
        ids = [d["_id"] for d in self.col.find({"patient_id": patient_id, "status": {"$in": [OPEN, DECLINED]}},
                                               {"_id": 1})]
        if ids:
            self.col.update_many({"_id": {"$in": ids}, "status": {"$in": [OPEN, DECLINED]}},
                                 {"$set": {"status": WITHDRAWN, "answered_at": at}})
        return ids

    def delete_for_patient(self, patient_id: str) -> int:
        return self.col.delete_many({"patient_id": patient_id}).deleted_count
