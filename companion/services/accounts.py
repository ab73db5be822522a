"""Sign-up, login with throttling, MFA, and password checks."""

from __future__ import annotations

import logging

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.config import Settings
from companion.domain.access import Role
from companion.domain.errors import Conflict, Invalid, TooManyRequests, Unauthorized
from companion.services.tokens import TokenService, hash_token
from companion.store.accounts import Users, now
from companion.store.throttle import Counters
from companion.store.tokens import TokenFamilies

log = logging.getLogger(__name__)

STAFF = {Role.CLINICIAN.value, Role.ADMIN.value}


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
    def __init__(self, db: Database, settings: Settings):
        self.s = settings
        self.users = Users(db)
        self.counters = Counters(db)
        self.tokens = TokenService(settings, TokenFamilies(db))
        self.passwords = Passwords(settings.password_memory_kib, settings.password_time_cost)

    def sign_up(self, *, email: str, password: str, display_name: str, role: str, time_zone: str) -> dict:
        extra = {}
        if role == Role.PATIENT.value:
            extra = {"time_zone_history": [{"zone": time_zone, "effective_from": now(), "previous": None}],
                     "caregiver_alert_delay_min": 60}
        try:
            return self.users.create(email=normalise_email(email), password_hash=self.passwords.hash(password),
                                     role=role, display_name=display_name, time_zone=time_zone, extra=extra)
        except DuplicateKeyError as exc:
            raise Conflict("an account with this email already exists") from exc

    def _throttle(self, email: str, ip: str) -> None:
        ip_count, ip_wait = self.counters.hit(f"login-ip:{ip}", 60)
        if ip_count > self.s.login_ip_limit_per_min:
            raise TooManyRequests("too many login attempts from this address", retry_after_s=ip_wait)
        failures, wait = self.counters.peek(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
        if failures >= self.s.login_account_failures:
            raise TooManyRequests("too many failed logins for this account; try again later",
                                  retry_after_s=wait)

    def authenticate(self, *, email: str, password: str, ip: str) -> dict:
        """Check email and password under the shared throttles; the user, or Unauthorized.

        Used by the API login and by the clinician pages' login alike, so both count failures together.
        """
        email = normalise_email(email)
        self._throttle(email, ip)
        user = self.users.by_email(email)
        ok = self.passwords.matches(user["password_hash"] if user else self.passwords.dummy_hash, password) and user is not None
        if not ok:
            self.counters.hit(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
            log.info("login failed", extra={"account": hash_token(email)[:12]})
            raise Unauthorized("email or password is wrong")
        self.counters.reset(f"login-fail:{hash_token(email)}", self.s.login_account_window_s)
        return user

    def login(self, *, email: str, password: str, ip: str) -> dict:
        user = self.authenticate(email=email, password=password, ip=ip)
        if user["role"] in STAFF and (user["mfa"].get("enabled") or self.s.staff_mfa_required):
            return {"mfa_required": True, "mfa_token": self.tokens.mfa_token(user["_id"], user["role"]),
                    "mfa_enrolled": bool(user["mfa"].get("enabled"))}
        return self.tokens.start_session(user["_id"], user["role"])

    def verify_totp(self, user: dict, code: str) -> bool:
        """True for a valid code (±1 step) not used before; a replayed code is refused."""
        secret = user["mfa"].get("secret")
        if not secret:
            return False
        totp = pyotp.TOTP(secret)
        for drift in (0, -1, 1):
            step = totp.timecode(now()) + drift
            if pyotp.utils.strings_equal(totp.generate_otp(step), code):
                return self.users.claim_totp_step(user["_id"], step)
        return False

    def complete_mfa(self, mfa_token: str, code: str) -> dict:
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.users.by_id(claims["sub"])
        if not user or not user["mfa"].get("enabled") or not self.verify_totp(user, code):
            raise Unauthorized("invalid or expired code")
        return self.tokens.start_session(user["_id"], user["role"])

    def begin_totp_enrolment(self, user_id: str) -> dict:
        user = self.users.by_id(user_id)
        if user["mfa"].get("enabled"):
            raise Conflict("two-factor authentication is already enabled")
        secret = pyotp.random_base32()
        self.users.update(user_id, {"mfa": {"enabled": False, "secret": secret}})
        uri = pyotp.TOTP(secret).provisioning_uri(name=user["email"], issuer_name="Companion")
        return {"secret": secret, "otpauth_uri": uri}

    def begin_enrolment_with(self, mfa_token: str) -> dict:
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        return self.begin_totp_enrolment(claims["sub"])

    def confirm_totp_enrolment(self, mfa_token: str, code: str) -> dict:
        """Enable TOTP with a first valid code; the caller leaves with a full session."""
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.users.by_id(claims["sub"])
        if not user or user["mfa"].get("enabled"):
            raise Conflict("two-factor authentication is already enabled")
        if not user["mfa"].get("secret") or not self.verify_totp(user, code):
            raise Invalid("the code does not match", errors={"code": ["does not match"]})
        self.users.update(user["_id"], {"mfa.enabled": True})
        return self.tokens.start_session(user["_id"], user["role"])

    def change_password(self, user_id: str, current_password: str, new_password: str) -> dict:
        """Change a password after checking the current one; every other session ends, this one
        continues on a fresh token pair."""
        self.reauthenticate(user_id, current_password)
        if current_password == new_password:
            raise Invalid("the new password must differ from the current one",
                          errors={"new_password": ["must differ from the current password"]})
        user = self.users.update(user_id, {"password_hash": self.passwords.hash(new_password)})
        self.tokens.families.revoke_all_for_user(user_id, "password changed")
        return self.tokens.start_session(user_id, user["role"])

    def reauthenticate(self, user_id: str, password: str) -> None:
        """Step-up for sensitive changes: the current password, checked afresh."""
        user = self.users.by_id(user_id)
        if not user or not self.passwords.matches(user["password_hash"], password):
            raise Unauthorized("re-authentication failed")

