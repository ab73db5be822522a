"""Administration: accounts (staff creation, look-up, deactivation, reactivation, deletion, password reset codes),
care teams (clinicians and patients in and out); a clinician's own patient list; time-boxed emergency
("break-glass") access. Admins see no health data."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from companion.api.auth import AccountSchema, valid_zone
from companion.domain.access import Role
from companion.http import auditing, services
from companion.http.idempotency import by_role_only, idempotent, request_key
from companion.http.paging import LINK_HEADER, cursor_field, next_field, offset_page
from companion.http.problems import conflict_doc
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, current_actor
from companion.services.accounts import STAFF_ROLES

blp = Blueprint("admin", __name__, url_prefix="/api/v1", description="Administration and care teams")


class StaffSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=12, max=200))
    display_name = text(100, required=True, min_len=1)
    role = fields.String(required=True, validate=validate.OneOf(STAFF_ROLES), metadata={
        "description": "a clinician or an admin. Never a caregiver nor a patient: they sign up themselves "
                       "(`POST /auth/signup`), with the code mailed to their email, since a caregiver's account "
                       "accepts the offers patients made to that email"})
    time_zone = fields.String(load_default="UTC", validate=[validate.Length(max=64), valid_zone])


class TeamCreateSchema(StrictSchema):
    name = text(100, required=True, min_len=1)


class TeamSchema(Schema):
    id = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    clinician_ids = fields.List(fields.String(), dump_only=True)


class TeamMemberSchema(StrictSchema):
    clinician_id = text(64, required=True, min_len=1)


class EnrolSchema(StrictSchema):
    patient_id = text(64, required=True, min_len=1)


class PatientRefSchema(Schema):
    patient_id = fields.String(attribute="id")
    display_name = fields.String()
    time_zone = fields.String()


class PatientRefListSchema(Schema):
    items = fields.List(fields.Nested(PatientRefSchema), required=True)


class EmergencySchema(StrictSchema):
    patient_id = text(64, required=True, min_len=1)
    reason = text(1000, required=True, min_len=10,
                  metadata={"description": "why access is needed now; kept in the audit trail"})
    minutes = fields.Integer(load_default=30, validate=validate.Range(min=5, max=60))


class EmergencyGrantSchema(Schema):
    id = fields.String()
    patient_id = fields.String()
    expires_at = fields.DateTime()


class AccountArgs(StrictSchema):
    email = fields.Email(load_default=None, validate=validate.Length(max=254))
    role = fields.String(load_default=None, validate=validate.OneOf([r.value for r in Role if r is not Role.GATEWAY]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = cursor_field()


class AccountListSchema(Schema):
    items = fields.List(fields.Nested(AccountSchema), required=True)
    next = next_field()


class DeactivationSchema(StrictSchema):
    reason = text(500, required=True, min_len=3, metadata={"description": "why; kept with the account and audited"})


class ResetCodeSchema(Schema):
    code = fields.String(metadata={"description": "hand it to the account's owner; it is shown once"})
    expires_at = fields.DateTime()


class KeptSchema(Schema):
    what = fields.String()
    for_days = fields.Integer()
    why = fields.String()


class ClosureSchema(Schema):
    closed_at = fields.DateTime()
    deleted_now = fields.List(fields.String())
    kept = fields.List(fields.Nested(KeptSchema))


def _note_account(user_id: str, action: str) -> None:
    # An act on an account is recorded against it (for a patient, it appears in their own access history).
    auditing.note(patient_ids=[user_id], resource="account", action=action, resource_ids=[user_id])


def note_team_clinician(team_id: str, clinician_id: str, action: str, resource: str = "team_clinician") -> None:
    """Record that a clinician starts (``C``) or stops (``D``) reading a team's patients' data, against each
    patient enrolled (a large team's, as several events: companion.http.auditing.PATIENTS_PER_EVENT), as an
    enrolment is: an admin changing the team, the clinician leaving it, their account deactivated or closed.
    ``resource``: what the act was, when it is not a change of the team (an admin's act that opens the clinician's
    account to someone else, :func:`_note_opening`)."""
    auditing.note(patient_ids=services().care.patients_of_team(team_id), resource=resource, action=action,
                  resource_ids=[team_id, clinician_id])


def _note_teams_of(user_id: str, action: str, resource: str = "team_clinician") -> None:
    # A clinician's account deactivated or closed ends their access to every patient of their teams (reactivated,
    # gives it back): recorded against each, as a change of a team's clinicians is. Other accounts are on no team.
    for team_id in services().care.team_ids_of(user_id):
        note_team_clinician(team_id, user_id, action, resource)


def _note_links_of(user_id: str, action: str, resource: str = "care_link") -> None:
    # A caregiver's account deactivated stops their access to every patient sharing with them, reactivated gives it
    # back (the links never ended), closed revokes the links: recorded against each of those patients, naming the
    # caregiver (companion.services.audit_subjects). Other accounts have no links as a caregiver.
    patient_ids = services().care.patients_sharing_with(user_id)
    if patient_ids:
        auditing.note(patient_ids=patient_ids, resource=resource, action=action, resource_ids=[user_id])


def _note_opening(user_id: str, resource: str, action: str) -> None:
    """Record an admin's act that lets whoever holds what it gave into an account (a reset code made, the
    authenticator cleared), against the owner and against every patient whose data the account reads: a linked
    caregiver's (each patient sharing with them) or a clinician's (each patient of their teams). What is read
    through the account from then on is recorded as its owner's own reading, so this is where those patients see
    that an admin could have been the one reading."""
    auditing.note(patient_ids=[user_id], resource=resource, action=action, resource_ids=[user_id])
    _note_teams_of(user_id, action, resource)
    _note_links_of(user_id, action, resource)


@blp.route("/admin/users")
class StaffAccounts(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(AccountArgs, location="query")
    @blp.response(200, AccountListSchema, headers=LINK_HEADER)
    @blp.doc(operationId="list_accounts")
    def get(self, args):
        """Find accounts by exact email and/or role (to act on them)."""
        items, following = offset_page(
            lambda count: services().accounts.search(email=args["email"], role=args["role"], limit=count),
            args["cursor"], args["limit"])
        # Patients' names and addresses are read: each patient listed finds it in their access history.
        auditing.note(patient_ids=[a.id for a in items if a.is_patient], resource="account", action="search",
                      resource_ids=[a.id for a in items])
        return {"items": items, "next": following}

    @allow(Role.ADMIN)
    @idempotent(access=by_role_only, conflict="an account with this email already exists")
    @blp.arguments(StaffSchema)
    @blp.response(201, AccountSchema)
    @blp.doc(operationId="create_staff_account")
    def post(self, body):
        """Create a clinician's or an admin's account, live at once with the password given (its `Location` is
        where an admin deletes it). Caregivers and patients sign up themselves (`POST /auth/signup`, finished with
        the code mailed to the email): a caregiver accepts the offers made to their email, and an account made
        here for that email, with a password of the admin's choosing, would accept one and read the patient's
        record without the email's owner ever saying yes (422 for those roles)."""
        account = services().accounts.create_staff(**body, request_key=request_key())
        return account, 201, {"Location": f"{request.path}/{account.id}"}


