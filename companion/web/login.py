"""Signing in to the clinician pages: email and password, then a TOTP code when enrolled; signing out."""

from __future__ import annotations

import hmac
import secrets

from flask import g, make_response, redirect, render_template, request, url_for

from companion.domain.access import Role
from companion.domain.errors import TooManyRequests, Unauthorized
from companion.http import services
from companion.http.security import allow, client_address, public
from companion.web import bp, check_csrf, session_cookie_name, set_session_cookie

LOGIN_CSRF_COOKIE = "companion_login_csrf"
# The device key (companion.services.device_keys) of this browser: kept long after the session ends, so that its
# next sign-in skips the delays someone guessing the password builds up, elsewhere or on this browser's network.
DEVICE_KEY_MAX_AGE_S = 400 * 24 * 3600


def device_cookie_name() -> str:
    return "__Host-companion_device" if services().settings.is_production else "companion_device"


def _keep_device_key(response, key: str) -> None:
    response.set_cookie(device_cookie_name(), key, httponly=True, samesite="Strict",
                        secure=services().settings.is_production, path="/", max_age=DEVICE_KEY_MAX_AGE_S)


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
                        secure=services().settings.is_production, path="/clinician/", max_age=3600)
    return response


def _signed_in(user, target: str, started_at=None):
    token = services().accounts.start_web_session(user, stage="full", started_at=started_at)
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
    accounts = services().accounts
    try:
        user, checked_at, device_key = accounts.check_password(
            email=request.form.get("email", "")[:254], password=request.form.get("password", "")[:200],
            ip=client_address(), device_key=request.cookies.get(device_cookie_name()))
    except Unauthorized:
        return _login_form("Email or password is wrong.", 401)
    except TooManyRequests as exc:
        return _login_form(f"Too many attempts. Try again in {exc.retry_after_s} seconds.", 429)
    if user.role is not Role.CLINICIAN:
        return _login_form("This dashboard is for clinicians.", 403)
    if user.mfa_enabled:
        token = accounts.start_web_session(user, stage="mfa", started_at=checked_at)
        response = redirect(url_for("web.login_code", next=request.form.get("next", "")), code=303)
        set_session_cookie(response, token)
    elif services().settings.staff_mfa_required:
        response = _login_form("Set up two-factor authentication in the Companion app before signing in here.", 403)
    else:
        response = _signed_in(user, request.form.get("next", ""), checked_at)
    _keep_device_key(response, device_key)  # the password was right: this browser proved it
    return response


@bp.route("/login/code", methods=["GET", "POST"])
@public
def login_code():
    cookie = request.cookies.get(session_cookie_name())
    accounts = services().accounts
    pending = accounts.pending_web_session(cookie)
    if pending is None:
        return redirect(url_for("web.login"), code=303)
    if request.method == "GET":
        return render_template("mfa.html", csrf_token=pending["csrf_token"], message="", next=request.args.get("next", ""))
    check_csrf(pending["csrf_token"])
    user = accounts.web_session_user(pending)
    code = request.form.get("code", "").strip()
    try:
        good = bool(user and len(code) == 6 and code.isdigit()
                    and accounts.check_totp(user, code, address=client_address()))
    except TooManyRequests as exc:
        # A try the throttle held back still counts against this sign-in's five: a session's tries are
        # bounded however fast they are sent.
        if accounts.web_code_failed(pending):
            return _login_form("Too many wrong codes. Sign in again.", 401)
        return render_template("mfa.html", csrf_token=pending["csrf_token"], next=request.form.get("next", ""),
                               message=f"Too many wrong codes. Try again in {exc.retry_after_s} seconds."), 429
    if good:
        accounts.end_web_session(cookie)
        return _signed_in(user, request.form.get("next", ""), pending["created_at"])
    if accounts.web_code_failed(pending):
        return _login_form("Too many wrong codes. Sign in again.", 401)
    return render_template("mfa.html", csrf_token=pending["csrf_token"], message="That code did not match.",
                           next=request.form.get("next", "")), 401


@bp.route("/logout", methods=["POST"])
@allow(Role.CLINICIAN)
def logout():
    services().accounts.end_web_session(request.cookies.get(session_cookie_name()))
    g.pop("web_session", None)
    response = redirect(url_for("web.login"), code=303)
    response.delete_cookie(session_cookie_name(), path="/")
    return response
