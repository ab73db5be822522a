"""Access tokens (short-lived JWTs) and rotating refresh tokens, in sessions with an absolute lifetime.

- A login starts a session (a token *family*). Every refresh rotates the refresh token; presenting a used one
  again ends the whole session (a stolen token is useless once the owner refreshes, and vice versa) with one
  exception: a retry within ``COMPANION_REFRESH_GRACE_S`` (10 s) of the first use, while the new token has not
  been used itself, gets *the same* new pair, because a phone that lost the answer on a bad network must not
  be signed out. The new pair is derived from the old token with the signing key (HMAC), so nothing secret is
  stored to answer the retry.
- A session ends, however often it is refreshed, ``COMPANION_SESSION_MAX_DAYS`` (30) after its login for
  patients and caregivers and ``COMPANION_STAFF_SESSION_MAX_H`` (12) for clinicians and admins; its access
  tokens stop working at the same moment.
- Checking a person's access token reads one document, their account, which the request needs anyway
  (companion.services.accounts.Accounts.require_live_session). The token says when its session started (``ses``,
  signed with the rest), so its lifetime is checked without a read; the account says whether it is active,
  when its password or state last changed, and which of its sessions ended early (signed out, or a refresh
  token replayed): one document decides, in one read, whether the session goes on. A gateway's token is
  checked against its token family, as is every refresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import jwt

from companion.clock import Clock, now, to_millis
from companion.domain.access import Actor, Role
from companion.domain.errors import Unauthorized
from companion.domain.people import EPOCH
from companion.settings import Settings
from companion.store.accounts import Users
from companion.store.push_tokens import PushTokens
from companion.store.tokens import TokenFamilies

ALGORITHM = "HS256"
STAFF = frozenset({Role.CLINICIAN.value, Role.ADMIN.value})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, settings: Settings, families: TokenFamilies, users: Users, phones: PushTokens,
                 clock: Clock = now):
        self.s = settings
        self.families = families
        self.users = users
        self.phones = phones  # each registered under the session that registered it, forgotten when it ends
        self.clock = clock

    def _encode(self, claims: dict, ttl_s: int, *, issued: datetime | None = None, jti: str | None = None) -> str:
        issued = issued or now()
        payload = {
            **claims,
            "iss": self.s.jwt_issuer,
            "aud": self.s.jwt_audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + timedelta(seconds=ttl_s),
            "jti": jti or uuid.uuid4().hex,
        }
        return jwt.encode(payload, self.s.secret_key, algorithm=ALGORITHM)

    def access_token(self, user_id: str, role: str, family_id: str, session_started_at: datetime, *,
                     issued: datetime | None = None, jti: str | None = None) -> str:
        started_ms = round((session_started_at - EPOCH) / timedelta(milliseconds=1))
        return self._encode({"sub": user_id, "role": role, "fam": family_id, "ses": started_ms, "typ": "access"},
                            self.s.access_token_ttl_s, issued=issued, jti=jti)

    def mfa_token(self, user_id: str, role: str, *, password_checked_at: datetime) -> str:
        """A token that proves the password only (checked at ``password_checked_at``, to the millisecond: the
        session it leads to starts then); it opens nothing but the MFA step."""
        checked_ms = int(password_checked_at.timestamp() * 1000)
        return self._encode({"sub": user_id, "role": role, "typ": "mfa", "pwd_ms": checked_ms}, self.s.mfa_token_ttl_s)

    @staticmethod
    def password_checked_at(claims: dict) -> datetime | None:
        """When the password behind an MFA token was checked (None for a token from before it was said)."""
        checked_ms = claims.get("pwd_ms")
        return datetime.fromtimestamp(checked_ms / 1000, UTC) if isinstance(checked_ms, int) else None

    def decode(self, token: str, *, expected_type: str = "access") -> dict:
        try:
            claims = jwt.decode(
                token,
                self.s.secret_key,
                algorithms=[ALGORITHM],
                audience=self.s.jwt_audience,
                issuer=self.s.jwt_issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid or expired token") from exc
        if claims.get("typ") != expected_type:
            raise Unauthorized("invalid or expired token")
        return claims

    def session_limit(self, role: str) -> timedelta:
        """How long a session of ``role`` may last from its login, however often it is refreshed."""
        return self.s.staff_session_max if role in STAFF else self.s.session_max

    def _live(self, family: dict | None) -> bool:
        if not family or family["revoked"]:
            return False
        return self.clock() < family["created_at"] + self.session_limit(family["role"])

    def actor_from(self, token: str) -> Actor:
        """The caller behind an access token, or Unauthorized.

        For a person, only what the token itself proves is checked here (signature, expiry, the session's
        lifetime from ``ses``): the caller must then check the session against the person's account
        (Accounts.require_live_session), which holds the sessions ended early. A gateway's session is checked
        here, against its family."""
        claims = self.decode(token)
        try:
            role = Role(claims["role"])
        except (KeyError, ValueError) as exc:
            raise Unauthorized("invalid or expired token") from exc
        session = claims.get("fam")
        if not isinstance(session, str) or not session:
            raise Unauthorized("invalid or expired token")
        if role is Role.GATEWAY:
            family = self.families.family(session)
            if not self._live(family):
                raise Unauthorized("invalid or expired token")
            return Actor(id=claims["sub"], role=role, family=session, session_started_at=family.get("created_at"))
        started_ms = claims.get("ses")
        if not isinstance(started_ms, int) or isinstance(started_ms, bool):
            raise Unauthorized("invalid or expired token")  # issued before tokens said it: the app refreshes
        started = EPOCH + timedelta(milliseconds=started_ms)
        if self.clock() >= started + self.session_limit(role.value):
            raise Unauthorized("invalid or expired token")
        return Actor(id=claims["sub"], role=role, family=session, session_started_at=started)

    def claimed_actor(self, token: str) -> Actor | None:
        """Whom a token signed with our key names, though its session may have ended (an account deactivated or
        closed, a gateway revoked): the audit's actor of a refused request. None for a token that is not ours
        or has expired."""
        try:
            claims = self.decode(token)
            return Actor(id=str(claims["sub"]), role=Role(claims["role"]))
        except (Unauthorized, KeyError, ValueError):
            return None

    def start_session(self, user_id: str, role: str, *, started_at: datetime | None = None,
                      carrying: tuple[str, str] | None = None) -> dict:
        """A new token family (a session), started at ``started_at`` (when its password was checked) or now;
        the phone ``carrying`` (the session that registered it and its install), if any, goes on under it."""
        family_id = uuid.uuid4().hex
        started = to_millis(started_at or now())  # as the family keeps it
        self.families.start(family_id, user_id, role, started_at=started)
        if carrying is not None:
            self.phones.move_phone(user_id, carrying, family_id)
        return self._pair(user_id, role, family_id, started, secrets.token_urlsafe(32), issued=None, jti=None)

    def start_gateway_session(self, gateway_id: str) -> dict:
        """A gateway's session: one access token (15 minutes), no refresh token (it asks again with its
        secret)."""
        family_id = uuid.uuid4().hex
        started = to_millis(now())
        self.families.start(family_id, gateway_id, Role.GATEWAY.value, started_at=started)
        return {"access_token": self.access_token(gateway_id, Role.GATEWAY.value, family_id, started),
                "expires_in": self.s.access_token_ttl_s}

    def _pair(self, user_id: str, role: str, family_id: str, started_at: datetime, refresh: str, *,
              issued: datetime | None, jti: str | None) -> dict:
        self.families.add_token(hash_token(refresh), family_id, user_id,
                                now() + timedelta(seconds=self.s.refresh_token_ttl_s))
        return {
            "access_token": self.access_token(user_id, role, family_id, started_at, issued=issued, jti=jti),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.s.access_token_ttl_s,
        }

    def _successor(self, refresh_token: str) -> tuple[str, str]:
        """The refresh token that replaces ``refresh_token``, and the id of the access token issued with it:
        derived with the signing key, so a retry of the same refresh gets the same pair."""
        mac = hmac.new(self.s.secret_key.encode(), b"refresh\x1f" + refresh_token.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("="), mac[:16].hex()

    def refresh(self, refresh_token: str) -> dict:
        """Rotate: the old refresh token dies; using it again revokes its whole family (except a retry
        within the grace window, which gets the same new pair)."""
        status, doc = self.families.use_token(hash_token(refresh_token), to_millis(self.clock()))
        if status == "unknown":
            raise Unauthorized("invalid or expired token")
        successor, jti = self._successor(refresh_token)
        if status == "reused" and not self._retry_in_grace(doc, successor):
            self._end(doc["family_id"], "refresh token reused")
            raise Unauthorized("invalid or expired token")
        if doc["expires_at"] < now():
            raise Unauthorized("invalid or expired token")
        family = self.families.family(doc["family_id"])
        if not self._live(family):
            raise Unauthorized("invalid or expired token")
        return self._pair(doc["user_id"], family["role"], doc["family_id"], family["created_at"], successor,
                          issued=doc["used_at"], jti=jti)

    def _retry_in_grace(self, doc: dict, successor: str) -> bool:
        """A repeat of a refresh whose answer may have been lost: soon after the first use, and its successor
        not used yet (once the client has used the new token, the old one coming back is a theft)."""
        if doc.get("used_at") is None or self.clock() - doc["used_at"] > self.s.refresh_grace:
            return False
        following = self.families.token(hash_token(successor))
        return following is None or following.get("used_at") is None

    def end_session(self, actor: Actor) -> None:
        """Log out: this session's access and refresh tokens stop working at once."""
        if actor.role is not Role.GATEWAY:
            self._mark_ended(actor.id, actor.family, actor.session_started_at)
        self.families.revoke(actor.family, "logout")
        if actor.family is not None:
            self.phones.forget_session(actor.id, actor.family)

    def _end(self, family_id: str, reason: str) -> None:
        """End a session: on the person's account first (their access tokens die), then its family (its refresh
        tokens die; the account alone would already refuse what they lead to)."""
        family = self.families.family(family_id)
        if family is not None and family["role"] != Role.GATEWAY.value:
            self._mark_ended(family["user_id"], family_id, family["created_at"])
        self.families.revoke(family_id, reason)
        if family is not None:
            self.phones.forget_session(family["user_id"], family_id)

    def _mark_ended(self, user_id: str, family_id: str, started_at: datetime) -> None:
        """On the person's account (what each of their requests reads): this session ended early."""
        longest = max(self.s.session_max, self.s.staff_session_max)
        self.users.end_session(user_id, family_id, started_at, forget_started_before=self.clock() - longest)

    def end_every_session(self, user_id: str, reason: str, *, but: tuple[str, str] | None = None) -> None:
        """Every API session of an account ends (a password change, a deactivation, a revoked gateway), and so
        does every phone's registration but the phone ``but`` (the session and install changing the password,
        which goes on under a fresh session)."""
        self.families.revoke_all_for_user(user_id, reason)
        self.phones.delete_for_user(user_id, except_phone=but)