@blp.route("/admin/users/<user_id>")
class AccountView(MethodView):
    @allow(Role.ADMIN)
    @blp.response(200, ClosureSchema)
    @blp.alt_response(409, **conflict_doc("an admin cannot delete their own account"))
    @blp.doc(operationId="delete_account")
    def delete(self, user_id):
        """Delete an account: it is closed for good (sign-in, phones and sessions erased, every access it held
        or granted ended). A patient's account is closed as if they had asked: the answer says what was
        deleted, and what is kept, for how long and why. Deleting a closed account again finishes an
        interrupted closure. A clinician's deletion is audited against each patient of their teams (it is in
        their access log, as taking the clinician off each team is); a caregiver's, against each patient sharing
        with them (as ending the link is)."""
        _note_account(user_id, "D")
        # Before the closure takes the clinician off their teams and revokes the caregiver's links.
        _note_teams_of(user_id, "D")
        _note_links_of(user_id, "D")
        return services().lifecycle.close(user_id, by=current_actor().id)


@blp.route("/admin/users/<user_id>/deactivation")
class Deactivation(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(DeactivationSchema)
    @blp.response(200, AccountSchema)
    @blp.alt_response(409, **conflict_doc("an admin cannot deactivate their own account"))
    @blp.doc(operationId="deactivate_account")
    def post(self, body, user_id):
        """Deactivate an account: from its next request it cannot sign in or use any session; nothing is pushed
        to it (nor, for a patient, about them, and their gateways are refused). Its data stays. Reversible. A
        clinician's deactivation is audited against each patient of their teams, a caregiver's against each
        patient sharing with them (it is in their access log)."""
        _note_account(user_id, "U")
        _note_teams_of(user_id, "D")
        _note_links_of(user_id, "D")
        return services().lifecycle.deactivate(user_id, by=current_actor().id, reason=body["reason"])

    @allow(Role.ADMIN)
    @blp.response(200, AccountSchema)
    @blp.doc(operationId="reactivate_account")
    def delete(self, user_id):
        """Reactivate an account (its old sessions stay ended: its owner signs in again). A clinician's
        reactivation is audited against each patient of their teams, whose data they read again; a caregiver's
        against each patient still sharing with them."""
        _note_account(user_id, "U")
        _note_teams_of(user_id, "C")
        _note_links_of(user_id, "C")
        return services().lifecycle.reactivate(user_id)


@blp.route("/admin/users/<user_id>/password-reset")
class PasswordResetCode(MethodView):
    @allow(Role.ADMIN)
    @blp.response(201, ResetCodeSchema)
    @blp.doc(operationId="issue_password_reset_code")
    def post(self, user_id):
        """Issue a one-time password reset code (24 hours) for the account's owner, who sets a new password with
        it (``POST /auth/password-reset``). Issuing another replaces it. Whoever holds the code can take the
        account over, so the act is in the owner's own access log (for a patient: ``GET
        /patients/{id}/access-log``) as a `password_reset_code` created by this admin, and the reset made with it
        as a `password` changed; for a caregiver's account, in the access log of each patient sharing with them
        (naming the caregiver), for a clinician's, of each patient of their teams (naming the clinician and the
        team), whose data whoever holds the code would read as the account's owner. The owner is also told by
        email that a code was issued (never the code)."""
        # Recorded as what it is (not as any change of the account): the owner's access log, and those of the
        # patients the account reads, say an admin made a code that opens it.
        _note_opening(user_id, "password_reset_code", "C")
        code, expires_at = services().accounts.issue_password_reset(user_id)
        return {"code": code, "expires_at": expires_at}


@blp.route("/admin/users/<user_id>/mfa")
class Authenticator(MethodView):
    @allow(Role.ADMIN)
    @blp.response(200, AccountSchema)
    @blp.alt_response(409, **conflict_doc("an admin cannot clear their own authenticator"))
    @blp.doc(operationId="clear_authenticator")
    def delete(self, user_id):
        """Clear the account's authenticator (TOTP), when its owner lost the phone that held it: every session
        of the account ends, and its owner enrols a new one at the next sign-in (required for staff where
        `COMPANION_STAFF_MFA=required`). Check who is asking before doing this: it is the second factor. The owner
        is told by email. The act is in the owner's access log as an `authenticator` deleted by this admin, and,
        like a reset code, in the access log of each patient whose data the account reads (a caregiver's patients
        sharing with them, a clinician's patients of their teams)."""
        _note_opening(user_id, "authenticator", "D")
        return services().accounts.clear_mfa(user_id, by=current_actor().id)


@blp.route("/admin/teams")
class Teams(MethodView):
    @allow(Role.ADMIN)
    @idempotent(access=by_role_only)
    @blp.arguments(TeamCreateSchema)
    @blp.response(201, TeamSchema)
    @blp.doc(operationId="create_team")
    def post(self, body):
        """Create a care team."""
        return services().care.create_team(body["name"], request_key=request_key())


@blp.route("/admin/teams/<team_id>/clinicians")
class TeamClinicians(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(TeamMemberSchema)
    @blp.response(200, TeamSchema)
    @blp.doc(operationId="add_team_clinician")
    def post(self, body, team_id):
        """Add a clinician to a care team: they read the data of every patient of the team from then on. The act
        is audited against each of those patients (it is in their access log)."""
        note_team_clinician(team_id, body["clinician_id"], "C")
        return services().care.add_clinician(team_id, body["clinician_id"])


@blp.route("/admin/teams/<team_id>/clinicians/<clinician_id>")
class TeamClinician(MethodView):
    @allow(Role.ADMIN)
    @blp.response(204)
    @blp.doc(operationId="remove_team_clinician")
    def delete(self, team_id, clinician_id):
        """Take a clinician off a care team: its patients drop off their panel from their next request. The act is
        audited against each of the team's patients."""
        note_team_clinician(team_id, clinician_id, "D")
        services().care.remove_clinician(team_id, clinician_id)


@blp.route("/admin/teams/<team_id>/patients")
class TeamPatients(MethodView):
    @allow(Role.ADMIN)
    @blp.arguments(EnrolSchema)
    @blp.response(204)
    @blp.alt_response(409, **conflict_doc("the patient's account is closed: no other team can be given the record"))
    @blp.doc(operationId="enrol_team_patient")
    def post(self, body, team_id):
        """Enrol a patient in a care team: the team's clinicians gain access. The act is audited and the patient
        is told (a push, and the team appears in their list of who can see their data, which they can leave)."""
        auditing.note(patient_ids=[body["patient_id"]], resource="team_enrolment", action="C",
                      resource_ids=[team_id])
        services().care.enrol(team_id, body["patient_id"], by=current_actor().id)


@blp.route("/admin/teams/<team_id>/patients/<member_id>")
class TeamPatient(MethodView):
    @allow(Role.ADMIN)
    @blp.response(204)
    @blp.doc(operationId="remove_team_patient")
    def delete(self, team_id, member_id):
        """Take a patient out of a care team: its clinicians lose access from their next request."""
        auditing.note(patient_ids=[member_id], resource="team_enrolment", action="D", resource_ids=[team_id])
        services().care.unenrol(team_id, member_id)


@blp.route("/clinician/patients")
class ClinicianPatients(MethodView):
    @allow(Role.CLINICIAN)
    @blp.response(200, PatientRefListSchema)
    @blp.doc(operationId="list_clinician_patients")
    def get(self):
        """The patients on the calling clinician's care teams."""
        patients = services().care.patients_of(current_actor().id)
        ids = sorted(p.id for p in patients)
        auditing.note(patient_ids=ids, resource="patient", action="search", resource_ids=ids)
        return {"items": patients}


@blp.route("/emergency-access")
class EmergencyAccess(MethodView):
    @allow(Role.CLINICIAN)
    @idempotent(access=by_role_only)  # any patient's id, by design: the grant is the reasoned, audited way in
    @blp.arguments(EmergencySchema)
    @blp.response(201, EmergencyGrantSchema)
    @blp.doc(operationId="grant_emergency_access")
    def post(self, body):
        """Break-glass: read access to a patient outside one's teams, for at most an hour, with a reason. The answer
        is the same whether or not the id is a patient's."""
        patient_id = body["patient_id"]
        auditing.note(patient_ids=[patient_id], resource="patient", action="emergency", resource_ids=[patient_id])
        return services().care.emergency_access(current_actor().id, patient_id, body["reason"], body["minutes"],
                                                request_key=request_key())
