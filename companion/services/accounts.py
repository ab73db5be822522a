"""Accounts: sign-up (confirmed by a code sent by email), login and TOTP under throttles, password changes
and admin-issued resets (each told to the account's owner by email), the account's state checked on every request,
and the clinician pages' sessions.

What happens when an account is deactivated, closed or deleted is companion.services.lifecycle's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo.errors import DuplicateKeyError

from companion.clock import Clock, now, to_millis
from companion.domain import mail as mails
from companion.domain import signup as signup_rules
from companion.domain.access import Actor, Role
from companion.domain.errors import Conflict, Forbidden, Invalid, NotFound, ServiceUnavailable, Unauthorized
from companion.domain.localtime import is_known_zone
from companion.domain.people import Account, is_email_address
from companion.domain.throttling import network_of
from companion.i18n import Reader
from companion.logs import pseudonym
from companion.services.derived_ids import derived_id
from companion.services.device_keys import DeviceKeys
from companion.services.throttle import Throttle
from companion.services.tokens import TokenService
from companion.settings import Settings
from companion.store.stores import Stores

log = logging.getLogger(__name__)

STAFF = {Role.CLINICIAN, Role.ADMIN}
SELF_SERVICE_ROLES = (Role.PATIENT.value, Role.CAREGIVER.value)
# What an admin may make (POST /admin/users): never a caregiver's account nor a patient's, which only their owner makes
# with the code mailed to the email (request_signup, confirm_signup). A caregiver accepts the offers made to their
# email: an account an admin made for that email, with a password the admin chose, would accept one and read the
# patient's record, and nobody who owns the email would have said yes.
STAFF_ROLES = (Role.CLINICIAN.value, Role.ADMIN.value)
MAX_CODE_FAILURES = 5
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
CODE_LENGTH = 12  # 60 bits: guessing is bounded by entropy, not by a delay an outsider could renew
PASSWORD_LENGTH = (10, 200)  # characters: the API's rule (companion.api.auth), kept by every way an account is made
SIGNUP_CODE_TTL = signup_rules.CODE_TTL
RESET_CODE_TTL = timedelta(hours=24)
SIGNUP, RESET = "signup", "reset"
BAD_CODE = "the email or the code is wrong, or the code has expired"


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
        if not stored_hash:
            self.matches(self.dummy_hash, password)  # a closed account costs what any other does
            return False
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_digest(email: str) -> str:
    """How an email is named where it need not be readable (invitations, pending sign-ups, throttles)."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


