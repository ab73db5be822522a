"""Accounts: every person who can sign in, as :class:`~companion.domain.people.Account` values."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, time

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database

from companion.clock import now
from companion.domain.access import Role
from companion.domain.people import ACTIVE, CLOSED, Account, ZoneMove
from companion.domain.quiet_hours import QuietHours
from companion.store.batches import chunks

INDEXES = {
    "users": [
        IndexModel([("email", ASCENDING)], unique=True, name="email_unique"),
        IndexModel([("role", ASCENDING)], name="role"),
    ],
}
MAX_PATIENTS = 1_000_000
SESSION_ID = re.compile(r"[0-9a-f]{32}")


def account_of(doc: dict | None) -> Account | None:
    """The account a stored user document describes (None for None)."""
    if doc is None:
        return None
    mfa = doc.get("mfa") or {}
    quiet = doc.get("quiet_hours")
    return Account(
        id=doc["_id"], email=doc.get("email", ""), role=Role(doc["role"]), display_name=doc.get("display_name", ""),
        time_zone=doc.get("time_zone") or "UTC", created_at=doc.get("created_at"),
        password_hash=doc.get("password_hash", ""), mfa_enabled=bool(mfa.get("enabled")), mfa_secret=mfa.get("secret"),
        time_zone_history=tuple(ZoneMove(m["zone"], m["effective_from"], m.get("previous"))
                                for m in doc.get("time_zone_history") or []),
        quiet_hours=QuietHours(time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"])) if quiet else None,
        caregiver_alert_delay_min=doc.get("caregiver_alert_delay_min"),
        credentials_changed_at=doc.get("credentials_changed_at"), profile_version=doc.get("profile_version") or 0,
        status=doc.get("status") or ACTIVE, status_changed_at=doc.get("status_changed_at"), locale=doc.get("locale"),
        profile_changed_at=doc.get("profile_changed_at"),
        ended_sessions=frozenset(doc.get("ended_sessions") or ()),
    )


def _quiet_doc(quiet: QuietHours | None) -> dict | None:
    return {"start": quiet.start.strftime("%H:%M"), "end": quiet.end.strftime("%H:%M")} if quiet else None


class Users:
    def __init__(self, db: Database):
        self.col = db.users

    def create(self, *, email: str, password_hash: str, role: str, display_name: str, time_zone: str = "UTC",
               extra: dict | None = None, user_id: str | None = None) -> Account:
        """Insert a new account (DuplicateKeyError when the email, or the ``user_id`` given, is taken)."""
        doc = {"_id": user_id or str(ObjectId()), "email": email, "password_hash": password_hash, "role": role,
               "display_name": display_name, "time_zone": time_zone, "created_at": now(), "mfa": {"enabled": False},
               **(extra or {})}
        self.col.insert_one(doc)
        return account_of(doc)

    def by_email(self, email: str) -> Account | None:
        return account_of(self.col.find_one({"email": email}))

    def by_id(self, user_id: str) -> Account | None:
        return account_of(self.col.find_one({"_id": user_id}))

    def by_ids(self, user_ids: Iterable[str], role: Role | None = None) -> list[Account]:
        """The accounts among ``user_ids`` (of ``role``, if given), in no particular order."""
        found = []
        for part in chunks(sorted(set(user_ids))):
            query: dict = {"_id": {"$in": part}}
            if role is not None:
                query["role"] = role.value
            found += [account_of(doc) for doc in self.col.find(query)]
        return found

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names by id (accounts that no longer exist are absent)."""
        names = {}
        for part in chunks(sorted(set(user_ids))):
            names.update({d["_id"]: d.get("display_name") for d in self.col.find({"_id": {"$in": part}},
                                                                               {"display_name": 1})})
        return names

    def names_and_roles(self, user_ids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """(display name, role) by id, and nothing else of the account (accounts that no longer exist are
        absent)."""
        found = {}
        for part in chunks(sorted(set(user_ids))):
            found.update({d["_id"]: (d.get("display_name"), d.get("role"))
                          for d in self.col.find({"_id": {"$in": part}}, {"display_name": 1, "role": 1})})
        return found

    def states(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Each account's state (active, deactivated or closed) by id; accounts that no longer exist are absent."""
        states = {}
        for part in chunks(sorted(set(user_ids))):
            states.update({d["_id"]: d.get("status") or ACTIVE for d in self.col.find({"_id": {"$in": part}},
                                                                                      {"status": 1})})
        return states

    def patients(self) -> list[Account]:
        """Every patient, with what the daily jobs need (zones and alert preferences)."""
        return [account_of({**doc, "role": Role.PATIENT.value}) for doc in self.col.find(
            {"role": Role.PATIENT.value},
            {"time_zone": 1, "time_zone_history": 1, "caregiver_alert_delay_min": 1, "quiet_hours": 1,
             "created_at": 1, "status": 1}).limit(MAX_PATIENTS)]

    def patient_ids(self) -> list[str]:
        """Every patient's id (an equality on the role index, ids only)."""
        return [doc["_id"] for doc in self.col.find({"role": Role.PATIENT.value}, {"_id": 1}).limit(MAX_PATIENTS)]

    def update_profile(self, user_id: str, *, version: int, display_name: str | None = None,
                       quiet_hours: QuietHours | None | bool = False, caregiver_alert_delay_min: int | None = None,
                       move: ZoneMove | None = None, locale: str | None | bool = False,
                       at: datetime | None = None) -> Account | None:
        """Change the fields given (``quiet_hours`` and ``locale``: None clears, ``False`` leaves) and, with
        ``move``, record a move to ``move.zone`` and make it the current zone: one single-document update,
        applied only while the profile is still at ``version`` (None otherwise), which it raises by one.
        The zone and its history entry are written together or not at all; so is ``at``, when the profile
        changed (a retry of the change can tell it may be finishing it)."""
        fields: dict = {} if at is None else {"profile_changed_at": at}
        if display_name is not None:
            fields["display_name"] = display_name
        if quiet_hours is not False:
            fields["quiet_hours"] = _quiet_doc(quiet_hours)
        if caregiver_alert_delay_min is not None:
            fields["caregiver_alert_delay_min"] = caregiver_alert_delay_min
        if locale is not False:
            fields["locale"] = locale
        update: dict = {"$inc": {"profile_version": 1}}
        if move is not None:
            fields["time_zone"] = move.zone
            update["$push"] = {"time_zone_history": {"zone": move.zone, "effective_from": move.effective_from,
                                                     "previous": move.previous}}
        if fields:
            update["$set"] = fields
        held = {"profile_version": version} if version else {"profile_version": {"$in": [0, None]}}
        return account_of(self.col.find_one_and_update({"_id": user_id, **held}, update,
                                                       return_document=ReturnDocument.AFTER))

    def set_password_hash(self, user_id: str, password_hash: str, at: datetime) -> Account | None:
        """A new password, and in the same write the instant every older session stops being accepted."""
        return account_of(self.col.find_one_and_update(
            {"_id": user_id}, {"$set": {"password_hash": password_hash, "credentials_changed_at": at}},
            return_document=ReturnDocument.AFTER))

    def end_session(self, user_id: str, session: str, started_at: datetime, *, forget_started_before: datetime) -> None:
        """Record on the account that its API session ``session`` (a token family id) has ended, keyed by the
        family and holding when it started; entries for sessions started before ``forget_started_before`` are
        dropped (those sessions are past their lifetime anyway), so the list stays as short as the sessions
        ended within one lifetime. A single-document write: every request checks the account it reads."""
        if not SESSION_ID.fullmatch(session):
            raise ValueError("a session id is 32 hex digits")
        doc = self.col.find_one_and_update({"_id": user_id}, {"$set": {f"ended_sessions.{session}": started_at}},
                                           return_document=ReturnDocument.AFTER)
        stale = {f"ended_sessions.{key}": "" for key, started in ((doc or {}).get("ended_sessions") or {}).items()
                 if started < forget_started_before}
        if stale:
            self.col.update_one({"_id": user_id}, {"$unset": stale})

    def start_mfa_enrolment(self, user_id: str, secret: str) -> bool:
        """Store a new TOTP secret, not yet enabled; False when TOTP is already enabled."""
        result = self.col.update_one({"_id": user_id, "mfa.enabled": {"$ne": True}},
                                     {"$set": {"mfa": {"enabled": False, "secret": secret}}})
        return result.modified_count == 1

    def enable_mfa(self, user_id: str, secret: str) -> bool:
        """Turn TOTP on for the secret being enrolled; False when it changed or is on already."""
        result = self.col.update_one({"_id": user_id, "mfa.enabled": False, "mfa.secret": secret},
                                     {"$set": {"mfa.enabled": True}})
        return result.modified_count == 1

    def clear_mfa(self, user_id: str, at: datetime) -> Account | None:
        """Forget the account's TOTP secret (its owner lost it), and in the same write the instant every older
        session stops being accepted, as a new password does."""
        return account_of(self.col.find_one_and_update(
            {"_id": user_id}, {"$set": {"mfa": {"enabled": False}, "credentials_changed_at": at}},
            return_document=ReturnDocument.AFTER))

    def claim_totp_step(self, user_id: str, step: int) -> bool:
        """Use a TOTP time step once: True only for the first use of a step later than every step used.

        One conditional single-document update, atomic on MongoDB and on the project's FerretDB build:
        of two concurrent uses of the same code exactly one succeeds, and an older code is refused after
        a newer one."""
        result = self.col.update_one(
            {"_id": user_id, "$or": [{"mfa.last_step": {"$lt": step}}, {"mfa.last_step": {"$exists": False}}]},
            {"$set": {"mfa.last_step": step}})
        return result.modified_count == 1


    # The account's life: deactivation, reactivation, closure, and deletion once nothing is kept.
    def set_status(self, user_id: str, status: str, at: datetime, reason: str | None = None) -> Account | None:
        """Move an open account to ``status`` (active or deactivated), and in the same write the instant every
        older session stops being accepted. None when there is no such account, or it is closed."""
        return account_of(self.col.find_one_and_update(
            {"_id": user_id, "status": {"$ne": CLOSED}},
            {"$set": {"status": status, "status_changed_at": at, "status_reason": reason}},
            return_document=ReturnDocument.AFTER))

    def close(self, user_id: str, at: datetime, *, keep_name: bool) -> Account | None:
        """Close an account for good: it can never sign in again, and what identified it as a login (email,
        password, second factor, quiet hours) is erased in the same write. The email is replaced by a
        placeholder, so it can be used for a new account. ``keep_name``: a patient's name stays with the
        clinical record the care team keeps; anyone else's is replaced. None when it was closed already (its
        closing time, which starts the retention period, stays the first one)."""
        fields = {"status": CLOSED, "status_changed_at": at, "closed_at": at, "email": f"closed:{user_id}",
                  "password_hash": "", "mfa": {"enabled": False}, "quiet_hours": None, "status_reason": "closed"}
        if not keep_name:
            fields["display_name"] = "Closed account"
        # A new profile version: the quiet hours erased are a change of the profile others may hold a copy of.
        return account_of(self.col.find_one_and_update({"_id": user_id, "status": {"$ne": CLOSED}},
                                                       {"$set": fields, "$inc": {"profile_version": 1}},
                                                       return_document=ReturnDocument.AFTER))

    def closure_done(self, user_id: str) -> None:
        """Note that every step of the account's closure is done (companion.services.lifecycle)."""
        self.col.update_one({"_id": user_id, "status": CLOSED}, {"$set": {"closure_done": True}})

    def closures_unfinished(self, limit: int = 100) -> list[str]:
        """Ids of closed accounts whose closure has not been noted done (a process stopped half-way through it),
        those closed first first."""
        return [d["_id"] for d in self.col.find({"status": CLOSED, "closure_done": {"$ne": True}}, {"_id": 1})
                .sort("status_changed_at", 1).limit(limit)]

    def closed_patients_before(self, cutoff: datetime, limit: int = 1000) -> list[str]:
        """Ids of patient accounts closed before ``cutoff`` (their clinical record's retention has ended)."""
        return [d["_id"] for d in self.col.find({"role": Role.PATIENT.value, "status": CLOSED,
                                                 "closed_at": {"$lt": cutoff}}, {"_id": 1}).limit(limit)]

    def delete(self, user_id: str) -> int:
        """Remove the account document itself (the last step of deleting a closed account's data)."""
        return self.col.delete_one({"_id": user_id, "status": CLOSED}).deleted_count

    def search(self, *, email: str | None = None, role: str | None = None, limit: int = 50) -> list[Account]:
        """Accounts for an admin: by exact email and/or role, oldest first."""
        query: dict = {}
        if email is not None:
            query["email"] = email
        if role is not None:
            query["role"] = role
        return [account_of(d) for d in self.col.find(query).sort("created_at", ASCENDING).limit(limit)]
