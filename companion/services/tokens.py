"""Access tokens (short-lived JWTs) and rotating refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

import jwt

from companion.clock import now
from companion.domain.access import Actor, Role
from companion.domain.errors import Unauthorized
from companion.settings import Settings
from companion.store.tokens import TokenFamilies

ALGORITHM = "HS256"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(self, settings: Settings, families: TokenFamilies):
        self.s = settings
        self.families = families

    def _encode(self, claims: dict, ttl_s: int) -> str:
        issued = now()
        payload = {
            **claims,
            "iss": self.s.jwt_issuer,
            "aud": self.s.jwt_audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + timedelta(seconds=ttl_s),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self.s.secret_key, algorithm=ALGORITHM)

    def access_token(self, user_id: str, role: str, family_id: str) -> str:
        return self._encode({"sub": user_id, "role": role, "fam": family_id, "typ": "access"},
                            self.s.access_token_ttl_s)

    def mfa_token(self, user_id: str, role: str) -> str:
        """A token that proves the password only; it opens nothing but the MFA step."""
        return self._encode({"sub": user_id, "role": role, "typ": "mfa"}, self.s.mfa_token_ttl_s)

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

    def actor_from(self, token: str) -> Actor:
        claims = self.decode(token)
        try:
            role = Role(claims["role"])
        except (KeyError, ValueError) as exc:
            raise Unauthorized("invalid or expired token") from exc
        family = self.families.family(claims.get("fam")) if claims.get("fam") else None
        if not family or family["revoked"]:
            raise Unauthorized("invalid or expired token")
        return Actor(id=claims["sub"], role=role, family=family["_id"], session_started_at=family.get("created_at"))

    def start_session(self, user_id: str, role: str) -> dict:
        family_id = uuid.uuid4().hex
        self.families.start(family_id, user_id, role)
        return self._pair(user_id, role, family_id)

    def _pair(self, user_id: str, role: str, family_id: str) -> dict:
        refresh = secrets.token_urlsafe(32)
        self.families.add_token(hash_token(refresh), family_id, user_id,
                                now() + timedelta(seconds=self.s.refresh_token_ttl_s))
        return {
            "access_token": self.access_token(user_id, role, family_id),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.s.access_token_ttl_s,
        }

    def refresh(self, refresh_token: str) -> dict:
        """Rotate: the old refresh token dies; using it again revokes its whole family."""
        status, doc = self.families.use_token(hash_token(refresh_token))
        if status == "reused":
            self.families.revoke(doc["family_id"], "refresh token reused")
            raise Unauthorized("invalid or expired token")
        if status == "unknown" or doc["expires_at"] < now():
            raise Unauthorized("invalid or expired token")
        family = self.families.family(doc["family_id"])
        if not family or family["revoked"]:
            raise Unauthorized("invalid or expired token")
        return self._pair(doc["user_id"], family["role"], doc["family_id"])

    def end_session(self, actor: Actor) -> None:
        """Log out: this session's access and refresh tokens stop working at once."""
        self.families.revoke(actor.family, "logout")

    def end_every_session(self, user_id: str, reason: str) -> None:
        """Every API session of an account ends (a password change, a deactivation)."""
        self.families.revoke_all_for_user(user_id, reason)
