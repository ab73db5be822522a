"""An account's life after sign-up: deactivation and reactivation by an admin, closure (asked for by the patient,
or an admin's deletion), and, when a closed patient's clinical record has been kept for its retention period,
deleting it.

Every request checks the account's state (companion.services.accounts.Accounts.require_live_session), so a
deactivated or closed account's tokens and web sessions stop working on their next use; the steps below end
them outright as well, and withdraw every notification not yet sent to (or about) the account.

What closing a patient's account deletes at once, what it keeps and why is :func:`closure_statement`: the
answer to the request, and the README's "Closing an account" section, say the same.
"""

from __future__ import annotations

import logging
from datetime import datetime

from companion.clock import Clock, now
from companion.domain.access import INVITATION_SETTLED, PATIENT_INACTIVE, RECIPIENT_INACTIVE, Role
from companion.domain.errors import Conflict, NotFound
from companion.domain.people import ACTIVE, CLOSED, DEACTIVATED, Account
from companion.services.accounts import Accounts, email_digest
from companion.services.care import caregiver_offer_source
from companion.services.item_failures import ItemFailures
from companion.services.reminders import mark_closed_missed
from companion.services.sessions import TensSessions
from companion.services.sync import Changes
from companion.services.tokens import TokenService
from companion.settings import Settings
from companion.store.stores import Stores

log = logging.getLogger(__name__)


def closure_statement(settings: Settings) -> dict:
    """What closing a patient's account deletes, what it keeps, for how long and why."""
    clinical_days = settings.clinical_retention.days
    audit_days = settings.audit_retention.days
    return {
        "deleted_now": [
            "your sign-in: email address, password and second factor (the account can never sign in again, and "
            "the email address can be used for a new account)",
            "your phones' push registrations, and every notification not yet sent to you or about you",
            "your reminders' upcoming occurrences, and any you could still answer when you closed the account (the "
            "reminders stop; the doses you answered or missed, and those whose time had passed unanswered, as "
            "missed, stay with your clinical record), and your library favourites",
            "caregivers' access (every link is revoked: they see nothing from their next request), the offers "
            "you made to caregivers and not yet accepted, and care-team invitations waiting for you",
            "paired home gateways (revoked: they can no longer upload), pairing codes, and every session",
        ],
        "kept": [
            {"what": "your clinical record: name and time zone, therapy plans, TENS session records and device "
                     "events, pain diary, mindfulness practice, your reminders (stopped) and the doses you answered "
                     "or missed, adherence, alerts, clinical notes, the history of "
                     "notifications and of who was given access (caregivers, care teams, emergency access)",
             "for_days": clinical_days,
             "why": "medical records must be kept for a period after care ends, and your care team's decisions "
                    "rest on them; your care team can still read it, nobody else can, and nothing new is added. "
                    "It is deleted when the period ends."},
            {"what": "the audit trail: who accessed your data and when, including this closure",
             "for_days": audit_days,
             "why": "the record of access to health data is kept for six years (HIPAA's retention of security "
                    "documentation) so that any access can be accounted for; each event is deleted when its "
                    "period ends."},
        ],
    }


