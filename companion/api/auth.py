"""Sign-up, login, MFA, token refresh and logout."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from marshmallow.exceptions import ValidationError

from companion.domain.access import Role
from companion.http import services
from companion.http.schemas import StrictSchema, text
from companion.http.security import allow, client_address, current_actor, public
from companion.services.accounts import SELF_SERVICE_ROLES

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Accounts and sessions")


def valid_zone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError("not a known IANA time zone (e.g. Europe/London)") from exc


class SignUpSchema(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=10, max=200))
    display_name = text(100, required=True, min_len=1)
    role = fields.String(load_default="patient", validate=validate.OneOf(SELF_SERVICE_ROLES))
    time_zone = fields.String(load_default="UTC", validate=[validate.Length(max=64), valid_zone])


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=200))


class TokensSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    mfa_required = fields.Boolean()
    mfa_token = fields.String()
    mfa_enrolled = fields.Boolean()


class RefreshSchema(StrictSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=10, max=200))


class MfaSchema(StrictSchema):
    mfa_token = fields.String(required=True, validate=validate.Length(max=2000))
    code = fields.String(required=True, validate=validate.Regexp(r"^\d{6}$"))


class MfaStartSchema(StrictSchema):
    mfa_token = fields.String(required=True, validate=validate.Length(max=2000))


class MfaEnrolmentSchema(Schema):
    secret = fields.String()
    otpauth_uri = fields.String()


class AccountSchema(Schema):
    id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    role = fields.String(attribute="role.value", dump_only=True)
    display_name = fields.String(dump_only=True)
    time_zone = fields.String(dump_only=True)
    mfa_enabled = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


@blp.route("/signup")
class SignUp(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(SignUpSchema)
    @blp.response(201, AccountSchema)
    def post(self, body):
        """Create a patient or caregiver account. Clinicians and admins are created by an admin."""
        return services().accounts.sign_up(**body)


@blp.route("/login")
class Login(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(LoginSchema)
    @blp.response(200, TokensSchema)
    def post(self, body):
        """Exchange email and password for tokens (or, for staff with MFA, an MFA challenge).

        Throttled per address (60/min) and per account (10 failures in 15 min), across all workers.
        """
        return services().accounts.login(email=body["email"], password=body["password"], ip=client_address())


@blp.route("/mfa")
class Mfa(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaSchema)
    @blp.response(200, TokensSchema)
    def post(self, body):
        """Complete a staff login with a TOTP code (each code works once)."""
        return services().accounts.complete_mfa(body["mfa_token"], body["code"])


@blp.route("/mfa/enrol")
class MfaEnrol(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaStartSchema)
    @blp.response(200, MfaEnrolmentSchema)
    def post(self, body):
        """Start TOTP enrolment (staff): returns the secret and an otpauth:// URI for an authenticator app."""
        return services().accounts.begin_enrolment_with(body["mfa_token"])


@blp.route("/mfa/confirm")
class MfaConfirm(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(MfaSchema)
    @blp.response(200, TokensSchema)
    def post(self, body):
        """Confirm TOTP enrolment with a first code; returns a full session."""
        return services().accounts.confirm_totp_enrolment(body["mfa_token"], body["code"])


@blp.route("/refresh")
class Refresh(MethodView):
    @public
    @blp.doc(security=[])
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokensSchema)
    def post(self, body):
        """Rotate a refresh token. Reusing a used one revokes the whole session family."""
        return services().tokens.refresh(body["refresh_token"])


@blp.route("/logout")
class Logout(MethodView):
    @allow(*Role)
    @blp.response(204)
    def post(self):
        """End this session: its access and refresh tokens stop working at once."""
        services().tokens.end_session(current_actor())


class PasswordChangeSchema(StrictSchema):
    current_password = fields.String(required=True, load_only=True, validate=validate.Length(max=200))
    new_password = fields.String(required=True, load_only=True, validate=validate.Length(min=10, max=200))


@blp.route("/password")
class Password(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN, Role.ADMIN)
    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, TokensSchema)
    def post(self, body):
        """Change one's password (needs the current one). Every other session of the account ends."""
        return services().accounts.change_password(current_actor().id, body["current_password"],
                                                   body["new_password"])


@blp.route("/me")
class Me(MethodView):
    @allow(Role.PATIENT, Role.CAREGIVER, Role.CLINICIAN, Role.ADMIN)
    @blp.response(200, AccountSchema)
    def get(self):
        """The caller's own account."""
        return services().accounts.account(current_actor().id)
