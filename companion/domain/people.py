"""The people and machines around a patient, as values: accounts, caregivers' consent, care teams,
emergency access, home gateways and TENS units.

Plain frozen dataclasses; the stores build them from what they hold, the services read their fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from companion.domain.access import CaregiverPermissions, Role
from companion.domain.localtime import TimeZoneHistory
from companion.domain.quiet_hours import QuietHours, in_quiet_hours

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_CAREGIVER_ALERT_DELAY_MIN = 60
# The delays a patient (PATCH caregiver_alert_delay_min) and the deployment (COMPANION_CAREGIVER_ALERT_DELAY_MIN)
# may choose, in minutes: the alerts job reads back far enough for the longest (companion.domain.alerts).
SHORTEST_CAREGIVER_ALERT_DELAY_MIN, LONGEST_CAREGIVER_ALERT_DELAY_MIN = 15, 24 * 60
# An account's states: only an active one signs in, holds sessions, receives pushes or is reached by gateways.
ACTIVE, DEACTIVATED, CLOSED = "active", "deactivated", "closed"
ACCOUNT_STATES = (ACTIVE, DEACTIVATED, CLOSED)

# What an email address is: the grammar the API's marshmallow ``fields.Email`` applies (marshmallow 4's
# ``validate.Email``: a dot-atom or quoted local part; a domain of labels, ``localhost``, or an IPv4 literal),
# written here because the domain and the services import no framework, so that an account made outside the API
# (the command line, an admin, the demo) has an email the API's own routes (sign-in, password reset) accept.
# tests/domain/test_email_addresses.py holds the two to the same answers.
_LETTERS = "\u00a1-\uffff"
_LOCAL_PART = re.compile(r"(^[-!#$%&'*+/=?^`{}|~\w]+(\.[-!#$%&'*+/=?^`{}|~\w]+)*\Z"
                         r'|^"([\001-\010\013\014\016-\037!#-\[\]-\177]|\\[\001-\011\013\014\016-\177])*"\Z)',
                         re.IGNORECASE)
_DOMAIN = re.compile(rf"(?:[A-Z0-9{_LETTERS}](?:[A-Z0-9{_LETTERS}-]{{0,61}}[A-Z0-9{_LETTERS}])?\.)+"
                     rf"(?:[A-Z{_LETTERS}]{{2,6}}|[A-Z0-9{_LETTERS}-]{{2,}})\Z"
                     r"|^\[(25[0-5]|2[0-4]\d|[0-1]?\d?\d)(\.(25[0-5]|2[0-4]\d|[0-1]?\d?\d)){3}\]\Z",
                     re.IGNORECASE)
EMAIL_LENGTH = 254


def is_email_address(value: str) -> bool:
    """Whether ``value`` is an email address as the API takes one (at most 254 characters)."""
    if not value or "@" not in value or len(value) > EMAIL_LENGTH:
        return False
    local, domain = value.rsplit("@", 1)
    return bool(_LOCAL_PART.match(local)) and (domain == "localhost" or bool(_DOMAIN.match(domain)))


@dataclass(frozen=True)
class ZoneMove:
    """A person's time zone became ``zone`` at ``effective_from`` (``previous``: the zone left)."""

    zone: str
    effective_from: datetime
    previous: str | None = None


