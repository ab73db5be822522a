"""The people around a patient: caregivers the patient consents to, care teams and their clinicians, and
time-boxed emergency ("break-glass") access."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from companion.clock import Clock, now
from companion.domain.access import CaregiverPermissions, Role
from companion.domain.errors import Invalid, NotFound
from companion.domain.people import Account, CareLink, CareTeam, EmergencyAccess
from companion.services.accounts import Accounts, normalise_email
from companion.services.patients import Profiles
from companion.settings import Settings
from companion.store.stores import Stores


@dataclass(frozen=True)
class NamedLink:
    """A care link with the caregiver's display name, as the patient and care team see it."""

    link: CareLink
    caregiver_name: str | None


@dataclass(frozen=True)
class TeamSummary:
    team: CareTeam
    patient_count: int


class Care:
    def __init__(self, settings: Settings, stores: Stores, accounts: Accounts, profiles: Profiles,
                 clock: Clock = now):
        self.settings = settings
        self.users = stores.users
        self.links = stores.care_links
        self.teams = stores.care_teams
        self.emergency = stores.emergency_grants
        self.accounts = accounts
        self.profiles = profiles
        self.clock = clock

    # Caregivers, by the patient's consent
    def _named(self, links: list[CareLink]) -> list[NamedLink]:
        names = self.users.names(link.caregiver_id for link in links)
        return [NamedLink(link, names.get(link.caregiver_id)) for link in links]

    def caregivers_of(self, patient_id: str) -> list[NamedLink]:
        """Who can see this patient's data, active and revoked."""
        return self._named(self.links.for_patient(patient_id))

    def grant_caregiver(self, patient_id: str, *, caregiver_email: str, permissions: CaregiverPermissions,
                        current_password: str) -> NamedLink:
        """The patient grants a caregiver access (a sensitive change: it needs the patient's password)."""
        self.accounts.reauthenticate(patient_id, current_password)
        caregiver = self.users.by_email(normalise_email(caregiver_email))
        if not caregiver or caregiver.role is not Role.CAREGIVER:
            raise Invalid("no caregiver account with that email; ask them to sign up as a caregiver first",
                          errors={"caregiver_email": ["no caregiver account with that email"]})
        return NamedLink(self.links.grant(patient_id, caregiver.id, permissions), caregiver.display_name)

    def revoke_caregiver(self, patient_id: str, link_id: str) -> None:
        """Revoke a caregiver's access; it ends on their very next request. Revoking a revoked link changes
        nothing (a retried revocation succeeds as the first did)."""
        if not self.links.revoke(patient_id, link_id) and \
                not any(link.id == link_id for link in self.links.for_patient(patient_id)):
            raise NotFound("no such caregiver link")

    def cared_for(self, caregiver_id: str) -> list[tuple[CareLink, Account | None]]:
        """The patients who share their data with a caregiver, with their accounts."""
        links = self.links.for_caregiver(caregiver_id)
        patients = {p.id: p for p in self.users.by_ids(link.patient_id for link in links)}
        return [(link, patients.get(link.patient_id)) for link in links]

    # Care teams
    def teams_of(self, clinician_id: str) -> list[TeamSummary]:
        """The care teams a clinician belongs to, with how many patients each has."""
        return [TeamSummary(team, self.teams.patient_count(team.id)) for team in self.teams.of_clinician(clinician_id)]

    def has_team(self, clinician_id: str) -> bool:
        return self.teams.has_team(clinician_id)

    def _team_of(self, clinician_id: str, team_id: str) -> CareTeam:
        team = self.teams.get(team_id)
        if not team or clinician_id not in team.clinician_ids:
            raise NotFound("no such team")
        return team

    def patient_by_email(self, email: str) -> Account:
        """A patient account by email (Invalid when there is none)."""
        patient = self.users.by_email(normalise_email(email))
        if not patient or patient.role is not Role.PATIENT:
            raise Invalid("no patient account with that email", errors={"patient_email": ["no patient account"]})
        return patient

    def check_own_team(self, clinician_id: str, team_id: str) -> None:
        """NotFound unless the clinician is on the team."""
        self._team_of(clinician_id, team_id)

    def enrol_in_own_team(self, clinician_id: str, team_id: str, patient: Account, reason: str) -> None:
        """A clinician enrols a patient in one of their own teams (enrolling twice is harmless)."""
        self._team_of(clinician_id, team_id)
        self.teams.enrol(team_id, patient.id, by=clinician_id, reason=reason)

    def unenrol_from_own_team(self, clinician_id: str, team_id: str, patient_id: str) -> None:
        """Remove a patient from one of the clinician's teams (other teams keep them)."""
        self._team_of(clinician_id, team_id)
        if not self.teams.unenrol(team_id, patient_id):
            raise NotFound("the patient is not on this team")

    def leave_team(self, clinician_id: str, team_id: str) -> None:
        """Leave a care team: its patients drop off the clinician's panel at once."""
        self._team_of(clinician_id, team_id)
        self.teams.remove_clinician(team_id, clinician_id)

    def create_team(self, name: str) -> CareTeam:
        return self.teams.create(name)

    def add_clinician(self, team_id: str, clinician_id: str) -> CareTeam:
        """An admin adds a clinician to a team."""
        clinician = self.users.by_id(clinician_id)
        if not clinician or clinician.role is not Role.CLINICIAN:
            raise Invalid("not a clinician", errors={"clinician_id": ["not a clinician"]})
        team = self.teams.add_clinician(team_id, clinician_id)
        if not team:
            raise NotFound("no such team")
        return team

    def enrol(self, team_id: str, patient_id: str) -> None:
        """An admin enrols a patient in a team: the team's clinicians gain access."""
        if not self.teams.get(team_id):
            raise NotFound("no such team")
        self.profiles.patient(patient_id)
        self.teams.enrol(team_id, patient_id)

    def patients_of(self, clinician_id: str) -> list[Account]:
        """The patients on a clinician's care teams."""
        return self.users.by_ids(self.teams.patient_ids_for(clinician_id), Role.PATIENT)

    # Break-glass
    def emergency_access(self, clinician_id: str, patient_id: str, reason: str, minutes: int) -> EmergencyAccess:
        """Read access to a patient outside one's teams, for at most the configured time, with a reason."""
        self.profiles.patient(patient_id)
        minutes = min(minutes, self.settings.break_glass_max_minutes)
        return self.emergency.grant(clinician_id, patient_id, reason, self.clock() + timedelta(minutes=minutes))
