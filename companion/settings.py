"""Every setting of every Companion process, read from the environment once and checked at start-up.

One table (:data:`SETTINGS`) names each setting, its environment variable, how its value is read, its
default and what it means; the README's configuration table is checked against it by a test. An
unknown or malformed value (``COMPANION_ENV=prod``, ``COMPANION_STAFF_MFA=REQUIRED``,
``COMPANION_DB_TIMEOUT_MS=5s``) raises :class:`SettingError`, whose message is one line naming the
variable and what it accepts; the entry points (web, worker, CLI) print it and exit with status 2. So does a
``COMPANION_*``, ``MONGODB_*`` or ``FCM_*`` variable that is neither a setting nor one another part of the project reads
(:data:`READ_ELSEWHERE`): a misspelt name would otherwise be ignored and its default kept unseen.

In production (``COMPANION_ENV=production``) there is no default secret nor audit key, staff MFA is always on,
and outgoing email must be configured.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

from companion.domain.people import LONGEST_CAREGIVER_ALERT_DELAY_MIN, SHORTEST_CAREGIVER_ALERT_DELAY_MIN

log = logging.getLogger(__name__)

EXIT_BAD_SETTING = 2
EXIT_DATABASE_UNAVAILABLE = 69  # EX_UNAVAILABLE: as the commands say it
ENVIRONMENTS = ("development", "production")
MFA_POLICIES = ("optional", "required")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingError(ValueError):
    """A setting is malformed, unknown, or unsafe for the environment; the message is one line."""


@dataclass(frozen=True)
class Settings:
    """What one process runs with. Build it with :func:`load_settings`; tests pass overrides."""

    env: str = "development"
    # The FerretDB that `make run` starts, so that every command finds the local run's database by default.
    mongodb_uri: str = "mongodb://127.0.0.1:27117/"
    mongodb_db: str = "companion"
    secret_key: str = ""
    staff_mfa_required: bool = False
    log_level: str = "INFO"
    metrics_token: str | None = None
    # API
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 30 * 24 * 3600
    mfa_token_ttl_s: int = 5 * 60
    login_ip_limit_per_min: int = 60
    login_account_failures: int = 10
    login_account_window_s: int = 15 * 60
    gateway_uploads_per_min: int = 60
    max_content_length: int = 1024 * 1024
    db_timeout_ms: int = 5000
    gateway_upload_concurrency: int = 1
    gateway_retry_spread_s: int = 30
    db_breaker_failures: int = 2
    db_breaker_cooldown_s: int = 2
    server_selection_timeout_ms: int = 2000
    jwt_issuer: str = "companion"
    jwt_audience: str = "companion-api"
    pairing_code_ttl_s: int = 10 * 60
    break_glass_max_minutes: int = 60
    idempotency_lease_s: int = 60
    panel_page_cache: int = 256
    sync_window: timedelta = timedelta(days=90)
    sync_settle: timedelta = timedelta(seconds=30)
    password_memory_kib: int = 65536
    password_time_cost: int = 3
    # Access: proxies, sessions, audit, mail
    trusted_proxies: int = 0
    cors_origins: tuple[str, ...] = ()
    session_max: timedelta = timedelta(days=30)
    staff_session_max: timedelta = timedelta(hours=12)
    refresh_grace: timedelta = timedelta(seconds=10)
    audit_key: str = ""
    audit_anchor_file: str | None = None
    audit_anchor_interval: timedelta = timedelta(seconds=60)
    audit_retention: timedelta = timedelta(days=2192)
    clinical_retention: timedelta = timedelta(days=3653)
    mail_dir: str | None = None
    smtp_url: str | None = None
    mail_from: str = "Companion <no-reply@companion.invalid>"
    # Push
    fcm_service_account: str | None = None
    fcm_url: str | None = None
    # Scheduler worker
    reminder_grace: timedelta = timedelta(minutes=15)
    reminder_resend_after: timedelta = timedelta(minutes=10)
    materialize_horizon: timedelta = timedelta(days=2)
    lease_ttl: timedelta = timedelta(seconds=30)
    dispatch_batch: int = 500
    push_lease: timedelta = timedelta(minutes=5)
    push_token_stale_after: timedelta = timedelta(days=60)
    caregiver_alert_delay: timedelta = timedelta(minutes=60)
    worker_metrics_port: int = 9101
    bind: str | None = None  # None: gunicorn's command line says 0.0.0.0, the worker's metrics 127.0.0.1
    sender_poll: timedelta = timedelta(seconds=2)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def pseudonym_key(self) -> bytes:
        """The key of :func:`companion.logs.pseudonym` (log lines) and of the throttles' stored digests: derived
        from the secret key, so that only who holds the secret key (who could mint any token anyway) can tell
        which address a pseudonym stands for. A new secret key gives every address a new pseudonym."""
        return hmac.new(self.secret_key.encode(), b"companion pseudonyms", hashlib.sha256).digest()

    @property
    def listen_host(self) -> str | None:
        """COMPANION_BIND's address as a socket takes it: an IPv6 address without the brackets gunicorn's ``--bind``
        needs (``[::1]``: ``::1``)."""
        if self.bind and self.bind.startswith("[") and self.bind.endswith("]"):
            return self.bind[1:-1]
        return self.bind

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests and benchmarks)."""
        return replace(self, **changes)


