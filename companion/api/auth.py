"""Sign-up (confirmed by a code sent by email), login, MFA, token refresh, logout, password change and reset."""

from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from marshmallow.exceptions import ValidationError

from companion.api import examples
from companion.domain.access import Role
from companion.domain.localtime import is_known_zone
from companion.http import auditing, services
from companion.http.problems import conflict_doc
from companion.http.schemas import Pattern, StrictSchema, text
from companion.http.security import allow, client_address, current_actor, public
from companion.services.accounts import PASSWORD_LENGTH, SELF_SERVICE_ROLES

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and sessions")


def valid_zone(value: str) -> None:
    if not is_known_zone(value):
        raise ValidationError("not a known IANA time zone (e.g. Europe/London)")


class SignUpSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(*PASSWORD_LENGTH))
    display_name = text(100, required=True, min_len=1)
    role = fields.String(load_default="patient", validate=validate.OneOf(SELF_SERVICE_ROLES))
    time_zone = fields.String(load_default="UTC", validate=[validate.Length(max=64), valid_zone])


DEVICE_KEY = ("the key the app was given by its last sign-in (`device_key` in the answer), kept on the device; "
              "sent back at the next sign-in, it lets the owner in while someone guesses the password, elsewhere or "
              "on the same network (no delay for a device that signed in before). A key that is wrong, another account's, or "
              "older than the account's last password change or reset counts as none: never an error")


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=200))
    device_key = fields.String(load_default=None, load_only=True, validate=validate.Length(max=1000),
                               metadata={"description": DEVICE_KEY})


class TokensSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    mfa_required = fields.Boolean()
    mfa_token = fields.String()
    mfa_enrolled = fields.Boolean()
    device_key = fields.String(metadata={
        "description": "after a sign-in with the password (`/auth/login`) or a change of it (`/auth/password`): "
                       "a new device key, for the app to keep (in the platform's secure storage, in place of any "
                       "earlier one) and send with its next sign-in. It is worth nothing without the password; a "
                       "password change or reset ends it (the change answers the changing device a new one)"})


class RefreshSchema(StrictSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=10, max=200))


class MfaSchema(StrictSchema):
    mfa_token = fields.String(required=True, validate=validate.Length(max=2000))
    code = fields.String(required=True, validate=Pattern(r"^\d{6}$"))


class MfaStartSchema(StrictSchema):
    mfa_token = fields.String(required=True, validate=validate.Length(max=2000))


class MfaEnrolmentSchema(Schema):
    secret = fields.String()
    otpauth_uri = fields.String()


class AccountSchema(Schema):
    class Meta:
        every_field_present = True  # required in the OpenAPI document (companion.http.openapi)

    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    role = fields.String(attribute="role.value", dump_only=True)
    display_name = fields.String(dump_only=True)
    time_zone = fields.String(dump_only=True)
    mfa_enabled = fields.Boolean(dump_only=True)
    status = fields.String(dump_only=True, metadata={"description": "active, deactivated or closed"})
    created_at = fields.DateTime(dump_only=True)


class SignUpAcceptedSchema(Schema):
    detail = fields.String()


class SignUpConfirmSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    code = fields.String(required=True, validate=validate.Length(min=6, max=30),
                         metadata={"description": "the code sent by email: 12 letters and digits, shown as XXXX-XXXX-XXXX (dashes "
                                                  "and spaces are ignored)"})
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=200), metadata={
        "description": "the password chosen when signing up: it finds that sign-up request, and the account is made "
                       "from it (name, role, zone) with that password. Any code mailed to the email in the last 30 "
                       "minutes finishes it, whichever request sent the mail; a request by someone else for the "
                       "same email is kept apart and cannot choose the password"})


SIGNUP_ACCEPTED = ("If this email can be used for a new account, a code to finish signing up is sent to it; if it "
                   "got three sign-up emails in the last 15 minutes, no more is sent: use the newest code it got. "
                   "A code works for 30 minutes.")


