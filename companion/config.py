"""Settings from the environment, with safe defaults for local runs.

Every setting is an environment variable documented in the README. In production
(`COMPANION_ENV=production`) there is no default secret: start-up fails instead.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields


class ConfigError(RuntimeError):
    """A setting is missing or unsafe for the environment we run in."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass
class Settings:
    env: str = "development"
    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "companion"
    secret_key: str = ""
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    mfa_token_ttl_s: int = 5 * 60
    staff_mfa_required: bool = False
    login_ip_limit_per_min: int = 60
    login_account_failures: int = 10
    login_account_window_s: int = 15 * 60
    gateway_uploads_per_min: int = 60
    max_content_length: int = 1024 * 1024
    db_timeout_ms: int = 5000
    server_selection_timeout_ms: int = 2000
    jwt_issuer: str = "companion"
    jwt_audience: str = "companion-api"
    pairing_code_ttl_s: int = 10 * 60
    break_glass_max_minutes: int = 60
    password_memory_kib: int = 65536
    password_time_cost: int = 3
    fcm_service_account: str | None = None
    fcm_url: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"


def load_settings(overrides: dict | None = None) -> Settings:
    """Build settings from COMPANION_* environment variables, then apply overrides (tests)."""
    s = Settings(
        env=_env("COMPANION_ENV", "development"),
        mongodb_uri=_env("MONGODB_URI", "mongodb://127.0.0.1:27017/"),
        mongodb_db=_env("MONGODB_DB", "companion"),
        secret_key=_env("COMPANION_SECRET_KEY", ""),
        staff_mfa_required=_env("COMPANION_STAFF_MFA", "") == "required",
        fcm_service_account=_env("FCM_SERVICE_ACCOUNT"),
        fcm_url=_env("FCM_URL"),
    )
    if _env("COMPANION_DB_TIMEOUT_MS"):
        s.db_timeout_ms = int(_env("COMPANION_DB_TIMEOUT_MS"))
    if _env("COMPANION_PASSWORD_MEMORY_KIB"):
        s.password_memory_kib = int(_env("COMPANION_PASSWORD_MEMORY_KIB"))
        s.password_time_cost = int(_env("COMPANION_PASSWORD_TIME_COST", "1"))
    if _env("COMPANION_ACCESS_TOKEN_TTL"):
        s.access_token_ttl_s = int(_env("COMPANION_ACCESS_TOKEN_TTL"))
    if _env("COMPANION_GATEWAY_UPLOADS_PER_MIN"):
        s.gateway_uploads_per_min = int(_env("COMPANION_GATEWAY_UPLOADS_PER_MIN"))
    known = {f.name for f in fields(Settings)}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        setattr(s, key, value)
    if s.is_production:
        if len(s.secret_key) < 32:
            raise ConfigError("COMPANION_SECRET_KEY must be set to at least 32 characters in production")
        s.staff_mfa_required = True
    elif not s.secret_key:
        # A per-process random key: safe (tokens die with the process) and never usable in production.
        # The run scripts set COMPANION_SECRET_KEY so that several gunicorn workers agree.
        s.secret_key = secrets.token_urlsafe(48)
    return s
