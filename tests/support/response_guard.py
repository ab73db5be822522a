"""A guard on every JSON response the tests see: no secret or internal field ever leaves the API."""

from __future__ import annotations

import json

DENYLIST = {"password_hash", "password", "mfa_secret", "secret_hash", "fcm_token", "fcm_tokens", "token_hash",
            "refresh_token_hash", "internal_notes", "gateway_secret_hash"}
# Endpoints whose job is to hand a secret to its owner, once.
ALLOWED = {"auth.Login": {"refresh_token"}, "auth.Refresh": {"refresh_token"},
           "gateways.Pair": {"gateway_secret"}, "auth.MfaEnrol": {"secret"}}


def forbidden_keys(value, found: set | None = None) -> set:
    found = set() if found is None else found
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in DENYLIST or key == "mfa":
                found.add(key)
            forbidden_keys(inner, found)
    elif isinstance(value, list):
        for inner in value:
            forbidden_keys(inner, found)
    return found


def install(app, violations: list) -> None:
    @app.after_request
    def check(response):
        from flask import request

        # The API description names fields (e.g. the login schema's `password`); it carries no data.
        if (request.endpoint or "").startswith("api-docs."):
            return response
        if response.mimetype in ("application/json", "application/problem+json"):
            try:
                body = json.loads(response.get_data(as_text=True) or "null")
            except ValueError:
                return response
            if response.mimetype == "application/problem+json" and isinstance(body, dict):
                # `errors` is keyed by the names of the request's fields ("password": ["required"]).
                body = {key: value for key, value in body.items() if key != "errors"}
            bad = forbidden_keys(body) - ALLOWED.get(request.endpoint or "", set())
            if bad:
                violations.append(f"{request.method} {request.path}: {sorted(bad)}")
        return response