@blp.route("/signup")
class SignUp(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(SignUpSchema)
    @blp.response(202, SignUpAcceptedSchema)
    @blp.doc(operationId="sign_up")
    def post(self, body):
        """Ask for a patient or caregiver account. The answer is the same whether or not the email has an
        account already: the mailbox gets a code to finish signing up (``/auth/signup/confirm``), or a note that
        an account exists. Clinicians and admins are created by an admin.

        One email gets at most 3 sign-up mails in any 15 minutes, whoever asks; past that the answer is the same
        and nothing is sent, and the request is kept all the same: finish it with the newest code the mailbox
        got (it works for at least 15 minutes more). Each request is kept apart for 30 minutes, so a request by
        someone else for the same email neither replaces this one nor holds it up. 429 only for asking too often
        from one network (10 an hour; for one email, 3 an hour, then after 1, 2, 4 ... minutes)."""
        services().accounts.request_signup(**body, address=client_address(),
                                           languages=tuple(tag for tag, _ in request.accept_languages)[:3])
        return {"detail": SIGNUP_ACCEPTED}


@blp.route("/signup/confirm")
class SignUpConfirm(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(SignUpConfirmSchema)
    @blp.response(201, AccountSchema)
    @blp.doc(operationId="confirm_sign_up")
    def post(self, body):
        """Finish signing up with a code sent to the email and the password chosen: the account is made from the
        request with that password, sign in with it. Any code mailed to the email in its 30 minutes works, whichever
        request sent the mail (use the newest). A wrong or expired code, or a password no request for the email
        within 30 minutes had, gets the same 401; a wrong password leaves the code for a retry."""
        return services().accounts.confirm_signup(email=body["email"], code=body["code"], password=body["password"],
                                                  address=client_address())


@blp.route("/login")
class Login(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(LoginSchema, example=examples.LOGIN)
    @blp.response(200, TokensSchema, example=examples.TOKENS)
    @blp.doc(operationId="log_in")
    def post(self, body):
        """Exchange email and password for tokens (or, for staff with MFA, an MFA challenge).

        Throttled across all workers: per address (60 a minute), per account and address (a growing delay after
        5 failures), and per account from anywhere (a growing delay, at most a minute, after 10 failures in 15
        minutes). A device that signed in before (it sends the ``device_key`` it was given, with fewer than 10
        failures in the last hour) is exempt from both delays, an address the account signed in from recently
        from the account-wide one: someone who knows only the email, elsewhere or on the owner's network,
        cannot keep the owner out of a device they used before. A new device at a new address waits while someone keeps guessing (each wait at most a minute;
        at most a minute after they stop). Never a lock.
        """
        return services().accounts.login(email=body["email"], password=body["password"], ip=client_address(),
                                         device_key=body["device_key"])


@blp.route("/mfa")
class Mfa(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaSchema)
    @blp.response(200, TokensSchema)
    @blp.doc(operationId="log_in_with_second_factor")
    def post(self, body):
        """Complete a staff login with a TOTP code (each code works once; after 3 wrong codes each try waits
        longer, up to 5 minutes)."""
        return services().accounts.complete_mfa(body["mfa_token"], body["code"], address=client_address())


ENROLLED = "the account has an authenticator already: sign in with a code from it (`/auth/mfa`)"


@blp.route("/mfa/enrol")
class MfaEnrol(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaStartSchema)
    @blp.response(200, MfaEnrolmentSchema)
    @blp.alt_response(409, **conflict_doc(ENROLLED))
    @blp.doc(operationId="start_mfa_enrolment")
    def post(self, body):
        """Start TOTP enrolment (staff): returns the secret and an otpauth:// URI for an authenticator app."""
        return services().accounts.begin_enrolment_with(body["mfa_token"])


@blp.route("/mfa/confirm")
class MfaConfirm(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaSchema)
    @blp.response(200, TokensSchema)
    @blp.alt_response(409, **conflict_doc(ENROLLED))
    @blp.doc(operationId="confirm_mfa_enrolment")
    def post(self, body):
        """Confirm TOTP enrolment with a first code; returns a full session."""
        return services().accounts.confirm_totp_enrolment(body["mfa_token"], body["code"], address=client_address())


@blp.route("/refresh")
class Refresh(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokensSchema)
    @blp.doc(operationId="refresh_tokens")
    def post(self, body):
        """Rotate a refresh token. Reusing a used one revokes the whole session family, except a retry within
        10 seconds (its answer was lost), which gets the same new pair. A session ends 30 days (staff: 12 hours)
        after its login however often it is refreshed."""
        return services().accounts.refresh(body["refresh_token"], address=client_address())


@blp.route("/logout")
class Logout(MethodView):
    @allow(*Role)
    @blp.response(204)
    @blp.doc(operationId="log_out")
    def post(self):
        """End this session: its access and refresh tokens stop working at once."""
        services().tokens.end_session(current_actor())


class PasswordChangeSchema(StrictSchema):
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200))
    new_password = fields.String(required=True, load_only=True, validate=validate.Length(*PASSWORD_LENGTH))
    install_id = fields.String(load_default=None, validate=Pattern(r"[A-Za-z0-9._:-]{1,100}"), metadata={
        "description": "the install of the app changing the password (as in PUT /me/push-tokens/{install_id}): "
                       "its phone goes on receiving notifications under the new session. Without it no phone "
                       "does: the app registers its token again with the new tokens"})


@blp.route("/password")
class Password(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN, Role.ADMIN)
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, TokensSchema)
    @blp.doc(operationId="change_password")
    def post(self, body):
        """Change one's password (needs the current one). Every other session of the account ends; this one goes
        on with the new tokens. Every phone stops receiving notifications but the install named by
        ``install_id``, if it was registered under this session; without it, the app registers its token
        again (``PUT /me/push-tokens/{install_id}``) with the new tokens. The change ends every device key,
        this device's too: the answer's ``device_key`` replaces it (keep it, as after a sign-in). The account's
        owner is told by email (when, and whom to contact if it was not them).

        The current password is checked under sign-in's throttle, but this session stands in for a device key:
        someone guessing the password elsewhere does not hold up the change (429 only after 10 wrong current
        passwords in an hour in this session, or too many from this address)."""
        actor = current_actor()
        return services().accounts.change_password(actor.id, body["current_password"], body["new_password"],
                                                   address=client_address(), session=actor.family,
                                                   install_id=body["install_id"])


class PasswordResetSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    code = fields.String(required=True, validate=validate.Length(min=6, max=30),
                         metadata={"description": "the one-time code an admin issued: 12 letters and digits, shown as XXXX-XXXX-XXXX (dashes "
                                                  "and spaces are ignored)"})
    new_password = fields.String(required=True, load_only=True, validate=validate.Length(*PASSWORD_LENGTH))


@blp.route("/password-reset")
class PasswordReset(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(PasswordResetSchema)
    @blp.response(204)
    @blp.doc(operationId="reset_password")
    def post(self, body):
        """Set a new password with a one-time code an admin issued (valid 24 hours). Every session of the
        account ends. One answer for a wrong email, a wrong code or an expired one. A reset made is in the
        account owner's access log (whoever used the code, it was not a signed-in session of theirs), and the owner
        is told by email."""
        user_id = services().accounts.reset_password(email=body["email"], code=body["code"],
                                                     new_password=body["new_password"], address=client_address())
        auditing.note(patient_ids=[user_id], resource="password", action="U", resource_ids=[user_id])


@blp.route("/me")
class Me(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN, Role.ADMIN)
    @blp.response(200, AccountSchema)
    @blp.doc(operationId="get_my_account")
    def get(self):
        """The caller's own account."""
        return services().accounts.account(current_actor().id)