class AccountLifecycle:
    def __init__(self, settings: Settings, stores: Stores, accounts: Accounts, tokens: TokenService,
                 clock: Clock = now, *, changes: Changes | None = None, sessions: TensSessions | None = None):
        self.settings = settings
        self.stores = stores
        self.users = stores.users
        self.accounts = accounts
        self.tokens = tokens
        self.clock = clock
        self.changes = changes or Changes(stores, clock)  # (the doses a closure marks missed take change numbers)
        self.sessions = sessions or TensSessions(stores, self.changes, clock)  # (placing again what a purge leaves)

    def _end_everything_running(self, account: Account, reason: str) -> None:
        """End the account's sessions and withdraw the notifications not yet sent to it (or, for a patient,
        about them): they are refused at their next use anyway, this makes it immediate."""
        self.tokens.end_every_session(account.id, reason)
        self.stores.web_sessions.end_for_user(account.id)
        self.stores.outbox.withdraw(reason=RECIPIENT_INACTIVE, recipient_user_id=account.id)
        if account.role is Role.PATIENT:
            self.stores.outbox.withdraw(reason=PATIENT_INACTIVE, patient_id=account.id)
        if account.role is Role.CLINICIAN:
            self.stores.emergency_grants.end_for_clinician(account.id, self.clock())

    def deactivate(self, user_id: str, *, by: str, reason: str) -> Account:
        """An admin suspends an account: it can no longer sign in, its sessions end, nothing more is pushed to
        it (nor, for a patient, about them, and their gateways are refused). Its data stays; caregivers and
        care teams keep reading it. Reversible with :meth:`reactivate`."""
        if user_id == by:
            raise Conflict("an admin cannot deactivate their own account")
        account = self.users.set_status(user_id, DEACTIVATED, self.clock(), reason)
        if account is None:
            raise NotFound("no such account")
        self._state_changed(account)
        self._end_everything_running(account, "account deactivated")
        return account

    def reactivate(self, user_id: str) -> Account:
        """An admin lifts a deactivation. The sessions it ended stay ended: the person signs in again."""
        account = self.users.set_status(user_id, ACTIVE, self.clock(), "reactivated")
        if account is None:
            raise NotFound("no such account")
        self._state_changed(account)
        return account

    def _state_changed(self, account: Account) -> None:
        """A patient's panel row says what state their account is in: it is computed again."""
        if account.is_patient:
            self.stores.panel_row_marks.mark([account.id], "account state", self.clock())

    def close(self, user_id: str, *, by: str) -> dict:
        """Close an account for good: the patient asked for it, or an admin deleted the account. Returns what
        was deleted and what is kept (for a patient, :func:`closure_statement`)."""
        account = self.users.by_id(user_id)
        if account is None:
            raise NotFound("no such account")
        # Closing an account that is closed already finishes what an interrupted closure left undone (every
        # step is idempotent); its closing time stays the first one.
        if account.role is Role.ADMIN and user_id == by:
            raise Conflict("an admin cannot delete their own account")
        at = self.clock()
        self._close(account, at)
        if account.role is Role.PATIENT:
            statement = closure_statement(self.settings)
        else:
            statement = {"deleted_now": ["sign-in, name, phones and every session; access to every patient"],
                         "kept": [{"what": "what this account did, in the audit trail", "for_days":
                                   self.settings.audit_retention.days, "why": "accountability for access to "
                                   "health data"}]}
        log.info("account closed", extra={"account_id": user_id, "role": account.role.value})
        closed = self.users.by_id(user_id)
        return {"closed_at": closed.status_changed_at if closed and closed.status == CLOSED else at, **statement}

    def _close(self, account: Account, at: datetime) -> None:
        if account.role is Role.PATIENT:
            self._close_patient(account, at)
        else:
            self._close_other(account, at)
        self.users.closure_done(account.id)

    def finish_closures(self) -> dict[str, int]:
        """Every few minutes: finish the closures a stopped process left half-done. Once an account is closed,
        its owner can no longer sign in to try again, and its phones, reminders and sessions must still go."""
        failures = ItemFailures("closures-finish")
        finished = failures.each(self.users.closures_unfinished(), self._finish_closure)
        if finished:
            log.warning("closures left unfinished were finished", extra={"accounts": finished})
        return {"finished": finished, "failed": len(failures)}

    def _finish_closure(self, account_id: str) -> bool:
        account = self.users.by_id(account_id)
        if account is None or account.status != CLOSED:  # deleted after its retention meanwhile
            return False
        self._close(account, self.clock())
        return True

    def _close_patient(self, patient: Account, at: datetime) -> None:
        stores = self.stores
        # Invitations are found by the email, which the closure erases: they go first (kept with the record,
        # and deleted with it, as the patient's).
        stores.care_invitations.close_open_for(email_digest(patient.email), at, erase_with=patient.id)
        for offer_id in stores.caregiver_invitations.withdraw_all_of(patient.id, at):
            stores.outbox.withdraw(reason=INVITATION_SETTLED, source_key=caregiver_offer_source(offer_id))
        # Every access others have ends before the account is closed: a closure that fails half-way leaves the
        # patient signed in to try again, never a caregiver or a gateway still reaching a closed record.
        for gateway_id in stores.gateways.revoke_all_for(patient.id):
            self.tokens.end_every_session(gateway_id, "patient account closed")
        stores.care_links.revoke_all(patient_id=patient.id)
        stores.emergency_grants.end_for_patient(patient.id, at)  # (and none opens the record from now on)
        # Then the closure itself: from this write on, nothing can sign in or be delivered.
        self.users.close(patient.id, at, keep_name=True)
        self._state_changed(patient)  # the panel shows the record as closed, asking nothing of anyone
        # Again once closed: an offer accepted while the links were revoked may have made one since (its
        # acceptance checks the account after making its link; one of the two sees the other).
        stores.care_links.revoke_all(patient_id=patient.id)
        self._end_everything_running(patient, "account closed")
        stores.push_tokens.delete_for_user(patient.id)
        # The reminders stop and what was still to come goes; the doses answered or missed are the dose history
        # the care team keeps with the record (adherence rests on it), deleted with it after its retention. A dose
        # whose window had closed by the closure, unanswered, is a missed dose whether or not the missed-marking
        # job (every few minutes, or later after an outage) had got to it: marked missed as that job marks it,
        # without its summary push (nothing goes to a closed account). One whose window was still open is
        # called off as for any reminder stopped then (companion.services.reminders.unplanned: the patient could
        # still have answered it, so nothing counts it missed) and goes with what was still to come. By the
        # first closing time, which a closure finished later keeps.
        closed = self.users.by_id(patient.id)
        closed_at = closed.status_changed_at if closed is not None and closed.status_changed_at else at
        stores.reminders.stop_all(patient.id, closed_at)
        mark_closed_missed(stores, self.changes, stores.occurrences.pending_closed_by(patient.id, closed_at), at)
        stores.occurrences.delete_unanswered(patient.id, still_open_at=closed_at)
        stores.today_rows.touch([patient.id])  # its reminders are stopped
        stores.favourites.delete_for_patient(patient.id)
        stores.pairing_codes.delete_for_patient(patient.id)

    def _close_other(self, account: Account, at: datetime) -> None:
        if account.role is Role.CAREGIVER:  # found by the email, which the closure erases: first
            self.stores.caregiver_invitations.close_open_for(email_digest(account.email), at)
        self.users.close(account.id, at, keep_name=False)
        self._end_everything_running(account, "account closed")
        self.stores.push_tokens.delete_for_user(account.id)
        if account.role is Role.CAREGIVER:
            self.stores.care_links.revoke_all(caregiver_id=account.id)
        if account.role is Role.CLINICIAN:
            self.stores.care_teams.remove_clinician_everywhere(account.id)

    def purge_expired_records(self) -> dict[str, int]:
        """Daily: delete the clinical record of each patient whose account was closed longer ago than
        ``COMPANION_CLINICAL_RETENTION_DAYS``, then the account itself. The audit trail keeps its own period."""
        cutoff = self.clock() - self.settings.clinical_retention
        # One record that cannot be deleted today is tried again tomorrow; it keeps no other past its time.
        failures = ItemFailures("records-retention")
        done = failures.each(self.users.closed_patients_before(cutoff), self._delete_record)
        if done:
            log.info("closed patients' records deleted after their retention", extra={"patients": done})
        return {"patients": done, "failed": len(failures)}

    def _delete_record(self, patient_id: str) -> bool:
        s = self.stores
        for store in (s.session_records, s.device_events, s.plans, s.reminders, s.occurrences, s.pain_entries,
                      s.favourites, s.practice, s.adherence_days, s.alerts, s.clinical_notes, s.outbox, s.devices,
                      s.pairing_codes, s.care_links, s.emergency_grants, s.gateways, s.care_invitations,
                      s.caregiver_invitations, s.session_conflicts, s.gateway_dead_letters, s.days_to_recompute, s.panel_rows,
                      s.panel_row_days, s.panel_row_marks, s.panel_entries, s.today_rows):
            store.delete_for_patient(patient_id)
        # The sessions nobody owns yet that may have been theirs are placed again for the other wearers (their
        # units' bindings now say "erased" for them), and nothing names them as a candidate or a deliverer.
        self.sessions.forget_wearer(patient_id)
        s.care_teams.delete_enrolments_of(patient_id)
        s.push_tokens.delete_for_user(patient_id)
        s.token_families.delete_for_user(patient_id)
        s.change_sequences.delete_for_patient(patient_id)
        # The account last: until it goes, a retry of this job finds the patient and finishes.
        self.users.delete(patient_id)
        return True
