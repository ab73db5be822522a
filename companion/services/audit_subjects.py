"""What an audit event names besides its actor, by name, for the patient's access log and download.

A change to a care team's clinicians (``team_clinician``: an admin adding or taking one off, the clinician leaving,
their account deactivated, reactivated or closed) is recorded with ``resource_ids`` [team, clinician]: the entry
shows that clinician's display name and role (never their email, as for the staff who act) and the team's name.

A change to a caregiver's access made through their account (``care_link`` with ``resource_ids`` [caregiver]: an
admin deactivating, reactivating or deleting it, the caregiver leaving) shows that caregiver's display name and
role the same way. Other ``care_link`` events name a link or an offer by its id, and show nothing more.

An admin's act that opens a caregiver's or a clinician's account to whoever holds what it gave (``password_reset_code``
made, ``authenticator`` cleared) is recorded against the patients the account reads, with the same ``resource_ids``
as a change of access through that account: [caregiver], or [team, clinician] for each of the clinician's teams. It
is named the same way. The same act recorded against the owner's own account names only that account (one id: a
caregiver's names the caregiver; a patient's, nobody).
"""

from __future__ import annotations

from companion.domain.access import Role
from companion.store.stores import Stores

TEAM_CLINICIAN = "team_clinician"
CARE_LINK = "care_link"
# An admin's acts on an account that let someone else into it (companion.api.admin._note_opening).
OPENINGS = ("password_reset_code", "authenticator")
NAMING_CLINICIAN = (TEAM_CLINICIAN, *OPENINGS)
NAMING_CAREGIVER = (CARE_LINK, *OPENINGS)


def _team_and_clinician(event: dict) -> tuple[str, str] | None:
    ids = event.get("resource_ids") or []
    if event.get("resource_type") not in NAMING_CLINICIAN or len(ids) != 2:
        return None
    return ids[0], ids[1]


def _caregiver_named(event: dict) -> str | None:
    """The one id a ``care_link`` (or opening) event names, which is a caregiver's only if an account of that role
    has it."""
    ids = event.get("resource_ids") or []
    return ids[0] if event.get("resource_type") in NAMING_CAREGIVER and len(ids) == 1 else None


def named_subjects(stores: Stores, events: list[dict]) -> list[dict]:
    """For each event, in order, the fields that name what it is about: for a change to a team's clinicians (or
    an opening of a clinician's account), ``team_id``, ``team_name``, ``clinician_id``, ``clinician_name`` and
    ``clinician_role``; for a change to a caregiver's access through their account (or an opening of it),
    ``caregiver_id``, ``caregiver_name`` and ``caregiver_role`` (as the account shows them now: a closed account's
    name is erased); for any other event, none. Two reads, whatever the number of events."""
    pairs = [_team_and_clinician(e) for e in events]
    caregivers = [_caregiver_named(e) for e in events]
    named = [p for p in pairs if p is not None]
    if not named and not any(caregivers):
        return [{} for _ in events]
    teams = stores.care_teams.by_ids(team_id for team_id, _ in named) if named else {}
    people = stores.users.names_and_roles([clinician_id for _, clinician_id in named] + [c for c in caregivers if c])
    subjects = []
    for pair, caregiver_id in zip(pairs, caregivers, strict=True):
        if caregiver_id is not None:
            name, role = people.get(caregiver_id, (None, None))
            # Only an account of a caregiver is named: the id of a link or an offer is no account's.
            subjects.append({"caregiver_id": caregiver_id, "caregiver_name": name, "caregiver_role": role}
                            if role == Role.CAREGIVER.value else {})
            continue
        if pair is None:
            subjects.append({})
            continue
        team_id, clinician_id = pair
        team = teams.get(team_id)
        name, role = people.get(clinician_id, (None, None))
        if role != Role.CLINICIAN.value:
            # Named only when the id is a clinician's (a closed one's too: absent, or still a clinician). A refused
            # change is audited with the id as sent: a patient's id pasted by mistake must not show that patient
            # to every patient of the team.
            name = role = None
            clinician_id = clinician_id if clinician_id not in people else None
        subjects.append({"team_id": team_id, "team_name": team.name if team else None,
                         "clinician_id": clinician_id, "clinician_name": name, "clinician_role": role})
    return subjects
