"""Accounts: sign-up, login with throttling, MFA, password changes, and the clinician pages' sessions."""

from __future__ import annotations

import logging

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo.errors import DuplicateKeyError

from companion.clock import Clock, now, to_millis
from companion.domain.access import Actor, Role
from companion.domain.errors import Conflict, Invalid, NotFound, TooManyRequests, Unauthorized
from companion.domain.people import Account
from companion.services.tokens import TokenService, hash_token
from companion.settings import Settings
from companion.store.stores import Stores

log = logging.getLogger(__name__)

STAFF = {Role.CLINICIAN, Role.ADMIN}
SELF_SERVICE_ROLES = (Role.PATIENT.value, Role.CAREGIVER.value)
STAFF_ROLES = (Role.CLINICIAN.value, Role.ADMIN.value, Role.CAREGIVER.value)
MAX_CODE_FAILURES = 5


class Passwords:
    """argon2id hashing. The cost comes from settings: production uses argon2-cffi's defaults
    (64 MiB, 3 passes); the test suite lowers it so that building test users stays fast."""

    def __init__(self, memory_kib: int, time_cost: int):
        self.hasher = PasswordHasher(memory_cost=memory_kib, time_cost=time_cost)
        # Verified against when the email is unknown, so a miss costs the same as a wrong password.
        self.dummy_hash = self.hasher.hash("companion-dummy-password")

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def normalise_email(email: str) -> str:
    return email.strip().lower()


