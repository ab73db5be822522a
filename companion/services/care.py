"""The people around a patient, each there by the patient's consent: caregivers the patient grants, care teams
the patient agreed to (an invitation accepted in the app, or an admin's enrolment the patient is told of),
and time-boxed emergency ("break-glass") access. Every one of them can be ended.

- A **caregiver** is offered access by the patient, by email, and has it once they accept the offer with their
  password from a caregiver account; the patient's answer is the same whatever the email, and sees the offer
  "pending" until it is accepted or expires (a decline is not told apart from silence). The patient revokes a
  link, or takes back an offer, at any time; the caregiver can end a link too. Revoking, or narrowing what is
  shared, withdraws at once the notifications queued for that caregiver that no longer have consent (and the
  push sender checks again when sending).
- A **clinician** reaches a patient through a team. A clinician cannot enrol anyone: they *invite* an email,
  and the answer is the same whatever the email is; the patient sees the invitation in the app (matched by
  their email) and accepts it with their password, or declines. The clinician sees "open" until the patient
  accepts, and "closed" once the invitation expired or the patient declined it after its expiry, so an
  invitation reveals nothing about the email until the patient says yes. An admin may enrol a patient directly
  (audited, and the patient is told by a push and sees the team in their list). The patient can leave any team;
  admins can take clinicians off teams and patients out of teams; clinicians can leave a team.
- **Emergency access** is granted on a clinician's reasoned request for at most an hour; the answer is the same
  whether or not the id is a patient's (a grant for an id that is no patient's opens nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from companion.clock import Clock, now
from companion.domain.access import (
    CONSENT_REVOKED,
    INVITATION_SETTLED,
    NOT_SHARED,
    CaregiverPermissions,
    Role,
)
from companion.domain.errors import Conflict, Invalid, NotFound
from companion.domain.notifications import outside_quiet_hours
from companion.domain.people import CLOSED, Account, CareLink, CareTeam, EmergencyAccess
from companion.services.accounts import Accounts, email_digest, normalise_email
from companion.services.derived_ids import derived_id
from companion.services.patients import RETRIED_WITHIN, Profiles
from companion.settings import Settings
from companion.store.relationships import ACCEPTED, DECLINED, OPEN, WITHDRAWN, permissions_of
from companion.store.stores import Stores

INVITATION_TTL = timedelta(days=14)
NEWS_KIND = "generic_update"  # the push telling someone of an invitation, an enrolment or an offer
# What the inviting clinician sees of an invitation: nothing that depends on the email until it is accepted.
CLINICIAN_VIEW = {OPEN: "open", DECLINED: "open", ACCEPTED: "accepted", WITHDRAWN: "withdrawn"}


def caregiver_offer_source(offer_id: str) -> str:
    """What the push telling a caregiver of an offer is caused by (one push per offer)."""
    return f"caregiver-invitation:{offer_id}"


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
        self.invitations = stores.care_invitations
        self.caregiver_offers = stores.caregiver_invitations
        self.emergency = stores.emergency_grants
        self.outbox = stores.outbox
        self.panel_rows = stores.panel_row_marks
        self.accounts = accounts
        self.profiles = profiles
        self.clock = clock

    # Caregivers, by the patient's consent and the caregiver's
    def _link_view(self, link: CareLink, name: str | None) -> dict:
        return {"id": link.id, "patient_id": link.patient_id, "caregiver_id": link.caregiver_id,
                "caregiver_name": name, "caregiver_email": None, "status": link.status,
                "permissions": link.permissions, "granted_at": link.granted_at, "revoked_at": link.revoked_at,
                "offered_at": None, "expires_at": None}

    def _offer_view(self, offer: dict) -> dict:
        """An offer as the patient sees it: ``pending`` until it is accepted (then the link is listed instead)
        or expires. A decline is not told apart from silence: it says the email has a caregiver account. Nor is
        an acceptance that stopped before making the link: its retry may still make it while the offer runs."""
        expired = offer["expires_at"] <= self.clock()
        return {"id": offer["_id"], "patient_id": offer["patient_id"], "caregiver_id": None, "caregiver_name": None,
                "caregiver_email": offer["email"], "status": "expired" if expired else "pending",
                "permissions": permissions_of(offer["permissions"]), "granted_at": None, "revoked_at": None,
                "offered_at": offer["created_at"], "expires_at": offer["expires_at"]}

    def caregivers_of(self, patient_id: str, *, by_the_patient: bool, limit: int = 100) -> list[dict]:
        """Who can see this patient's data (links, active and revoked) and whom the patient offered it to (offers
        not yet accepted, or whose acceptance stopped before making the link: pending, or expired). The address
        the patient typed for an offer is theirs to see: read by anyone else (``by_the_patient`` False, their
        care team), it is left out. Up to ``limit`` links and ``limit`` offers."""
        links = self.links.for_patient(patient_id, limit)
        names = self.users.names(link.caregiver_id for link in links)
        offers = self.caregiver_offers.of_patient(patient_id, limit)
        being_accepted = self._being_accepted(patient_id, offers, links)
        offers = [o for o in offers if o["status"] != ACCEPTED or o["_id"] in being_accepted]
        views = [self._link_view(link, names.get(link.caregiver_id)) for link in links] + [
            self._offer_view(o) for o in offers]
        return views if by_the_patient else [{**view, "caregiver_email": None} for view in views]

    def _being_accepted(self, patient_id: str, offers: list[dict], links: list[CareLink]) -> set[str]:
        """The offers accepted whose acceptance stopped before it made the link: a retry of it may still make it,
        so the patient sees each as the offer it is (pending, or expired), not as nothing (which would have them
        offer again, unaware). Not once taken back, nor once replaced by a newer offer to that email (a retry is
        then refused)."""
        shown = {link.offer_id for link in links}
        # A link from before links named their offer was made by an offer accepted by then (see _gave).
        before = {link.caregiver_id: link.granted_at for link in links if link.offer_id is None}
        unmade = [o for o in offers if o["status"] == ACCEPTED and not o.get("taken_back_at") and o["_id"] not in shown
                  and not (o["caregiver_id"] in before and o["answered_at"] <= before[o["caregiver_id"]])]
        if not unmade:
            return set()
        kept = self.links.offers_kept(patient_id)
        return {o["_id"] for o in unmade if o["_id"] not in kept and self.caregiver_offers.newer_than(o) is None}

    def caregiver_of(self, patient_id: str, link_id: str, *, by_the_patient: bool) -> dict:
        """One link or offer of the patient, by its id. An offer accepted is answered by the access it gave: the
        link while it shows that access (active, or the last ended), else that access as it ended (``revoked``,
        under the offer's id: ended, and given again since by a later offer, it is no longer the link's); what
        DELETE on the same id ends (:meth:`revoke_caregiver`)."""
        views = self.caregivers_of(patient_id, by_the_patient=by_the_patient)
        found = next((v for v in views if v["id"] == link_id), None)
        if found is None:
            offer = self.caregiver_offers.get(link_id, patient_id)
            if offer is not None and offer["status"] == ACCEPTED:
                link = self.links.of_pair(patient_id, offer["caregiver_id"])
                if link is not None and self._gave(offer, link):
                    found = next((v for v in views if v["id"] == link.id), None)
                else:
                    found = self._ended_offer_view(offer)
        if found is None:
            raise NotFound("no such caregiver link")
        return found

    def _gave(self, offer: dict, link: CareLink) -> bool:
        """Whether the link shows the access this accepted offer gave. A link from before links named their offer
        (``offer_id`` None) is taken for the patient's offer to that caregiver accepted last before it was given."""
        if link.offer_id is not None:
            return link.offer_id == offer["_id"]
        last = self.caregiver_offers.accepted_last(offer["patient_id"], link.caregiver_id, link.granted_at)
        return last is not None and last["_id"] == offer["_id"]

    def _ended_offer_view(self, offer: dict) -> dict | None:
        """The access an accepted offer gave, from the history, once the link shows another's (None if none)."""
        kept = self.links.kept_of_offer(offer["patient_id"], offer["_id"])
        if not kept:
            return None
        last = kept[-1]
        names = self.users.names([offer["caregiver_id"]])
        return {"id": offer["_id"], "patient_id": offer["patient_id"], "caregiver_id": offer["caregiver_id"],
                "caregiver_name": names.get(offer["caregiver_id"]), "caregiver_email": None, "status": "revoked",
                "permissions": permissions_of(last["permissions"]), "granted_at": kept[0]["granted_at"],
                "revoked_at": last["ended_at"], "offered_at": None, "expires_at": None}

    def grant_caregiver(self, patient_id: str, *, caregiver_email: str, permissions: CaregiverPermissions,
                        current_password: str, address: str | None = None, session: str | None = None) -> dict:
        """The patient offers a caregiver access by email, or changes what an active link covers (a sensitive
        change: it needs the patient's password).

        A caregiver the patient has an active link with gets the new permissions at once (queued alerts of kinds
        no longer shared are withdrawn). Any other email gets an offer that the owner of the email accepts, with
        their password, from a caregiver account; the answer is the same whether or not the email has an account,
        and nobody is linked to a patient without saying yes. A caregiver account with that email is told by a
        push that carries nothing about the patient."""
        self.accounts.reauthenticate(patient_id, current_password, address=address, session=session)
        email = normalise_email(caregiver_email)
        caregiver = self.users.by_email(email)
        # Only a link still active takes new permissions (one the caregiver ended meanwhile is never revived:
        # they get an offer, as anyone not linked does).
        link = self.links.change_permissions(patient_id, caregiver.id, permissions) if caregiver is not None \
            else None
        if link is not None:
            self.outbox.withdraw(reason=NOT_SHARED, recipient_user_id=caregiver.id, patient_id=patient_id,
                                 keep_share_kinds=permissions.alerts)
            return self._link_view(link, caregiver.display_name)
        at = self.clock()
        offer = self.caregiver_offers.offer(patient_id=patient_id, email=email, email_digest=email_digest(email),
                                            permissions=permissions, at=at, expires_at=at + INVITATION_TTL)
        if caregiver is not None and caregiver.role is Role.CAREGIVER and caregiver.active:
            # About the caregiver themselves (an offer waiting for them), not about the patient: no link yet.
            self._tell(caregiver, caregiver_offer_source(offer["_id"]), at)
        return self._offer_view(offer)

    def revoke_caregiver(self, patient_id: str, link_id: str, *, ended_by: str = "patient") -> None:
        """Revoke a caregiver's access, or take back an offer; access ends on the caregiver's very next request,
        and nothing queued for them about the patient is sent. The id of an offer that was accepted ends the link
        it made (:meth:`caregiver_of` shows the same): once that access ended and a later offer gave access
        again, the first offer's id ends nothing more. Revoking a revoked link changes nothing more (a retried
        revocation succeeds as the first did, and finishes withdrawing what is queued if the first was
        interrupted). ``ended_by``: who ended it, the patient or (leaving) the caregiver."""
        link = self.links.revoke(patient_id, link_id, ended_by=ended_by) or next(
            (known for known in self.links.for_patient(patient_id) if known.id == link_id), None)
        if link is None:
            offer = self.caregiver_offers.withdraw(link_id, patient_id, self.clock()) or \
                self.caregiver_offers.get(link_id, patient_id)
            if offer is None:
                raise NotFound("no such caregiver link")
            self.outbox.withdraw(reason=INVITATION_SETTLED, source_key=caregiver_offer_source(offer["_id"]))
            if offer["status"] != ACCEPTED:
                return
            # Noted on the offer first, then the link looked for: an acceptance still making it either finds
            # the note when it checks its offer again, or made the link before this looks (companion answer_offer).
            self.caregiver_offers.take_back(offer["_id"], patient_id, self.clock())
            link = self.links.of_pair(patient_id, offer["caregiver_id"])
            if link is not None and not self._gave(offer, link):
                # What this offer gave ended, and a later offer gave access since: that is the later offer's (its
                # id, or the link's, ends it); this one's ends nothing more, as GET on it shows.
                return
            if link is None or not link.active:  # not made, or ended already (a retry): finish withdrawing
                self.outbox.withdraw(reason=CONSENT_REVOKED, recipient_user_id=offer["caregiver_id"],
                                     patient_id=patient_id)
                return
            link = self.links.revoke(patient_id, link.id, ended_by=ended_by) or link
        self.outbox.withdraw(reason=CONSENT_REVOKED, recipient_user_id=link.caregiver_id, patient_id=patient_id)

    def leave_patient(self, caregiver_id: str, patient_id: str) -> None:
        """A caregiver ends a link themselves (one they no longer want): as the patient's revocation, from their
        very next request. NotFound when they have no link to the patient (any more)."""
        link = self.links.active(patient_id, caregiver_id)
        if link is None:
            raise NotFound("no such patient, or no access to them")
        self.revoke_caregiver(patient_id, link.id, ended_by="caregiver")

    def offers_for(self, caregiver: Account) -> list[dict]:
        """The offers waiting for a caregiver (matched by their email), with the patient's name."""
        waiting = self.caregiver_offers.open_for(email_digest(caregiver.email), self.clock())
        names = self.users.names(o["patient_id"] for o in waiting)
        return [{"id": o["_id"], "patient_id": o["patient_id"], "patient_name": names.get(o["patient_id"]),
                 "permissions": permissions_of(o["permissions"]), "offered_at": o["created_at"],
                 "expires_at": o["expires_at"]} for o in waiting]

    def patient_offering(self, offer_id: str) -> str | None:
        """The patient who made an offer, whoever it was made to and whatever its state (None for no such offer):
        whose data an answer to it concerns, refused or not."""
        return self.caregiver_offers.patient_of(offer_id)

    def answer_offer(self, caregiver: Account, offer_id: str, *, accept: bool, current_password: str | None = None,
                     address: str | None = None, session: str | None = None) -> dict:
        """The caregiver accepts (with their password: it gives their account access to someone's health data)
        or declines an offer made to their email. Accepting links them with the offer's permissions. Answering
        again as one answered (a retry) answers as the first time and finishes what the first attempt may not
        have done: the push telling of the offer withdrawn and, for an acceptance, the link made (once that link
        has ended, it is not made again)."""
        if accept:
            self.accounts.reauthenticate(caregiver.id, current_password or "", address=address, session=session)
        at, digest = self.clock(), email_digest(caregiver.email)
        status = ACCEPTED if accept else DECLINED
        waiting = self.caregiver_offers.waiting(offer_id, digest, at) or self.caregiver_offers.answered(
            offer_id, digest, status, caregiver.id if accept else None)
        patient = self.users.by_id(waiting["patient_id"]) if waiting is not None else None
        if patient is None or not patient.active:  # (a patient deactivated meanwhile: the offer stays open)
            raise NotFound("no such invitation waiting for you")
        offer = waiting if waiting["status"] == status else self.caregiver_offers.answer(
            offer_id, digest, status, at, caregiver_id=caregiver.id if accept else None)
        if offer is None or offer.get("taken_back_at"):
            raise NotFound("no such invitation waiting for you")
        self.outbox.withdraw(reason=INVITATION_SETTLED, source_key=caregiver_offer_source(offer["_id"]))
        if accept:
            link = self.links.of_pair(offer["patient_id"], caregiver.id)
            made_now = link is None or not self._gave(offer, link)
            if made_now:
                # Not made by this acceptance (made since by another, or never): made now unless it was made and
                # ended since, or (a retry of an acceptance that stopped before making it) the patient no longer
                # sees it pending: the offer expired, or the patient offered again since.
                if self.links.kept_of_offer(offer["patient_id"], offer["_id"]) or not self._still_pending(offer, at):
                    raise NotFound("no such invitation waiting for you")
                link = self.links.grant(offer["patient_id"], caregiver.id, permissions_of(offer["permissions"]),
                                        at=offer["answered_at"], offer_id=offer["_id"])
            elif not link.active:  # made by this acceptance and ended since: not made again
                raise NotFound("no such invitation waiting for you")
            offer = {**offer, "link_id": link.id}
            self.caregiver_offers.close_older(offer, at)
            # Checked again now that the link exists: the patient may have taken the offer back, or closed (or
            # suspended) the account, while this was accepted (both note it before they look for a link), or
            # offered again meanwhile (what they see since).
            now_patient = self.users.by_id(offer["patient_id"])
            now_offer = self.caregiver_offers.get(offer["_id"], offer["patient_id"])
            superseded = made_now and self.caregiver_offers.newer_than(offer) is not None
            if now_patient is None or not now_patient.active or now_offer is None or now_offer.get("taken_back_at") \
                    or superseded:
                by_the_patient = superseded or (now_offer is not None and now_offer.get("taken_back_at"))
                self.links.revoke(offer["patient_id"], link.id, ended_by="patient" if by_the_patient else "closure")
                raise NotFound("no such invitation waiting for you")
        return offer

    def _still_pending(self, offer: dict, at: datetime) -> bool:
        """Whether an accepted offer whose link is not made may still make it: what the patient's list shows it
        as (pending: :meth:`_being_accepted`), not expired (the list says expired) nor replaced by a newer offer
        to that email (the list shows that one)."""
        return offer["expires_at"] > at and self.caregiver_offers.newer_than(offer) is None

    def cared_for(self, caregiver_id: str) -> list[tuple[CareLink, Account | None]]:
        """The patients who share their data with a caregiver, with their accounts."""
        links = self.links.for_caregiver(caregiver_id)
        patients = {p.id: p for p in self.users.by_ids(link.patient_id for link in links)}
        return [(link, patients.get(link.patient_id)) for link in links]

    # Care teams: the clinician's side
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

    def check_own_team(self, clinician_id: str, team_id: str) -> None:
        """NotFound unless the clinician is on the team."""
        self._team_of(clinician_id, team_id)

    def invite(self, clinician_id: str, team_id: str, email: str, reason: str, *,
               request_key: str | None = None) -> dict:
        """A clinician invites the owner of an email to let one of their teams see their data. The answer is
        the same whatever the email; a patient with that email sees the invitation (and gets a push). With a
        ``request_key`` (the request's Idempotency-Key) a retry finds the invitation the first attempt made
        (and the push is queued once: its source is the invitation)."""
        self._team_of(clinician_id, team_id)
        at = self.clock()
        email = normalise_email(email)
        invitation_id = derived_id("care_invitation", request_key) if request_key else None
        invitation = self.invitations.create(team_id=team_id, clinician_id=clinician_id, email=email,
                                             email_digest=email_digest(email), reason=reason, at=at,
                                             expires_at=at + INVITATION_TTL, invitation_id=invitation_id)
        patient = self.users.by_email(email)
        if patient is not None and patient.role is Role.PATIENT and patient.active:
            self._tell(patient, f"invitation:{invitation['_id']}", at)
        return self.clinician_view(invitation)

    def clinician_view(self, invitation: dict) -> dict:
        """An invitation as the inviting team sees it: ``open`` until accepted, ``closed`` once expired
        unanswered or declined (a decline is not told apart from silence), ``accepted``, or ``withdrawn``."""
        status = CLINICIAN_VIEW.get(invitation["status"], "open")
        if status == "open" and invitation["expires_at"] <= self.clock():
            status = "closed"
        return {"id": invitation["_id"], "team_id": invitation["team_id"], "email": invitation["email"],
                "status": status, "created_at": invitation["created_at"], "expires_at": invitation["expires_at"],
                "patient_id": invitation["patient_id"] if invitation["status"] == ACCEPTED else None}

    def team_invitations(self, clinician_id: str, team_id: str) -> list[dict]:
        """The team's invitations; one accepted by a patient who has since left the team (or been taken off it)
        is ``ended`` and no longer names them."""
        self._team_of(clinician_id, team_id)
        views = [self.clinician_view(i) for i in self.invitations.of_team(team_id)]
        still = self.teams.enrolled(team_id, [v["patient_id"] for v in views if v["patient_id"]])
        return [v if v["patient_id"] is None or v["patient_id"] in still else {**v, "status": "ended",
                                                                                 "patient_id": None}
                for v in views]

    def withdraw_invitation(self, clinician_id: str, team_id: str, invitation_id: str) -> None:
        """The team takes back an invitation not accepted, and the push telling the patient of it: one declined
        (by the patient, or by the closure of their account) as one never answered, since the team is not told a
        decline. Taking it back again (a retry) succeeds as the first time, and withdraws the push if the first
        stopped before."""
        self._team_of(clinician_id, team_id)
        if self.invitations.withdraw(invitation_id, team_id, self.clock()) is None:
            found = self.invitations.get(invitation_id)
            if found is None or found["team_id"] != team_id or found["status"] != WITHDRAWN:
                raise NotFound("no open invitation with that id")
        self.outbox.withdraw(reason=INVITATION_SETTLED, source_key=f"invitation:{invitation_id}")

    def unenrol_from_own_team(self, clinician_id: str, team_id: str, patient_id: str) -> None:
        """Remove a patient from one of the clinician's teams (other teams keep them)."""
        self._team_of(clinician_id, team_id)
        if not self.teams.unenrol(team_id, patient_id, ended_by="clinician"):
            raise NotFound("the patient is not on this team")

    def leave_team(self, clinician_id: str, team_id: str) -> None:
        """Leave a care team: its patients drop off the clinician's panel at once."""
        self._team_of(clinician_id, team_id)
        self.teams.remove_clinician(team_id, clinician_id)

    def patients_of(self, clinician_id: str) -> list[Account]:
        """The patients on a clinician's care teams."""
        return self.users.by_ids(self.teams.patient_ids_for(clinician_id), Role.PATIENT)

    # Care teams: the patient's side
    def invitations_for(self, patient: Account, limit: int = 100) -> list[dict]:
        """The invitations waiting for the patient (up to ``limit``), with the team's and the clinician's names."""
        waiting = self.invitations.open_for(email_digest(patient.email), self.clock(), limit)
        teams = self.teams.by_ids(i["team_id"] for i in waiting)
        names = self.users.names(i["clinician_id"] for i in waiting)
        return [{"id": i["_id"], "team_id": i["team_id"], "team_name": teams[i["team_id"]].name
                 if i["team_id"] in teams else None, "clinician_name": names.get(i["clinician_id"]),
                 "reason": i["reason"], "created_at": i["created_at"], "expires_at": i["expires_at"]}
                for i in waiting]

    def answer_invitation(self, patient: Account, invitation_id: str, *, accept: bool,
                          current_password: str | None = None, address: str | None = None,
                          session: str | None = None) -> dict:
        """The patient accepts (with their password: it lets a team see their data) or declines an invitation.
        Answering again as one answered (a retry) answers as the first time and finishes what the first attempt
        may not have done: the push telling of the invitation withdrawn and, for an acceptance, the patient
        enrolled (once the patient left the team after answering, whatever enrolment ended, it is not made again)."""
        if accept:
            self.accounts.reauthenticate(patient.id, current_password or "", address=address, session=session)
        digest, status, answered_by = email_digest(patient.email), ACCEPTED if accept else DECLINED, \
            patient.id if accept else None
        invitation = self.invitations.answer(invitation_id, digest, status, self.clock(), patient_id=answered_by)
        if invitation is None:
            invitation = self.invitations.answered(invitation_id, digest, status, answered_by)
            if invitation is not None and accept and \
                    self.teams.ended_since(invitation["team_id"], patient.id, invitation["answered_at"]):
                # The patient left the team since (whichever enrolment ended: this invitation's, an admin's or
                # another invitation's): the retry does not put them back.
                invitation = None
        if invitation is None:
            raise NotFound("no such invitation waiting for you")
        self.outbox.withdraw(reason=INVITATION_SETTLED, source_key=f"invitation:{invitation['_id']}")
        if accept:
            if self.teams.get(invitation["team_id"]) is None:
                raise NotFound("the team no longer exists")
            self.teams.enrol(invitation["team_id"], patient.id, by=invitation["clinician_id"],
                             reason=invitation["reason"], consent=f"invitation:{invitation['_id']}")
            self.panel_rows.mark([patient.id], "enrolment", self.clock())
        return invitation

    def teams_of_patient(self, patient_id: str, limit: int = 100) -> list[dict]:
        """The care teams that can see the patient's data: each with its clinicians' names, since when and by
        whose act (an invitation the patient accepted, or an admin)."""
        enrolments = self.teams.enrolments_of(patient_id, limit)
        teams = self.teams.by_ids(e["team_id"] for e in enrolments)
        names = self.users.names(c for t in teams.values() for c in t.clinician_ids)
        return [{"team_id": e["team_id"], "team_name": teams[e["team_id"]].name if e["team_id"] in teams else None,
                 "clinicians": [names.get(c) for c in teams[e["team_id"]].clinician_ids] if e["team_id"] in teams
                 else [], "enrolled_at": e["enrolled_at"], "consent": e.get("consent") or "admin"}
                for e in enrolments]

    def leave_care_team(self, patient_id: str, team_id: str) -> None:
        """The patient ends a team's access to their data (from its clinicians' very next request)."""
        if not self.teams.unenrol(team_id, patient_id, ended_by="patient"):
            raise NotFound("this team does not have access to your data")

    # Care teams: admins
    def create_team(self, name: str, *, request_key: str | None = None) -> CareTeam:
        """An admin creates a care team; with a ``request_key`` a retry finds the team the first attempt made."""
        return self.teams.create(name, derived_id("care_team", request_key) if request_key else None)

    def add_clinician(self, team_id: str, clinician_id: str) -> CareTeam:
        """An admin adds a clinician to a team."""
        clinician = self.users.by_id(clinician_id)
        if not clinician or clinician.role is not Role.CLINICIAN or not clinician.active:
            raise Invalid("not a clinician", errors={"clinician_id": ["not a clinician"]})
        team = self.teams.add_clinician(team_id, clinician_id)
        if not team:
            raise NotFound("no such team")
        return team

    def patients_of_team(self, team_id: str) -> list[str]:
        """The patients enrolled in a team (none for no such team): whose data its clinicians read."""
        return self.teams.patient_ids_of_teams([team_id])

    def patients_sharing_with(self, caregiver_id: str) -> list[str]:
        """The patients whose links with a caregiver are active (none for any other account): whose data the
        caregiver reads while their account is live."""
        return self.links.patient_ids_of(caregiver_id)

    def team_ids_of(self, clinician_id: str) -> list[str]:
        """The teams a clinician is on (none for any other account): whose patients' data they read."""
        return self.teams.team_ids_of(clinician_id)

    def remove_clinician(self, team_id: str, clinician_id: str) -> None:
        """An admin takes a clinician off a team: the team's patients drop off their panel at once."""
        team = self.teams.get(team_id)
        if team is None or clinician_id not in team.clinician_ids:
            raise NotFound("no such clinician on this team")
        self.teams.remove_clinician(team_id, clinician_id)

    def enrol(self, team_id: str, patient_id: str, *, by: str | None = None) -> None:
        """An admin enrols a patient in a team: the team's clinicians gain access, and the patient is told (a
        push, and the team in their list of who can see their data). Enrolling again a patient an admin
        enrolled in the last day (a retry) finishes what may not have followed the first attempt: the patient
        is told once either way."""
        if not self.teams.get(team_id):
            raise NotFound("no such team")
        patient = self.profiles.patient(patient_id)
        if patient.status == CLOSED:
            # After closure the care teams of the day keep the record; nobody new is given it (the patient can
            # neither be told nor leave the team).
            raise Conflict("this patient's account is closed: no other team can be given the record")
        if self.teams.enrol(team_id, patient_id, by=by, consent="admin") or self._enrolled_lately(team_id, patient_id):
            self.panel_rows.mark([patient_id], "enrolment", self.clock())
            # Each enrolment is told, a second one in a team the patient had left included.
            times = self.teams.enrolments_ended_in(team_id, patient_id)
            self._tell(patient, f"enrolment:{team_id}" + (f":{times}" if times else ""), self.clock())

    def _tell(self, person: Account, source_key: str, at: datetime) -> None:
        """Queue the push that tells ``person`` of something about themselves (an invitation, an enrolment, an
        offer), caused by ``source_key`` (once): not in their quiet hours, on the clock they live by now."""
        send_at, spread = outside_quiet_hours(NEWS_KIND, person.id, at, person.zone_history().zone_at(at),
                                              person.quiet_hours)
        self.outbox.schedule(source_key=source_key, recipient_user_id=person.id, patient_id=person.id,
                             kind=NEWS_KIND, send_at=send_at, spread=spread)

    def _enrolled_lately(self, team_id: str, patient_id: str) -> bool:
        """Whether an admin enrolled the patient in the team within the last day: a retry may find the
        enrolment made and its push not yet scheduled (scheduling it again makes nothing twice)."""
        enrolment = self.teams.enrolment(team_id, patient_id)
        return enrolment is not None and enrolment.get("consent") == "admin" and \
            self.clock() - enrolment["enrolled_at"] < RETRIED_WITHIN

    def unenrol(self, team_id: str, patient_id: str) -> None:
        """An admin takes a patient out of a team."""
        if not self.teams.unenrol(team_id, patient_id, ended_by="admin"):
            raise NotFound("the patient is not on this team")

    # Break-glass
    def emergency_access(self, clinician_id: str, patient_id: str, reason: str, minutes: int, *,
                         request_key: str | None = None) -> EmergencyAccess:
        """Read access to a patient outside one's teams, for at most the configured time, with a reason. The
        answer does not depend on whether ``patient_id`` is a patient's: a grant naming no patient opens
        nothing, and reading then answers 404 as for any id."""
        minutes = min(minutes, self.settings.break_glass_max_minutes)
        return self.emergency.grant(clinician_id, patient_id, reason, self.clock() + timedelta(minutes=minutes),
                                    derived_id("emergency_grant", request_key) if request_key else None)

    def emergency_grants_for(self, patient_id: str, limit: int = 200) -> list[EmergencyAccess]:
        return self.emergency.for_patient(patient_id, limit)