def new_code() -> str:
    """A one-time code as it is shown: CODE_LENGTH characters in groups of four (``XXXX-XXXX-XXXX``); the dashes
    and any spaces are dropped when it is checked (:func:`normalise_code`)."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(code[i:i + 4] for i in range(0, CODE_LENGTH, 4))


def normalise_code(code: str) -> str:
    return code.strip().upper().replace("-", "").replace(" ", "")


def code_step(code: str) -> str:
    """The throttle step a guess at a code meets: ``code_legacy`` (with its delay per account) for one shorter
    than CODE_LENGTH, which can only match a code of 8 issued before the codes grew to 12 (still alive up to 24
    hours after that deploy; remove this with the step a day after it), ``code`` otherwise."""
    return "code_legacy" if len(normalise_code(code)) < CODE_LENGTH else "code"


class PasswordCheck(NamedTuple):
    """A password found right: the account, when the check began, and the device key to give the caller."""

    user: Account
    checked_at: datetime
    device_key: str


class Accounts:
    def __init__(self, settings: Settings, stores: Stores, tokens: TokenService, clock: Clock = now, *,
                 mailer=None):
        self.s = settings
        self.users = stores.users
        self.codes = stores.one_time_codes
        self.signups = stores.signups
        self.web_sessions = stores.web_sessions
        self.panel_rows = stores.panel_row_marks
        self.tokens = tokens
        self.throttle = Throttle(stores.counters, clock, key=settings.pseudonym_key)
        self.device_keys = DeviceKeys(settings.secret_key)
        self._signup_key = hmac.new(settings.secret_key.encode(), b"companion sign-ups", hashlib.sha256).digest()
        self.clock = clock
        self.mailer = mailer
        self.passwords = Passwords(settings.password_memory_kib, settings.password_time_cost)

    # Making accounts
    def sign_up(self, *, email: str, password: str, display_name: str, role: str, time_zone: str,
                request_key: str | None = None) -> Account:
        """Create an account at once (an admin's staff account, :meth:`create_staff`; the command line, the demo:
        whoever runs those holds the database). A patient's zone history starts
        with the zone they sign up in. Conflict when the email is taken: only staff see that. The password
        follows the rule the API's own sign-up applies (``PASSWORD_LENGTH``). With a ``request_key`` (the
        request's Idempotency-Key) a retry of the same request finds the account the first attempt made."""
        if not PASSWORD_LENGTH[0] <= len(password) <= PASSWORD_LENGTH[1]:
            raise Invalid(f"a password of {PASSWORD_LENGTH[0]} to {PASSWORD_LENGTH[1]} characters",
                          errors={"password": [f"Length must be between {PASSWORD_LENGTH[0]} and "
                                               f"{PASSWORD_LENGTH[1]}."]})
        # The rules the API's own sign-up applies to the rest: an account made here must work there.
        if not is_email_address(normalise_email(email)):
            raise Invalid(f"{email!r} is not an email address", errors={"email": ["Not a valid email address."]})
        if not is_known_zone(time_zone):
            raise Invalid(f"{time_zone!r} is not a known IANA time zone (e.g. Europe/London)",
                          errors={"time_zone": ["not a known IANA time zone (e.g. Europe/London)"]})
        if not display_name.strip() or len(display_name) > 100:
            raise Invalid("a name of 1 to 100 characters", errors={"display_name": ["Length must be between 1 "
                                                                                    "and 100."]})
        return self._create(email=email, password_hash=self.passwords.hash(password), display_name=display_name,
                            role=role, time_zone=time_zone,
                            user_id=derived_id("account", request_key) if request_key else None)

    def create_staff(self, *, email: str, password: str, display_name: str, role: str, time_zone: str,
                     request_key: str | None = None) -> Account:
        """An admin makes a clinician's or another admin's account (:meth:`sign_up`). Invalid for any other role
        (``STAFF_ROLES``): a caregiver or a patient signs up themselves, proving the email is theirs."""
        if role not in STAFF_ROLES:
            raise Invalid(f"an admin makes clinician and admin accounts, not {role!r}: a caregiver or a patient signs "
                          "up themselves (POST /auth/signup), with the code mailed to their email",
                          errors={"role": [f"Must be one of: {', '.join(STAFF_ROLES)}."]})
        return self.sign_up(email=email, password=password, display_name=display_name, role=role,
                            time_zone=time_zone, request_key=request_key)

    def _create(self, *, email: str, password_hash: str, display_name: str, role: str, time_zone: str,
                user_id: str | None = None) -> Account:
        extra = {}
        if role == Role.PATIENT.value:
            extra = {"time_zone_history": [{"zone": time_zone, "effective_from": self.clock(), "previous": None}],
                     "caregiver_alert_delay_min": 60}
        try:
            account = self.users.create(email=normalise_email(email), password_hash=password_hash, role=role,
                                        display_name=display_name, time_zone=time_zone, extra=extra, user_id=user_id)
        except DuplicateKeyError as exc:
            made = self.users.by_id(user_id) if user_id else None  # by the first attempt of this request
            if made is None or made.email != normalise_email(email):
                raise Conflict("an account with this email already exists") from exc
            account = made
        if account.is_patient:  # their row on the panels of the teams they will join
            self.panel_rows.mark([account.id], "new patient", self.clock())
        return account

    def request_signup(self, *, email: str, password: str, display_name: str, role: str, time_zone: str,
                       address: str, languages: tuple[str, ...] = ()) -> None:
        """Self-service sign-up, step one. The answer never says whether the email has an account: a new
        address is sent a code that finishes the sign-up (:meth:`confirm_signup`), an existing one a note that
        an account exists. Either way the same work is done (the password is hashed) and one mail goes out, in the
        first of ``languages`` (the request's Accept-Language) with a catalog, else English.

        Past the mails one email may get (companion.domain.signup.MAILS, whoever asked) nothing is sent, and the
        answer is the same. A new address's request is kept all the same, apart from every other request's: any
        live code mailed to the email finishes it with its own password, so the owner finishes with the newest
        mail they got, whoever's request sent it, and nobody else's request replaces theirs."""
        say = Reader(*languages).render
        email = normalise_email(email)
        self.throttle.check("signup", address=address, account=email_digest(email))
        self.throttle.failed("signup", address=address, account=email_digest(email))  # each request costs
        password_hash = self.passwords.hash(password)
        subject = self._signup_digest("email", email)
        if self.users.by_email(email) is not None:
            self._mail_within_quota(email, mails.signup_existing(email, say))
            return
        at = self.clock()
        self.signups.keep_pending(subject, self._pending_key(subject, password),
                                  network=self._signup_digest("network", network_of(address)),
                                  payload={"email": email, "password_hash": password_hash,
                                           "display_name": display_name, "role": role, "time_zone": time_zone},
                                  at=at, expires_at=at + signup_rules.PENDING_TTL,
                                  per_network=signup_rules.PENDING_PER_NETWORK)
        code = new_code()
        self._mail_within_quota(email, mails.signup_code(email, code, int(SIGNUP_CODE_TTL.total_seconds() // 60), say),
                                before=lambda: self.signups.note_code(subject, self._code_hash(code), at=at,
                                                                      expires_at=at + SIGNUP_CODE_TTL))

    def confirm_signup(self, *, email: str, code: str, password: str, address: str) -> Account:
        """Self-service sign-up, step two: a live code mailed to the email and the password of a request for it
        make the account from that request. Unauthorized (one answer for every case) when the email or code is
        wrong or expired, or no live request for the email has that password: whoever has another's code cannot
        finish their own request (codes are the email's), and nobody finishes a request with someone else's
        password without that password."""
        email = normalise_email(email)
        subject = self._signup_digest("email", email)
        self.throttle.check("code", address=address, account=f"{SIGNUP}:{email_digest(email)}")
        at = self.clock()
        code_hash = self._code_hash(code)
        pending = None
        if self.signups.is_live_code(subject, code_hash, at):
            # One read and one password check, however many requests wait: the request is found by its password.
            pending = self.signups.live_pending(subject, self._pending_key(subject, password), at)
            if not self.passwords.matches(pending["payload"]["password_hash"] if pending else "", password):
                pending = None
        # The code is spent only with a request's password: a typo leaves it for a retry.
        if pending is None or not self.signups.use_code(subject, code_hash, at):
            self.throttle.failed("code", address=address, account=f"{SIGNUP}:{email_digest(email)}")
            raise Unauthorized(BAD_CODE)
        payload = pending["payload"]
        try:
            account = self._create(email=payload["email"], password_hash=payload["password_hash"],
                                   display_name=payload["display_name"], role=payload["role"],
                                   time_zone=payload["time_zone"])
        except Conflict:
            self.signups.forget(subject)
            raise Unauthorized(BAD_CODE) from None  # taken meanwhile by another sign-up or an admin
        self.signups.forget(subject)  # the email has an account now: nothing pending can make another
        return account

    def _signup_digest(self, what: str, value: str) -> str:
        """How sign-ups name an email or a network: keyed, so a copy of the database does not tell whose."""
        return hmac.new(self._signup_key, f"{what}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def _pending_key(self, subject: str, password: str) -> str:
        """Where a request's pending sign-up is kept: a keyed digest of the email and the password, so that its
        confirmation finds it in one read and checks one password hash."""
        return self._signup_digest("password", f"{subject}\x1f{password}")

    def _mail_within_quota(self, email: str, mail: mails.Mail, *, before: Callable[[], None] | None = None) -> None:
        """Send ``mail`` if the email's quota of sign-up mails allows (``before``: what to store first, the code it
        carries); otherwise nothing. A mail that could not be sent gives its use of the quota back."""
        use = self.throttle.within_quota("signup_mail", signup_rules.MAILS, account=email_digest(email))
        if use is None:
            return
        try:
            if before is not None:
                before()
            self._mail(mail)
        except Exception:
            self.throttle.give_back(use)
            raise

    def _code_hash(self, code: str) -> str:
        return hmac.new(self.s.secret_key.encode(), normalise_code(code).encode(), hashlib.sha256).hexdigest()

    def _take_code(self, purpose: str, subject: str, code: str) -> dict | None:
        """Spend the live code of ``purpose`` for ``subject`` if it is ``code``; None, and the code kept, otherwise."""
        live = self.codes.live(purpose, subject, self.clock())
        if live is None or not hmac.compare_digest(live["code_hash"], self._code_hash(code)):
            return None
        return self.codes.use(purpose, subject, live["code_hash"])

    def _mail(self, mail: mails.Mail) -> None:
        if self.mailer is None:
            log.warning("email is not configured: a sign-up email could not be sent")
            raise ServiceUnavailable("signing up is not available right now; try again later", retry_after_s=300)
        try:
            self.mailer.send(mail)
        except Exception as exc:  # noqa: BLE001 - whatever the transport's failure, the caller can only retry
            log.error("email could not be sent (%s)", type(exc).__name__)
            raise ServiceUnavailable("signing up is not available right now; try again later") from exc

    # Reading accounts
    def account(self, user_id: str) -> Account:
        """The caller's own account."""
        account = self.users.by_id(user_id)
        if account is None:
            raise NotFound("no such account")
        return account

    def by_email(self, email: str) -> Account | None:
        return self.users.by_email(normalise_email(email))

    def search(self, *, email: str | None, role: str | None, limit: int) -> list[Account]:
        """Accounts for an admin, by exact email and/or role."""
        return self.users.search(email=normalise_email(email) if email else None, role=role, limit=limit)

    # Signing in
    def authenticate(self, *, email: str, password: str, ip: str) -> Account:
        """Check email and password under the shared throttles; the account, or Unauthorized.

        Used by the API login and by the clinician pages' login alike, so both count failures together.
        """
        return self.check_password(email=email, password=password, ip=ip)[0]

    def check_password(self, *, email: str, password: str, ip: str,
                       device_key: str | None = None) -> PasswordCheck:
        """:meth:`authenticate`, the instant the check began (a session it opens starts then, so that a change
        of password, or of the account's state, made while the check ran, or before the session is stored, ends
        that session too: it is older than the change) and a new device key for the caller to keep.

        ``device_key``: the key an earlier sign-in on this device was given (companion.services.device_keys). If
        it is valid for the account and has not failed too often, the sign-in skips the delays that failures
        naming the account build up, from anywhere and from this network; anything else counts as no key."""
        checked_at = to_millis(self.clock())
        email = normalise_email(email)
        account_key = email_digest(email)
        user = self.users.by_email(email)
        key_id = self.device_keys.verify(device_key, user, checked_at)
        self.throttle.check("login", address=ip, account=account_key, device_key=key_id)
        ok = self.passwords.matches(user.password_hash if user else self.passwords.dummy_hash, password) \
            and user is not None and user.active
        if not ok:
            self.throttle.failed("login", address=ip, account=account_key, device_key=key_id)
            # Keyed: a plain digest would let anyone with the logs and a list of addresses tell who failed.
            log.info("login failed", extra={"account": pseudonym(self.s.pseudonym_key, email)})
            raise Unauthorized("email or password is wrong")
        self.throttle.succeeded("login", address=ip, account=account_key, device_key=key_id)
        return PasswordCheck(user, checked_at, self.device_keys.issue(user.id, checked_at))

    def needs_mfa(self, user: Account) -> bool:
        return user.role in STAFF and (user.mfa_enabled or self.s.staff_mfa_required)

    def login(self, *, email: str, password: str, ip: str, device_key: str | None = None) -> dict:
        """Tokens for the account, or for staff with MFA an MFA challenge; either way a new ``device_key`` for
        the client to send with its next sign-in (:meth:`check_password`)."""
        user, checked_at, new_key = self.check_password(email=email, password=password, ip=ip, device_key=device_key)
        if self.needs_mfa(user):
            return {"mfa_required": True,
                    "mfa_token": self.tokens.mfa_token(user.id, user.role.value, password_checked_at=checked_at),
                    "mfa_enrolled": user.mfa_enabled, "device_key": new_key}
        return {**self.tokens.start_session(user.id, user.role.value, started_at=checked_at), "device_key": new_key}

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

    def check_totp(self, user: Account, code: str, *, address: str) -> bool:
        """:meth:`verify_totp` under the TOTP throttle (per address, and a growing delay per account after a
        few wrong codes); TooManyRequests when the caller must wait first."""
        self.throttle.check("totp", address=address, account=user.id)
        if self.verify_totp(user, code):
            self.throttle.succeeded("totp", address=address, account=user.id)
            return True
        self.throttle.failed("totp", address=address, account=user.id)
        return False

    def _mfa_user(self, mfa_token: str) -> tuple[Account, datetime | None]:
        """The account an MFA token names, and when its password was checked; Unauthorized if the account
        has since been deactivated or had its password changed (the token is older than the change)."""
        claims = self.tokens.decode(mfa_token, expected_type="mfa")
        user = self.users.by_id(claims["sub"])
        checked_at = self.tokens.password_checked_at(claims)
        if user is None or not user.accepts_session_from(checked_at):
            raise Unauthorized("invalid or expired code")
        return user, checked_at

    def complete_mfa(self, mfa_token: str, code: str, *, address: str) -> dict:
        user, checked_at = self._mfa_user(mfa_token)
        if not user.mfa_enabled or not self.check_totp(user, code, address=address):
            raise Unauthorized("invalid or expired code")
        return self.tokens.start_session(user.id, user.role.value, started_at=checked_at)

    def begin_enrolment_with(self, mfa_token: str) -> dict:
        """Start TOTP enrolment for the account an MFA token names: a new secret and its otpauth URI."""
        user, _ = self._mfa_user(mfa_token)
        secret = pyotp.random_base32()
        if user.mfa_enabled or not self.users.start_mfa_enrolment(user.id, secret):
            raise Conflict("two-factor authentication is already enabled")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="Companion")
        return {"secret": secret, "otpauth_uri": uri}

    def confirm_totp_enrolment(self, mfa_token: str, code: str, *, address: str) -> dict:
        """Enable TOTP with a first valid code; the caller leaves with a full session."""
        user, checked_at = self._mfa_user(mfa_token)
        if user.mfa_enabled:
            raise Conflict("two-factor authentication is already enabled")
        if not user.mfa_secret or not self.check_totp(user, code, address=address):
            raise Invalid("the code does not match", errors={"code": ["does not match"]})
        if not self.users.enable_mfa(user.id, user.mfa_secret):
            raise Conflict("two-factor authentication is already enabled")
        return self.tokens.start_session(user.id, user.role.value, started_at=checked_at)

    def refresh(self, refresh_token: str, *, address: str) -> dict:
        """Rotate a refresh token (companion.services.tokens) under the refresh throttle: a client repeating a
        token that is refused waits, kept per token and address (many patients share a clinic's or a carrier's
        address, and one's dead session must not hold back the others' refreshes)."""
        token_key = hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
        self.throttle.check("refresh", address=address, account=token_key)
        try:
            pair = self.tokens.refresh(refresh_token)
        except Unauthorized:
            self.throttle.failed("refresh", address=address, account=token_key)
            raise
        # The account must still accept the session (a session whose password check straddled a change of
        # password is older than the change): otherwise it ends here rather than renewing itself.
        actor = self.tokens.actor_from(pair["access_token"])
        try:
            self.require_live_session(actor)
        except Unauthorized:
            self.tokens.end_session(actor)
            raise
        return pair

    # Passwords
    def change_password(self, user_id: str, current_password: str, new_password: str, *,
                        address: str | None = None, session: str | None = None,
                        install_id: str | None = None) -> dict:
        """Change a password after checking the current one; every other session ends (API and clinician
        pages alike); this session (``session``) continues on a fresh token pair. Every phone stops receiving
        notifications but the install ``install_id`` registered under this session, which goes on under the
        new one: another phone registered under it (with a copy of its access token) is forgotten too. The owner
        is told by email.

        The change ends every device key given before, this device's own too: the answer carries a new one
        (``device_key``), dated at the change so that it stays valid, for its next sign-in."""
        self.reauthenticate(user_id, current_password, address=address, session=session)
        if current_password == new_password:
            raise Invalid("the new password must differ from the current one",
                          errors={"new_password": ["must differ from the current password"]})
        kept = (session, install_id) if session is not None and install_id is not None else None
        user = self._set_password(user_id, new_password, keep_phone=kept)
        self._tell_owner(user, mails.PASSWORD_CHANGED)
        return {**self.tokens.start_session(user_id, user.role.value, carrying=kept),
                "device_key": self.device_keys.issue(user_id, user.credentials_changed_at)}

    def _set_password(self, user_id: str, new_password: str, *, keep_phone: tuple[str, str] | None = None) -> Account:
        # One write changes the password and stops every older session being accepted (checked on each
        # request), so a crash after it leaves no session alive; ending them below is the tidy-up.
        user = self.users.set_password_hash(user_id, self.passwords.hash(new_password), to_millis(self.clock()))
        if user is None:
            raise NotFound("no such account")
        self._end_every_session(user_id, "password changed", but=keep_phone)
        return user

    def _end_every_session(self, user_id: str, reason: str, *, but: tuple[str, str] | None = None) -> None:
        """The tidy-up after a write that stops every older session being accepted: the API sessions (and the
        phones signed in under them, but the one phone ``but``: its session and install) and the clinician
        pages' sessions end now."""
        self.tokens.end_every_session(user_id, reason, but=but)
        self.web_sessions.end_for_user(user_id)

    def clear_mfa(self, user_id: str, *, by: str) -> Account:
        """An admin clears an account's authenticator (its owner lost the phone that held it): every session
        ends, as after a password change, and the next sign-in enrols a new one; the owner is told by email. Not
        one's own: a second factor is cleared by another admin."""
        if user_id == by:
            raise Conflict("an admin cannot clear their own authenticator")
        user = self.users.by_id(user_id)
        if user is None or user.status == "closed":
            raise NotFound("no such account")
        user = self.users.clear_mfa(user_id, to_millis(self.clock()))
        if user is None:
            raise NotFound("no such account")
        self._end_every_session(user_id, "authenticator cleared")
        log.info("authenticator cleared", extra={"account_id": user_id})
        self._tell_owner(user, mails.AUTHENTICATOR_CLEARED)
        return user

    def issue_password_reset(self, user_id: str) -> tuple[str, datetime]:
        """An admin issues a one-time reset code for an account (handed to its owner in person or by phone;
        there is no reset by email link). Valid 24 hours; issuing another replaces it. The owner is told by email
        that a code was issued (never the code)."""
        user = self.users.by_id(user_id)
        if user is None or user.status == "closed":
            raise NotFound("no such account")
        code, at = new_code(), self.clock()
        self.codes.issue(RESET, user.id, self._code_hash(code), at=at, expires_at=at + RESET_CODE_TTL)
        self._tell_owner(user, mails.RESET_CODE_ISSUED, hours=str(int(RESET_CODE_TTL.total_seconds() // 3600)))
        return code, at + RESET_CODE_TTL

    def reset_password(self, *, email: str, code: str, new_password: str, address: str) -> str:
        """Set a new password with an admin-issued code; every session of the account ends. Returns the account's
        id; the owner is told by email. Unauthorized (one answer for every case) when the email or code is wrong or
        expired."""
        subject_key, step = f"{RESET}:{email_digest(email)}", code_step(code)
        self.throttle.check(step, address=address, account=subject_key)
        user = self.users.by_email(normalise_email(email))
        taken = self._take_code(RESET, user.id, code) if user is not None else None
        if taken is None:
            self.throttle.failed(step, address=address, account=subject_key)
            raise Unauthorized(BAD_CODE)
        self._tell_owner(self._set_password(user.id, new_password), mails.PASSWORD_RESET)
        return user.id

    def _tell_owner(self, user: Account, notice: str, **more: str) -> None:
        """Email the account's owner that ``notice`` (companion.domain.mail.ACCOUNT_NOTICES) just happened to their
        account: to its address, in the language they chose (else English: the request may not be theirs), the
        time on the clock they live by. Never fails the change it tells of: a mailer down or not configured is
        logged (the address by its pseudonym) and the change stands."""
        if self.mailer is None:
            log.warning("email is not configured: an account notice could not be sent", extra={"notice": notice})
            return
        at = self.clock()
        zone = user.zone_history().zone_at(at)
        reader = Reader(user.locale, zone=zone)
        mail = mails.account_notice(notice, user.email, date=reader.date(at.astimezone(zone).date()),
                                    time=reader.time(at), zone=zone.key, say=reader.render, **more)
        try:
            self.mailer.send(mail)
        except Exception as exc:  # noqa: BLE001 - whatever the transport's failure, the change is made
            log.error("an account notice could not be sent (%s)", type(exc).__name__,
                      extra={"notice": notice, "to": pseudonym(self.s.pseudonym_key, normalise_email(user.email))})

    # Every request
    def require_live_session(self, actor: Actor) -> Account:
        """The caller's account, if it still exists, is active and still accepts the caller's session
        (Unauthorized if not: removed, deactivated or closed, its password changed after the session began, or
        the session was ended early: signed out, or a refresh token replayed). One read decides."""
        user = self.users.by_id(actor.id)
        if user is None or not user.accepts_session(actor.family, actor.session_started_at):
            raise Unauthorized("invalid or expired token")
        return user

    def reauthenticate(self, user_id: str, password: str, *, address: str | None = None,
                       session: str | None = None) -> None:
        """Step-up for sensitive changes: the current password, checked afresh, under the sign-in throttle (its
        failures count with sign-in's, for the account and the caller's ``address``): a stolen session cannot
        guess the password through a change that asks for it.

        ``session``: the caller's session (its family), which stands in for a device key: while it has fewer than
        10 failures in the last hour the step-up skips the delays that failures from anywhere, or from the
        caller's network, build up (as a device key does), so someone guessing the password does not hold up the
        owner's change; a stolen session is worth 10 guesses an hour past those delays, as a stolen device key
        is."""
        user = self.users.by_id(user_id)
        account_key = email_digest(user.email) if user else f"id:{user_id}"
        where = address or f"session-of:{user_id}"
        as_device = f"session:{session}" if session else None
        self.throttle.check("login", address=where, account=account_key, device_key=as_device)
        if not user or not self.passwords.matches(user.password_hash, password):
            self.throttle.failed("login", address=where, account=account_key, device_key=as_device)
            # 403, not 401: the session is sound (an app that signs the person out on a 401 must not do so
            # over a mistyped password); the field at fault is named.
            raise Forbidden("the current password is wrong",
                            errors={"current_password": ["is not this account's password"]})
        self.throttle.succeeded("login", address=where, account=account_key, device_key=as_device)

    # The clinician pages sign in with a server-side session behind a cookie.
    def start_web_session(self, user: Account, *, stage: str, started_at: datetime | None = None) -> str:
        """A new dashboard session (``stage`` "mfa": code pending; "full": signed in); returns its token.
        ``started_at``: when the password it rests on was checked (check_password), if not now."""
        token, _ = self.web_sessions.start(user.id, user.role.value, stage=stage, at=started_at or self.clock())
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
        """The account a dashboard session belongs to (None if it no longer exists or is not active)."""
        user = self.users.by_id(session["user_id"])
        return user if user is not None and user.accepts_session_from(session["created_at"]) else None

    def web_code_failed(self, session: dict) -> bool:
        """Count a wrong code on a pending session; True when it used up its tries (the session is ended)."""
        failures = self.web_sessions.note_code_failure(session)
        if failures is None or failures >= MAX_CODE_FAILURES:
            self.web_sessions.end_session(session)
            return True
        return False

    def end_web_session(self, token: str | None) -> None:
        self.web_sessions.end(token)