class Accounts:
    def __init__(self, settings: Settings, stores: Stores, tokens: TokenService, clock: Clock = now):
        self.s = settings
        self.users = stores.users
        self.counters = stores.counters
        self.web_sessions = stores.web_sessions
        self.tokens = tokens
        self.clock = clock
        self.passwords = Passwords(settings.password_memory_kib, settings.password_time_cost)

    def sign_up(self, *, email: str, password: str, display_name: str, role: str, time_zone: str) -> Account:
        """Create an account. A patient's zone history starts with the zone they sign up in."""
        extra = {}
        if role == Role.PATIENT.value:
            extra = {"time_zone_history": [{"zone": time_zone, "effective_from": self.clock(), "previous": None}],
                     "caregiver_alert_delay_min": 60}
        try:
            return self.users.create(email=normalise_email(email), password_hash=self.passwords.hash(password),
                                     role=role, display_name=display_name, time_zone=time_zone, extra=extra)
        except DuplicateKeyError as exc:
            raise Conflict("an account with this email already exists") from exc

    def account(self, user_id: str) -> Account:
        """The caller's own account."""
        account = self.users.by_id(user_id)
        if account is None:
            raise NotFound("no such account")
        return account

    def by_email(self, email: str) -> Account | None:
        return self.users.by_email(normalise_email(email))

    def _throttle(self, email: str, ip: str) -> None:
        ip_count, ip_wait = self.counters.hit(f"login-ip:{ip}", 60)
        if ip_count > self.s.login_ip_limit_per_min:
            raise TooManyRequests("too many login attempts from this address", retry_after_s=ip_wait)
        failures, wait = self.counters.peek(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
        if failures >= self.s.login_account_failures:
            raise TooManyRequests("too many failed logins for this account; try again later",
                                  retry_after_s=wait)

    def authenticate(self, *, email: str, password: str, ip: str) -> Account:
        """Check email and password under the shared throttles; the account, or Unauthorized.

        Used by the API login and by the clinician pages' login alike, so both count failures together.
        """
        email = normalise_email(email)
        self._throttle(email, ip)
        user = self.users.by_email(email)
        ok = self.passwords.matches(user.password_hash if user else self.passwords.dummy_hash, password) \
            and user is not None
        if not ok:
            self.counters.hit(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
            log.info("login failed", extra={"account": hash_token(email)[:12]})
            raise Unauthorized("email or password is wrong")
        self.counters.reset(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
        return user

    def needs_mfa(self, user: Account) -> bool:
        return user.role in STAFF and (user.mfa_enabled or self.s.staff_mfa_required)

    def login(self, *, email: str, password: str, ip: str) -> dict:
        """Tokens for the account, or for staff with MFA an MFA challenge."""
        user = self.authenticate(email=email, password=password, ip=ip)
        if self.needs_mfa(user):
            return {"mfa_required": True, "mfa_token": self.tokens.mfa_token(user.id, user.role.value),
                    "mfa_enrolled": user.mfa_enabled}
        return self.tokens.start_session(user.id, user.role.value)

    def verify_totp(self, user: Account, code: str) -> bool:
        """True for a valid code (±1 step) not used before; a replayed code is refused."""
        if not user.mfa_secret:
            return False
        totp = pyotp.TOTP(user.mfa_secret)
        for drift in (0, -1, 1):
            step = totp.timecode(self.clock()) + drift
            if pyotp.utils.strings_equal(totp.generate_otp(step), code):
                return self.users.claim_totp_step(user.id, step)
        return False

    def complete_mfa(self, mfa_token: str, code: str) -> dict:
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.users.by_id(claims["sub"])
        if not user or not user.mfa_enabled or not self.verify_totp(user, code):
            raise Unauthorized("invalid or expired code")
        return self.tokens.start_session(user.id, user.role.value)

    def begin_enrolment_with(self, mfa_token: str) -> dict:
        """Start TOTP enrolment for the account an MFA token names: a new secret and its otpauth URI."""
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.account(claims["sub"])
        secret = pyotp.random_base32()
        if user.mfa_enabled or not self.users.start_mfa_enrolment(user.id, secret):
            raise Conflict("two-factor authentication is already enabled")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="Companion")
        return {"secret": secret, "otpauth_uri": uri}

    def confirm_totp_enrolment(self, mfa_token: str, code: str) -> dict:
        """Enable TOTP with a first valid code; the caller leaves with a full session."""
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.users.by_id(claims["sub"])
        if not user or user.mfa_enabled:
            raise Conflict("two-factor authentication is already enabled")
        if not user.mfa_secret or not self.verify_totp(user, code):
            raise Invalid("the code does not match", errors={"code": ["does not match"]})
        if not self.users.enable_mfa(user.id, user.mfa_secret):
            raise Conflict("two-factor authentication is already enabled")
        return self.tokens.start_session(user.id, user.role.value)

    def change_password(self, user_id: str, current_password: str, new_password: str) -> dict:
        """Change a password after checking the current one; every other session ends (API and clinician
        pages alike), this one continues on a fresh token pair."""
        self.reauthenticate(user_id, current_password)
        if current_password == new_password:
            raise Invalid("the new password must differ from the current one",
                          errors={"new_password": ["must differ from the current password"]})
        # One write changes the password and stops every older session being accepted (checked on each
        # request), so a crash after it leaves no session alive; ending them below is the tidy-up.
        user = self.users.set_password_hash(user_id, self.passwords.hash(new_password), to_millis(self.clock()))
        if user is None:
            raise NotFound("no such account")
        self.tokens.end_every_session(user_id, "password changed")
        self.web_sessions.end_for_user(user_id)
        return self.tokens.start_session(user_id, user.role.value)

    def require_live_session(self, actor: Actor) -> Account:
        """The caller's account, if it still exists and still accepts the caller's session (Unauthorized if
        not: the account was removed, or its password changed after the session began)."""
        user = self.users.by_id(actor.id)
        if user is None or not user.accepts_session_from(actor.session_started_at):
            raise Unauthorized("invalid or expired token")
        return user

    def reauthenticate(self, user_id: str, password: str) -> None:
        """Step-up for sensitive changes: the current password, checked afresh."""
        user = self.users.by_id(user_id)
        if not user or not self.passwords.matches(user.password_hash, password):
            raise Unauthorized("re-authentication failed")

    # The clinician pages sign in with a server-side session behind a cookie.
    def start_web_session(self, user: Account, *, stage: str) -> str:
        """A new dashboard session (``stage`` "mfa": code pending; "full": signed in); returns its token."""
        token, _ = self.web_sessions.start(user.id, user.role.value, stage=stage, at=self.clock())
        return token

    def web_session(self, token: str | None) -> dict | None:
        """The live session behind a cookie (and it counts as activity), or None."""
        session = self.web_sessions.live(token, self.clock())
        if session is None:
            return None
        user = self.users.by_id(session["user_id"])
        if user is None or not user.accepts_session_from(session["created_at"]):
            self.web_sessions.end_session(session)
            return None
        self.web_sessions.touch(session, self.clock())
        return session

    def pending_web_session(self, token: str | None) -> dict | None:
        """The session behind a cookie if it is waiting for its TOTP code."""
        session = self.web_sessions.live(token, self.clock())
        return session if session is not None and session["stage"] == "mfa" else None

    def web_session_user(self, session: dict) -> Account | None:
        """The account a dashboard session belongs to (None if it no longer exists)."""
        return self.users.by_id(session["user_id"])

    def web_code_failed(self, session: dict) -> bool:
        """Count a wrong code on a pending session; True when it used up its tries (the session is ended)."""
        failures = self.web_sessions.note_code_failure(session)
        if failures is None or failures >= MAX_CODE_FAILURES:
            self.web_sessions.end_session(session)
            return True
        return False

    def end_web_session(self, token: str | None) -> None:
        self.web_sessions.end(token)