@dataclass(frozen=True)
class Account:
    """Someone who can sign in (a patient, caregiver, clinician or admin) and what we keep about them.

    ``password_hash`` and ``mfa_secret`` never leave the service layer: every answer is built by an
    allow-listing schema that does not name them. ``profile_version`` counts changes to what the patient
    edits in their profile (name, zone, quiet hours, alert delay): the profile's ETag.
    """

    id: str
    email: str
    role: Role
    display_name: str
    time_zone: str
    created_at: datetime
    password_hash: str = field(repr=False)
    mfa_enabled: bool = False
    mfa_secret: str | None = field(default=None, repr=False)
    time_zone_history: tuple[ZoneMove, ...] = ()
    quiet_hours: QuietHours | None = None
    caregiver_alert_delay_min: int | None = None
    credentials_changed_at: datetime | None = None
    profile_version: int = 0
    status: str = ACTIVE
    status_changed_at: datetime | None = None
    locale: str | None = None  # the language the person reads notifications in (BCP 47), if they chose one
    profile_changed_at: datetime | None = None  # the last change of the profile (a retry within a day finishes it)
    # The API sessions (token families) ended before their time: signed out, or a refresh token replayed.
    ended_sessions: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def is_patient(self) -> bool:
        return self.role is Role.PATIENT

    @property
    def active(self) -> bool:
        """Whether the account may sign in and be reached (not deactivated by an admin, not closed)."""
        return self.status == ACTIVE

    def accepts_session_from(self, started_at: datetime | None) -> bool:
        """Whether a session started at ``started_at`` may go on: the account is active and the session is not
        older than the last change of password or of the account's state (a deactivation ends every session,
        and a reactivation does not bring them back)."""
        if not self.active:
            return False
        boundary = max(filter(None, (self.credentials_changed_at, self.status_changed_at)), default=None)
        return boundary is None or (started_at is not None and started_at >= boundary)

    def accepts_session(self, session: str | None, started_at: datetime | None) -> bool:
        """Whether the API session ``session`` (a token family), started at ``started_at``, may go on: it was not
        ended early, and the account accepts a session of that age (accepts_session_from)."""
        return session not in self.ended_sessions and self.accepts_session_from(started_at)

    def zone_history(self) -> TimeZoneHistory:
        """The zones this person lived in over time (the registration zone applies before any move)."""
        moves = sorted(self.time_zone_history, key=lambda m: m.effective_from)
        if not moves:
            return TimeZoneHistory.fixed(self.time_zone)
        # Before the first recorded entry they lived in the zone it left (or, for the entry made at sign-up,
        # which has no previous zone, in the zone they signed up with).
        first = moves[0].previous or moves[0].zone
        return TimeZoneHistory.of([(EPOCH, first)] + [(m.effective_from, m.zone) for m in moves
                                                     if m.effective_from > EPOCH])

    def quiet_at(self, at: datetime) -> bool:
        """Whether the instant ``at`` falls in this person's quiet hours on the clock they lived by then (after a
        move, the new zone's: their night is where they are)."""
        if self.quiet_hours is None:
            return False
        return in_quiet_hours(at.astimezone(self.zone_history().zone_at(at)).time(), self.quiet_hours)

    def alert_delay_min(self, default: int = DEFAULT_CAREGIVER_ALERT_DELAY_MIN) -> int:
        """Minutes after a missed TENS session before caregivers hear of it (the patient's choice, if any)."""
        return self.caregiver_alert_delay_min or default


@dataclass(frozen=True)
class CareLink:
    """A patient's consent for one caregiver (active until the patient revokes it)."""

    id: str
    patient_id: str
    caregiver_id: str
    status: str
    permissions: CaregiverPermissions
    granted_at: datetime
    revoked_at: datetime | None = None
    offer_id: str | None = None  # the offer whose acceptance made (or last renewed) it; None: from before offers

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class CareTeam:
    """Clinicians who share the care of the patients enrolled in the team."""

    id: str
    name: str
    clinician_ids: tuple[str, ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True)
class EmergencyAccess:
    """A clinician's time-boxed read access to a patient outside their teams, with the reason given."""

    id: str
    clinician_id: str
    patient_id: str
    reason: str
    granted_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Gateway:
    """A paired home gateway: it uploads for one patient until revoked."""

    id: str
    patient_id: str
    name: str
    secret_hash: str = field(repr=False)
    revoked: bool = False
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    # Why: REVOKED_ON_REQUEST (the patient or their care team), NEVER_CONNECTED (paired a day before and never
    # fetched a token: its pairing answer was lost, or it had not run yet), PATIENT_CLOSED (the account was
    # closed); None: revoked before reasons were kept.
    revoked_reason: str | None = None
    # Paired and never yet fetched a token (False for gateways paired before this was recorded: they did).
    awaiting_first_token: bool = False


REVOKED_ON_REQUEST, NEVER_CONNECTED, PATIENT_CLOSED = "revoked", "never_connected", "account_closed"


@dataclass(frozen=True)
class TensUnit:
    """A TENS unit bound to a patient, by serial, with what the gateway last reported about it."""

    serial: str
    patient_id: str
    profile: str
    bound_at: datetime
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def last_heard(self) -> datetime | None:
        """When the unit was last heard from: the later of its last sync (``last_sync_at``: an upload, with or
        without new records) and its last contact (``last_seen_at``: a status report, or an upload). The one
        instant the panel's days since sync and the silent-unit alert both count from: a hub that reaches the unit
        every day with nothing new to upload keeps it from being shown, or alerted on, as silent."""
        heard = [at for at in (self.status.get("last_sync_at"), self.status.get("last_seen_at")) if at is not None]
        return max(heard, default=None)
