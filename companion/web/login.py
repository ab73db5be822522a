"""Signing in to the clinician pages: email and password, then a TOTP code when enrolled; signing out."""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, g, make_response, redirect, render_template, request, url_for

from companion.api.security import allow, public
from companion.domain.access import Role
from companion.domain.errors import TooManyRequests, Unauthorized
from companion.store.accounts import now
from companion.web import bp, check_csrf, session_cookie_name, set_session_cookie, web_sessions

LOGIN_CSRF_COOKIE = "companion_login_csrf"
MAX_CODE_FAILURES = 5


def _services():
    return current_app.extensions["companion"]


def _safe_next(target: str | None) -> str:
    # Only pages of this dashboard: never another site, never a protocol-relative URL.
    if target and target.startswith("/clinician/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("web.panel")


def _login_form(message: str = "", status: int = 200):
    token = secrets.token_urlsafe(32)
    response = make_response(render_template("login.html", csrf_token=token, message=message,
                                             next=request.values.get("next", "")), status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        secure=_services().settings.is_production, path="/clinician/", max_age=3600)
    return response


def _signed_in(user: dict, target: str):
    token, _ = web_sessions().start(user["_id"], user["role"], stage="full", at=now())
    response = redirect(_safe_next(target), code=303)
    set_session_cookie(response, token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/clinician/")
    return response


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if request.method == "GET":
        return _login_form()
    sent, expected = request.form.get("csrf_token", ""), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _login_form("The sign-in form expired. Please try again.", 403)
    services = _services()
    try:
        user = services.accounts.authenticate(email=request.form.get("email", "")[:254],
                                              password=request.form.get("password", "")[:200],
                                              ip=request.remote_addr or "unknown")
    except Unauthorized:
        return _login_form("Email or password is wrong.", 401)
    except TooManyRequests as exc:
        return _login_form(f"Too many attempts. Try again in {exc.retry_after_s} seconds.", 429)
    if user["role"] != Role.CLINICIAN.value:
        return _login_form("This dashboard is for clinicians.", 403)
    if user["mfa"].get("enabled"):
        token, _ = web_sessions().start(user["_id"], user["role"], stage="mfa", at=now())
        response = redirect(url_for("web.login_code", next=request.form.get("next", "")), code=303)
        set_session_cookie(response, token)
        return response
    if services.settings.staff_mfa_required:
        return _login_form("Set up two-factor authentication in the Companion app before signing in here.", 403)
    return _signed_in(user, request.form.get("next", ""))


@bp.route("/login/code", methods=["GET", "POST"])
@public
def login_code():
    cookie = request.cookies.get(session_cookie_name())
    pending = web_sessions().live(cookie, now())
    if pending is None or pending["stage"] != "mfa":
        return redirect(url_for("web.login"), code=303)
    if request.method == "GET":
        return render_template("mfa.html", csrf_token=pending["csrf_token"], message="", next=request.args.get("next", ""))
    check_csrf(pending["csrf_token"])
    services = _services()
    user = services.accounts.users.by_id(pending["user_id"])
    code = request.form.get("code", "").strip()
    if user and len(code) == 6 and code.isdigit() and services.accounts.verify_totp(user, code):
        web_sessions().end(cookie)
        return _signed_in(user, request.form.get("next", ""))
    failures = pending.get("failures", 0) + 1
    if failures >= MAX_CODE_FAILURES:
        web_sessions().end(cookie)
        return _login_form("Too many wrong codes. Sign in again.", 401)
    web_sessions().note_code_failure(pending, failures)
    return render_template("mfa.html", csrf_token=pending["csrf_token"], message="That code did not match.",
                           next=request.form.get("next", "")), 401


@bp.route("/logout", methods=["POST"])
@allow(Role.CLINICIAN)
def logout():
    web_sessions().end(request.cookies.get(session_cookie_name()))
    g.pop("web_session", None)
    response = redirect(url_for("web.login"), code=303)
    response.delete_cookie(session_cookie_name(), path="/")
    return response
