"""Companion: the API for people living with chronic pain who use a wearable TENS unit."""

from __future__ import annotations

import atexit
import os
import weakref

from flask import Flask

from companion.http.json_provider import IsoJSONProvider
from companion.logs import configure_logging
from companion.settings import load_settings

API_DESCRIPTION = """Therapy plans, reminders, pain diary, mindfulness library, TENS session ingestion and clinician
review. Errors are RFC 9457 problem details.

**Sync.** Each collection an app caches has a change feed (`GET .../changes?cursor=`): the objects created,
changed or deleted (tombstones, `deleted: true`) after the cursor, oldest change first, and `next_cursor`;
read while `has_more`. A feed never skips a change, even one whose write commits late. **410** (problem type
`resync-required`): the cursor can no longer be continued from (older than the 90-day sync window, from an
older API, or, for a caregiver, issued before the patient allowed or withdrew their own words): drop the local
copy and read from the start, without a cursor.

**Conflicts.** Every object the app edits has a `version`, sent as its `ETag`. `If-Match: "<version>"` on
PUT, PATCH or DELETE writes only that version, atomically: otherwise **412** with the object as it is now in
the problem's `current` member. Without If-Match a PATCH changes only the fields it names. `If-None-Match`
on a GET answers 304 while nothing changed. Every other JSON read (today, the panel, the review, lists and
feeds) carries a weak ETag, a hash of the answer and of the caller: `If-None-Match` with it is a 304 with no
body while the answer is unchanged.

**Retries.** A PATCH that changes nothing, a DELETE of something already deleted, and a diary entry sent
again with its `client_entry_id` and the same content all answer as the first time; the same
`client_entry_id` with other content is 409 with the stored entry. POSTs that create something take an
`Idempotency-Key`, kept per caller (but for the public sign-up steps and gateway pairing, and the pairing and
password reset codes, whose retries make nothing twice). The README's "Sync, conflicts and retries" section
has the details.

**Cross-origin.** Only the origins the operator lists (`COMPANION_CORS_ORIGINS`) get
`Access-Control-Allow-Origin` (with `Vary: Origin`) and may read `ETag`, `Location`, `Link`, `Retry-After`,
`Idempotent-Replayed`, `X-Request-ID`, `traceresponse`, `WWW-Authenticate` and `X-Server-Time`
(`Access-Control-Expose-Headers`); their preflight (`OPTIONS`, 204 with `Allow`) may send `Authorization`,
`Content-Type`, `Idempotency-Key`, `If-Match`, `If-None-Match`, `X-Request-ID` and `traceparent`. No cookies:
tokens go in `Authorization`."""


def _anchor_at_exit(services_ref) -> None:
    """Anchor the audit chain's last events when the process exits (a gunicorn worker stopping)."""
    import logging

    services = services_ref()
    if services is None:
        return
    logging.raiseExceptions = False  # at exit a log stream may be closed already; the anchor file still gets it
    services.anchor_audit()


def create_app(test_config: dict | None = None, *, services=None) -> Flask:
    """Application factory. `test_config` overrides settings (see companion.settings.Settings)."""
    from companion import api, web
    from companion.http import (
        admission,
        auditing,
        bodies,
        conditional,
        correlation,
        cors,
        headers,
        paging,
        problems,
        security,
        server_time,
    )
    from companion.services.container import Services

    settings = load_settings(test_config)
    configure_logging(settings.log_level)
    app = Flask(__name__)
    # A path with "//" in it (an id such as "a://b") is no route's: answered 404 as problem details, not
    # redirected (308, an HTML body) to another path.
    app.url_map.merge_slashes = False
    app.json = IsoJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        API_TITLE="Companion API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs-assets/",
        API_SPEC_OPTIONS={
            "info": {"description": API_DESCRIPTION},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
        },
        JSON_SORT_KEYS=False,
    )
    app.extensions["companion"] = services or Services(settings)
    atexit.register(_anchor_at_exit, weakref.ref(app.extensions["companion"]))
    api.register(app, problems.ProblemApi(app))
    web.register(app)
    correlation.install(app)  # first, so that its after-request hook runs last and sees the final answer
    admission.install(app, app.extensions["companion"].health.reachable,
                      gateway_concurrency=settings.gateway_upload_concurrency,
                      gateway_retry_spread_s=settings.gateway_retry_spread_s,
                      breaker_failures=settings.db_breaker_failures, breaker_cooldown_s=settings.db_breaker_cooldown_s,
                      shared_dir=os.environ.get(admission.SHARED_DIR_VARIABLE) or None)
    auditing.install(app)
    cors.install(app, settings.cors_origins)  # before the gate: a preflight carries no credentials
    security.install(app)
    paging.install(app)
    conditional.install(app)  # after auditing: its hook runs first, so a 304 is audited as such
    bodies.install(app)
    headers.install(app)
    headers.trust_proxies(app, settings.trusted_proxies)
    problems.register(app)
    server_time.install(app)
    if os.environ.get("COMPANION_SKIP_INDEXES") != "1":
        app.extensions["companion"].health.ensure_indexes_at_start()
    return app
