"""Device keys (OWASP's "device cookies"): what lets the owner sign in while someone else guesses their password.

A sign-in with the right password is given a key that names the account and when the password was proven,
signed with HMAC-SHA256 under a key derived from ``COMPANION_SECRET_KEY``; the phone app keeps it and sends it
with its next sign-in (``device_key`` in ``POST /auth/login``), the clinician pages keep it in a long-lived
HttpOnly cookie. A sign-in presenting a key valid for its account skips the delays that failures naming the account
build up, from anywhere and from the caller's own network (companion.domain.throttling), so an outsider who knows
only the email, elsewhere or on the owner's Wi-Fi, cannot keep the owner out of a device that signed in before.

A key is valid for the account it names, for ``LIFETIME`` after it was given, and only while the account accepts
sessions of that age (``Account.accepts_session_from``): a change or reset of the password, a cleared
authenticator, a deactivation end every key given before, as they end every session. Nothing is stored per key:
a key is unguessable without the secret key (its MAC) and unique (its random part, which also names it in the
throttle's counters of its failures). Anything else presented as a key (wrong, forged, another account's,
outdated) counts as no key, never as an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from companion.domain.people import Account

VERSION = "dk1"
# As long as a browser keeps a cookie (Chrome caps their life at 400 days); each sign-in gives a fresh key.
LIFETIME = timedelta(days=400)
MAX_LENGTH = 200


class DeviceKeys:
    def __init__(self, secret_key: str):
        self._key = hmac.new(secret_key.encode(), b"companion device keys", hashlib.sha256).digest()

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, account_id: str, proven_at: datetime) -> str:
        """A key for ``account_id``, whose password was proven at ``proven_at``."""
        proven_ms = int(proven_at.timestamp()) * 1000 + proven_at.microsecond // 1000
        body = f"{VERSION}.{account_id}.{proven_ms}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, value: str | None, account: Account | None, at: datetime) -> str | None:
        """The key's id (its random part) if ``value`` is a key valid now for ``account``; None otherwise."""
        if not value or account is None or len(value) > MAX_LENGTH:
            return None
        body, _, mac = value.rpartition(".")
        parts = body.split(".")
        if len(parts) != 4 or parts[0] != VERSION or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        _, account_id, proven_ms, key_id = parts
        proven_at = datetime.fromtimestamp(int(proven_ms) / 1000, tz=UTC)
        if account_id != account.id or not proven_at <= at < proven_at + LIFETIME:
            return None
        return key_id if account.accepts_session_from(proven_at) else None