# -- readers: each turns the variable's text into a value or raises SettingError with what it accepts --

def _text(name: str, raw: str) -> str:
    return raw


def _one_of(*allowed: str) -> Callable[[str, str], str]:
    def read(name: str, raw: str) -> str:
        if raw not in allowed:
            raise SettingError(f"{name}={raw!r} is not valid: use one of {', '.join(allowed)}")
        return raw
    return read


def _whole(low: int, high: int) -> Callable[[str, str], int]:
    def read(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(f"{name}={raw!r} is not valid: use a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise SettingError(f"{name}={raw!r} is not valid: use a whole number from {low} to {high}")
        return value
    return read


def _duration(unit: str, low: float, high: float) -> Callable[[str, str], timedelta]:
    def read(name: str, raw: str) -> timedelta:
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(f"{name}={raw!r} is not valid: use a number of {unit} from {low:g} to {high:g}") \
                from None
        if not low <= value <= high:
            raise SettingError(f"{name}={raw!r} is not valid: use a number of {unit} from {low:g} to {high:g}")
        return timedelta(**{unit: value})
    return read


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip() for part in raw.split(",") if part.strip())
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise SettingError(f"{name}: {origin!r} is not an origin: use comma-separated scheme://host[:port], "
                               "without a path or a trailing slash")
    return origins


def _mongodb_uri(name: str, raw: str) -> str:
    from pymongo.errors import InvalidURI
    from pymongo.uri_parser import parse_uri

    if raw.startswith("mongodb+srv://"):  # parsing one looks its host up in DNS: left to the driver
        return raw
    try:
        parse_uri(raw)
    except (InvalidURI, ValueError) as exc:
        raise SettingError(f"{name} is not a MongoDB connection string ({str(exc).splitlines()[0][:120]}): use "
                           "mongodb://host:port/ or mongodb+srv://...") from None
    return raw


_DATABASE_NAME = re.compile(r'^[^/\\. "$\x00]{1,63}$')  # MongoDB's rules for a database name


def _database_name(name: str, raw: str) -> str:
    if not _DATABASE_NAME.match(raw):
        raise SettingError(f"{name}={raw!r} is not a database name: 1 to 63 characters, none of / \\ . space \" $")
    return raw


_SMTP_FORMS = "smtp://host:port (no credentials), smtp+starttls://user:password@host:port or " \
              "smtps://user:password@host:port"


def _smtp_url(name: str, raw: str) -> str:
    from urllib.parse import urlsplit

    from companion.notify.mail import SMTP_SCHEMES, smtp_url_problem

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme not in SMTP_SCHEMES or not parts.hostname or (
            port is None and parts.netloc.rpartition("@")[2].count(":")):
        raise SettingError(f"{name} is not valid: use {_SMTP_FORMS}")
    if (problem := smtp_url_problem(raw)) is not None:
        raise SettingError(f"{name} is refused: {problem}")
    return raw


def _service_account_file(name: str, raw: str) -> str:
    """A Firebase service-account key file, checked as firebase-admin will read it: JSON with ``"type":
    "service_account"``, a project id, a private key and a client email. The app's google-services.json (or
    GoogleService-Info.plist), the file app teams hand over most often, is named as such."""
    import json

    try:
        with open(raw, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SettingError(f"{name}={raw!r} cannot be read as a JSON file ({type(exc).__name__})") from None
    where = ("create a service-account key in the Firebase console (Project settings > Service accounts > "
             "Generate new private key) and name that file")
    if not isinstance(document, dict):
        raise SettingError(f"{name}={raw!r} is JSON but not a Firebase service-account key: {where}")
    if "project_info" in document and "client" in document:
        raise SettingError(f"{name}={raw!r} is an app's google-services.json (the phone app's configuration), not "
                           f"a service-account key: {where}")
    if document.get("type") != "service_account":
        raise SettingError(f"{name}={raw!r} is not a Firebase service-account key (its \"type\" is "
                           f"{document.get('type')!r}, not 'service_account'): {where}")
    missing = [key for key in ("project_id", "private_key", "client_email", "token_uri")
               if not isinstance(document.get(key), str) or not document[key].strip()]
    if missing:
        raise SettingError(f"{name}={raw!r} is a service-account key without {', '.join(missing)}: {where}")
    if "PRIVATE KEY-----" not in document["private_key"]:
        raise SettingError(f"{name}={raw!r} is a service-account key whose private_key is not a PEM key: {where}")
    return raw


def _bind_address(name: str, raw: str) -> str:
    """An address to listen on as gunicorn's ``--bind`` takes it (the Procfile and the image pass
    ``${COMPANION_BIND}:${PORT}``): an IPv4 address, a host name, or an IPv6 address in brackets (``[::]``), since
    gunicorn reads ``:::5000`` as no address. ``Settings.listen_host`` is it without the brackets, as a socket takes it."""
    import ipaddress

    usage = "use an IP address such as 127.0.0.1 or 0.0.0.0, an IPv6 address in brackets such as [::], or a host name"
    if raw.startswith("[") and raw.endswith("]"):
        try:
            ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise SettingError(f"{name}={raw!r} is not an address to listen on: only an IPv6 address goes in "
                               f"brackets; {usage} (no port)") from None
        return raw
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?", raw):
            raise SettingError(f"{name}={raw!r} is not an address to listen on: {usage} (no port)") from None
        return raw
    if address.version == 6:  # gunicorn would be given ':::5000', which it refuses
        raise SettingError(f"{name}={raw!r} is an IPv6 address without brackets: write [{raw}] (gunicorn's --bind "
                           "is given the address and the port together)")
    return raw


def _mfa(name: str, raw: str) -> bool:
    return _one_of(*MFA_POLICIES)(name, raw) == "required"


@dataclass(frozen=True)
class Setting:
    """One environment variable: the Settings field it sets, how it is read, and what it means."""

    variable: str
    field: str
    read: Callable[[str, str], Any]
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("COMPANION_ENV", "env", _one_of(*ENVIRONMENTS),
            "`production` requires a secret key, forces staff MFA, refuses demo data"),
    Setting("MONGODB_URI", "mongodb_uri", _mongodb_uri, "database; when set, the scripts start no database"),
    Setting("MONGODB_DB", "mongodb_db", _database_name, "database name"),
    Setting("COMPANION_SECRET_KEY", "secret_key", _text,
            "JWT signing key, at least 32 characters (random per process in development); the logs' and the "
            "throttles' keyed pseudonyms of addresses derive from it"),
    Setting("COMPANION_STAFF_MFA", "staff_mfa_required", _mfa,
            "`required` makes clinicians and admins complete TOTP before getting a token"),
    Setting("COMPANION_LOG_LEVEL", "log_level", _one_of(*LOG_LEVELS), "log level"),
    Setting("COMPANION_METRICS_TOKEN", "metrics_token", _text,
            "when set, GET /metrics needs `Authorization: Bearer <token>` (the scraper's)"),
    Setting("COMPANION_DB_TIMEOUT_MS", "db_timeout_ms", _whole(100, 120_000),
            "every database operation's budget (sent as maxTimeMS); a dead database answers 503 within it"),
    Setting("COMPANION_ACCESS_TOKEN_TTL", "access_token_ttl_s", _whole(60, 3600), "access-token lifetime in seconds"),
    Setting("COMPANION_GATEWAY_UPLOADS_PER_MIN", "gateway_uploads_per_min", _whole(1, 10**7),
            "session-record batches each gateway may post per minute, and dead-letter reports apart"),
    Setting("COMPANION_GATEWAY_UPLOAD_CONCURRENCY", "gateway_upload_concurrency", _whole(1, 1000),
            "gateway uploads one web server runs at once, all its worker processes together; more are answered 503 "
            "with a Retry-After, so that patients' and clinicians' requests keep threads and database time"),
    Setting("COMPANION_GATEWAY_RETRY_SPREAD_S", "gateway_retry_spread_s", _whole(1, 3600),
            "a gateway turned away is told to retry after a random 1..this many seconds (spreads reconnects)"),
    Setting("COMPANION_DB_BREAKER_FAILURES", "db_breaker_failures", _whole(1, 1000),
            "consecutive requests that cannot reach the database before the others are answered 503 at once"),
    Setting("COMPANION_DB_BREAKER_COOLDOWN_S", "db_breaker_cooldown_s", _whole(1, 60),
            "how long requests are answered 503 at once before one probes the database again (doubles, to 30 s)"),
    Setting("COMPANION_PANEL_PAGE_CACHE", "panel_page_cache", _whole(0, 100_000),
            "pages of clinicians' panels each web process keeps, answered again while no entry of the team has "
            "changed (checked against the database on every read) and for at most a minute; 0 keeps none"),
    Setting("COMPANION_IDEMPOTENCY_LEASE_S", "idempotency_lease_s", _whole(5, 3600),
            "how long a request holding an Idempotency-Key may run before a retry takes the key over"),
    Setting("COMPANION_SYNC_WINDOW_DAYS", "sync_window", _duration("days", 1, 3650),
            "how long deletions are kept for phones that sync rarely; an older sync cursor must resync in full"),
    Setting("COMPANION_SYNC_SETTLE_S", "sync_settle", _duration("seconds", 5, 3600),
            "how long a change feed waits for a write that reserved its change number and has not finished"),
    Setting("COMPANION_PASSWORD_MEMORY_KIB", "password_memory_kib", _whole(1024, 4 * 1024 * 1024),
            "argon2id memory cost (tests lower it; production keeps the default)"),
    Setting("COMPANION_PASSWORD_TIME_COST", "password_time_cost", _whole(1, 20), "argon2id passes"),
    Setting("COMPANION_TRUSTED_PROXIES", "trusted_proxies", _whole(0, 10),
            "how many proxies in front of the API to trust for X-Forwarded-For/-Proto (0: use the socket's address)"),
    Setting("COMPANION_CORS_ORIGINS", "cors_origins", _origins,
            "comma-separated origins (`https://app.example.org`) whose web pages may call the API (CORS); empty: none"),
    Setting("COMPANION_SESSION_MAX_DAYS", "session_max", _duration("days", 1, 365),
            "absolute lifetime of a patient's or caregiver's session, however often it is refreshed"),
    Setting("COMPANION_STAFF_SESSION_MAX_H", "staff_session_max", _duration("hours", 1, 24),
            "absolute lifetime of a clinician's or admin's API session"),
    Setting("COMPANION_REFRESH_GRACE_S", "refresh_grace", _duration("seconds", 0, 60),
            "a refresh retried this soon with the same token gets the same new pair instead of ending the session"),
    Setting("COMPANION_AUDIT_KEY", "audit_key", _text,
            "HMAC key of the audit chain, at least 32 characters, kept outside the database (production: required)"),
    Setting("COMPANION_AUDIT_ANCHOR_FILE", "audit_anchor_file", _text,
            "file the audit checkpoints are appended to (they are also logged); `companion audit-verify` reads it"),
    Setting("COMPANION_AUDIT_ANCHOR_S", "audit_anchor_interval", _duration("seconds", 1, 3600),
            "an audit event is covered by a checkpoint at most this long after it is written"),
    Setting("COMPANION_AUDIT_RETENTION_DAYS", "audit_retention", _duration("days", 365, 36525),
            "audit events older than this are deleted by the worker (a keyed cut record keeps the chains verifiable)"),
    Setting("COMPANION_CLINICAL_RETENTION_DAYS", "clinical_retention", _duration("days", 365, 36525),
            "how long a closed patient account's clinical record is kept before the worker deletes it"),
    Setting("COMPANION_MAIL_DIR", "mail_dir", _text, "directory each outgoing email is written to as a .eml file"),
    Setting("COMPANION_SMTP_URL", "smtp_url", _smtp_url,
            "`smtp+starttls://user:password@host:port` (STARTTLS), `smtps://user:password@host:port` (TLS) or "
            "`smtp://host:port` (no credentials: refused with them, they would cross in plain text): outgoing email "
            "(signup codes)"),
    Setting("COMPANION_MAIL_FROM", "mail_from", _text, "sender address of outgoing email"),
    Setting("FCM_SERVICE_ACCOUNT", "fcm_service_account", _service_account_file,
            "path of the Firebase service-account key (JSON, `\"type\": \"service_account\"`; not the app's google-services.json)"),
    Setting("FCM_URL", "fcm_url", _text, "FCM send endpoint (the run script points it at the local emulator)"),
    Setting("COMPANION_REMINDER_GRACE_MIN", "reminder_grace", _duration("minutes", 1, 24 * 60),
            "worker: a reminder push still goes out this late (catch-up after a restart)"),
    Setting("COMPANION_REMINDER_RESEND_MIN", "reminder_resend_after", _duration("minutes", 1, 24 * 60),
            "worker: a reminder the app did not confirm is sent once more after this delay"),
    Setting("COMPANION_CAREGIVER_ALERT_DELAY_MIN", "caregiver_alert_delay",
            _duration("minutes", SHORTEST_CAREGIVER_ALERT_DELAY_MIN, LONGEST_CAREGIVER_ALERT_DELAY_MIN),
            "worker: missed-session delay for patients who have not chosen their own"),
    # At least 3 s: renewed every third of it, a shorter lease lapses at the first slow round trip to the database.
    Setting("COMPANION_LEASE_TTL_S", "lease_ttl", _duration("seconds", 3, 3600),
            "worker: leader-lease length, renewed every third of it"),
    Setting("COMPANION_PUSH_LEASE_S", "push_lease", _duration("seconds", 1, 3600),
            "worker: how long a batch being pushed is held before another worker may send it again"),
    Setting("COMPANION_WORKER_METRICS_PORT", "worker_metrics_port", _whole(0, 65535),
            "worker: the port of its Prometheus metrics (0: not served)"),
    # Read by the shell too: the Procfile's and the image's gunicorn --bind (default 0.0.0.0 there).
    Setting("COMPANION_BIND", "bind", _bind_address,
            "the address gunicorn (Procfile, image) and the worker's metrics listen on"),
    Setting("COMPANION_DISPATCH_BATCH", "dispatch_batch", _whole(1, 500),
            "worker and senders: notifications claimed and pushed together (at most 500, FCM's send_each)"),
    Setting("COMPANION_SENDER_POLL_S", "sender_poll", _duration("seconds", 1, 600),
            "sender processes: how often an idle sender looks for due notifications"),
)
_BY_FIELD = {s.field: s for s in SETTINGS}

PREFIX = "COMPANION_"
# The families of names checked for misspellings: the project's own, and the database's and Firebase's settings
# (MONGODB_DB_NAME for MONGODB_DB would have the service write patients' data into the default database, unsaid).
PREFIXES = (PREFIX, "MONGODB_", "FCM_")
# The COMPANION_* variables that are no setting of these processes, each with what reads it. Any other COMPANION_*
# variable set is refused (load_settings): behind a load balancer, COMPANION_TRUSTED_PROXY=1 (for
# COMPANION_TRUSTED_PROXIES) left every client with the balancer's address, one sign-in throttle for all, and
# nothing said so. A variable read anywhere in the project is a setting or is listed here
# (tests/api/test_settings.py looks for every COMPANION_ name in the repository).
READ_ELSEWHERE: dict[str, str] = {
    # How `make run` (scripts/run-local.sh), the Procfile and the image start the processes
    "COMPANION_DB_PORT": "scripts/run-local.sh: the port of the FerretDB it starts",
    "COMPANION_FCM_PORT": "scripts/run-local.sh: the port of the FCM emulator it starts",
    "COMPANION_ADMISSION_DIR": "gunicorn.conf.py, for companion.http.admission: the lock files web workers share",
    # Commands
    "COMPANION_NEW_PASSWORD": "`companion create-user`: the new account's password",
    # The test suite's switches
    "COMPANION_SKIP_INDEXES": "companion.create_app: 1 skips creating indexes at start (a test's app)",
    "COMPANION_BROWSER_TESTS": "scripts/test.sh: 0 skips installing Chromium for the browser tests",
    "COMPANION_TEST_WORKERS": "scripts/test.sh: pytest processes the suite runs in (2; 0 runs it in one)",
    "COMPANION_FUZZ_EXAMPLES": "tests/proof/test_schemathesis.py: examples per operation",
    "COMPANION_FUZZ_STEPS": "tests/proof/test_schemathesis.py: steps of the stateful run",
    # The home gateway (device_gateway/config.py, docs/device-gateway.md), which may run beside the server
    "COMPANION_API_URL": "the gateway: the API's base URL",
    "COMPANION_GATEWAY_STATE_DIR": "the gateway: its state directory",
    "COMPANION_GATEWAY_ID": "the gateway: its credentials (instead of pairing)",
    "COMPANION_GATEWAY_SECRET": "the gateway: its credentials (instead of pairing)",
    "COMPANION_GATEWAY_MAX_BUFFER_BYTES": "the gateway: its buffer's cap",
    "COMPANION_GATEWAY_CA_FILE": "the gateway: the CA bundle that signs the API's certificate",
    "COMPANION_GATEWAY_KEY_FILE": "the gateway: its buffer's encryption key",
}


# What Kubernetes puts into every pod for every Service of the namespace (service links): for a Service named
# "companion", "mongodb" or "fcm", or one whose name begins so ("mongodb-metrics", a chart's exporter beside the
# database: MONGODB_METRICS_SERVICE_HOST, MONGODB_METRICS_PORT_9216_TCP_ADDR, ...). Set by the platform, not by an
# operator, so not taken for misspellings; the service's <NAME>_SERVICE_HOST, which Kubernetes always sets with
# them, must be there too (else COMPANION_WORKER_METRIC_PORT, a misspelling, would pass for a service's link).
_LINK = r"(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)"
SERVICE_LINKS = re.compile(rf"(COMPANION|MONGODB|FCM)(_[A-Z0-9_]+?)??_{_LINK}")  # the shape, whatever the service
_LINK_AFTER_SERVICE = re.compile(_LINK)


def _link_hosts(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The one rule of what is a service link (see SERVICE_LINKS): for each split of ``name`` into a service's name
    and a link's suffix (``PORT``, ``SERVICE_PORT``, ``PORT_5000_TCP_ADDR``...) whose service host is set, that host
    (<SERVICE>_SERVICE_HOST), by the suffix; empty when ``name`` is no Service's link."""
    if not SERVICE_LINKS.fullmatch(name):
        return {}
    splits = ((name[:i], name[i + 1:]) for i, c in enumerate(name) if c == "_")
    hosts = {suffix: environ.get(f"{service}_SERVICE_HOST", "").strip() for service, suffix in splits
             if _LINK_AFTER_SERVICE.fullmatch(suffix)}
    return {suffix: host for suffix, host in hosts.items() if host}


_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://(\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+)):[0-9]{1,5}")


def _is_service_link(name: str, raw: str, environ: Mapping[str, str]) -> bool:
    """Whether a setting's value is the link Kubernetes set for a Service whose name makes the setting's name
    (a Service "companion-worker-metrics" sets COMPANION_WORKER_METRICS_PORT=tcp://<its address>:<its port>, with
    COMPANION_WORKER_METRICS_SERVICE_HOST=<its address> beside it), not a value an operator gave."""
    found = _LINK_VALUE.fullmatch(raw)
    return found is not None and _link_hosts(name, environ).get("PORT") == (found["v6"] or found["host"])


def _refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    """Refuse every COMPANION_*, MONGODB_* or FCM_* variable set (not empty) that is neither a setting nor in
    READ_ELSEWHERE, naming the nearest known name of the same family (compared without the prefix they share)."""
    names = [s.variable for s in SETTINGS] + list(READ_ELSEWHERE)
    said = []
    for name in sorted(environ):
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None or name in names or not environ[name].strip() or _link_hosts(name, environ):
            continue
        known = [n[len(prefix):] for n in names if n.startswith(prefix)]
        rest = name[len(prefix):]
        # the nearest by spelling, else the longest known name the variable begins with (MONGODB_DB_NAME: DB)
        nearest = difflib.get_close_matches(rest, known, n=1) or sorted(
            (k for k in known if rest.startswith(k + "_")), key=len, reverse=True)[:1]
        said.append(f"{name} (did you mean {prefix}{nearest[0]}?)" if nearest else name)
    if not said:
        return
    verb, them = ("is", "it") if len(said) == 1 else ("are", "them")
    raise SettingError(f"{', '.join(said)} {verb} set but nothing reads {them}: correct or unset {them} (the README's "
                       "configuration table lists the settings)")


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from the environment, apply ``overrides`` (tests), and check the result.

    Raises :class:`SettingError` (one line) for a malformed, unknown or unsafe value, and for a COMPANION_*,
    MONGODB_* or FCM_* variable that no part of the project reads (a misspelt name)."""
    environ = os.environ if environ is None else environ
    _refuse_unknown_variables(environ)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.variable, "")
        if raw == "":
            continue
        raw = raw.strip()
        if _is_service_link(setting.variable, raw, environ):
            # Set by the platform, not by an operator (whose value in the pod's env would replace it): refusing it
            # stopped every process of the namespace at start.
            service = setting.variable.removesuffix("_PORT").lower().replace("_", "-")
            log.warning("%s=%s is ignored: it is the service link Kubernetes sets for the Service %s, not a "
                        "setting; its default is kept (set the variable in the pod's env to choose a value)",
                        setting.variable, raw, service)
        else:
            values[setting.field] = setting.read(setting.variable, raw)
    known = {f.name for f in fields(Settings)}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise SettingError(f"unknown setting {key!r}")
        values[key] = value
    settings = Settings(**values)
    if settings.is_production:
        if len(settings.secret_key) < 32:
            raise SettingError("COMPANION_SECRET_KEY must be set to at least 32 characters in production")
        if len(settings.audit_key) < 32 or settings.audit_key == settings.secret_key:
            raise SettingError("COMPANION_AUDIT_KEY must be set in production: at least 32 characters, "
                               "not the same as COMPANION_SECRET_KEY")
        if not (settings.mail_dir or settings.smtp_url):
            raise SettingError("COMPANION_SMTP_URL (or COMPANION_MAIL_DIR) must be set in production: "
                               "signing up sends a code by email")
        settings = replace(settings, staff_mfa_required=True)
    elif not settings.secret_key:
        # A per-process random key: safe (tokens die with the process) and never usable in production.
        # The run scripts set COMPANION_SECRET_KEY so that several gunicorn workers agree.
        settings = replace(settings, secret_key=secrets.token_urlsafe(48))
    elif len(settings.secret_key) < 32:
        raise SettingError("COMPANION_SECRET_KEY is too short: use at least 32 characters")
    if settings.metrics_token is not None and len(settings.metrics_token) < 16:
        raise SettingError("COMPANION_METRICS_TOKEN is too short: use at least 16 characters")
    if settings.audit_key and len(settings.audit_key) < 32:
        raise SettingError("COMPANION_AUDIT_KEY is too short: use at least 32 characters")
    if not settings.audit_key:
        # Development: a key derived from the secret key (stable wherever the secret key is, e.g. the run script's).
        derived = hmac.new(settings.secret_key.encode(), b"companion audit chain", hashlib.sha256).hexdigest()
        settings = replace(settings, audit_key=derived)
    if settings.smtp_url:
        _smtp_url("COMPANION_SMTP_URL", settings.smtp_url)  # given as an override, not read from the environment
    _check_settle_outlasts_writes(settings)
    return settings


SETTLE_OVER_DB_TIMEOUT = 3  # the settle time is at least this many database timeouts


def _check_settle_outlasts_writes(settings: Settings) -> None:
    """A write whose answer was lost keeps its change numbers for the settle time and is never stamped again
    (companion.services.sync): the database may still apply it for as long as its timeout lets it run, and a feed
    that moved past its numbers before then would skip it for good. So the settle time must stay well above the
    database timeout: at least ``SETTLE_OVER_DB_TIMEOUT`` times it."""
    needed = SETTLE_OVER_DB_TIMEOUT * timedelta(milliseconds=settings.db_timeout_ms)
    if settings.sync_settle < needed:
        raise SettingError(
            f"COMPANION_SYNC_SETTLE_S ({settings.sync_settle.total_seconds():g} s) must be at least "
            f"{SETTLE_OVER_DB_TIMEOUT} times COMPANION_DB_TIMEOUT_MS ({settings.db_timeout_ms} ms), so at least "
            f"{-(-needed // timedelta(seconds=1))} s: a write whose answer was lost may still land for as long as "
            "the database timeout, and feeds wait for it only the settle time; raise COMPANION_SYNC_SETTLE_S or "
            "lower COMPANION_DB_TIMEOUT_MS")


def variable_of(field_name: str) -> str | None:
    """The environment variable that sets a Settings field (None for fields tests alone set)."""
    setting = _BY_FIELD.get(field_name)
    return setting.variable if setting else None
