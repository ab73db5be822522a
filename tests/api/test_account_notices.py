"""The owner of an account is told by email when how it is opened changes: their password changed or reset with
an admin's code, a reset code issued, their authenticator cleared (an admin can be talked into the last three by
someone else). The mail says when, on the owner's clock, and whom to tell; a mailer that is down fails nothing."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from zoneinfo import ZoneInfo

from companion import create_app
from companion.i18n import Reader
from tests.support.world import PASSWORD, make_user

NEW_PASSWORD = "a completely new passphrase"


def _subject(mail: Message) -> str:
    return str(make_header(decode_header(mail["Subject"])))


def _body(mail: Message) -> str:
    return mail.get_payload(decode=True).decode()


def _on_their_clock(zone: str, *instants: datetime) -> list[tuple[str, str]]:
    """The (date, time) a notice written at one of ``instants`` names, in English on the clock of ``zone``."""
    reader = Reader(zone=ZoneInfo(zone))
    return [(reader.date(at.astimezone(ZoneInfo(zone)).date()), reader.time(at)) for at in instants]


def test_a_password_change_is_mailed_to_the_owner_with_the_time_on_their_own_clock(client, world, mailbox):
    patient = world["patient_b"]  # America/New_York: its clock is never UTC's
    before = datetime.now(UTC)
    changed = client.post("/api/v1/auth/password", headers=patient.headers,
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    after = datetime.now(UTC)
    assert changed.status_code == 200
    (mail,) = mailbox.messages(patient.email)
    body = _body(mail)
    assert _subject(mail) == "Your Companion password was changed"
    assert any(f"changed on {day} at {time} (America/New_York)" in body
               for day, time in _on_their_clock("America/New_York", before, after)), body
    assert "contact your clinic's Companion administrator" in body


def test_an_admin_issued_code_and_the_reset_made_with_it_are_each_mailed_to_the_owner(client, world, mailbox):
    admin, patient = world["admin"], world["patient_a"]
    code = client.post(f"/api/v1/admin/users/{patient.id}/password-reset", headers=admin.headers).json["code"]
    (issued,) = mailbox.messages(patient.email)
    assert _subject(issued) == "A password reset code was issued for your Companion account"
    assert "within 24 hours" in _body(issued) and code not in _body(issued)  # never the code itself
    assert client.post("/api/v1/auth/password-reset", json={"email": patient.email, "code": code,
                                                            "new_password": NEW_PASSWORD}).status_code == 204
    _, reset = mailbox.messages(patient.email)
    assert _subject(reset) == "Your Companion password was reset"
    assert "(Europe/London)" in _body(reset)
    assert mailbox.messages(admin.email) == []  # the owner is told, not the admin


def test_a_cleared_authenticator_is_mailed_to_the_owner(client, world, mailbox):
    admin, clinician = world["admin"], world["clinician_team"]
    assert client.delete(f"/api/v1/admin/users/{clinician.id}/mfa", headers=admin.headers).status_code == 200
    (mail,) = mailbox.messages(clinician.email)
    assert _subject(mail) == "The authenticator of your Companion account was cleared"
    assert "every session of your account was signed out" in _body(mail)


def test_the_notice_is_in_the_language_the_owner_chose_not_the_requests(client, world, mailbox):
    caregiver = world["caregiver_linked"]
    assert client.patch("/api/v1/me/preferences", headers=caregiver.headers,
                        json={"locale": "de", "time_zone": "Europe/Berlin"}).status_code == 200
    changed = client.post("/api/v1/auth/password", headers={**caregiver.headers, "Accept-Language": "es"},
                          json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200
    (mail,) = mailbox.messages(caregiver.email)
    assert _subject(mail) == "Ihr Companion-Passwort wurde geändert"
    assert "(Europe/Berlin)" in _body(mail) and "Companion-Verwaltung Ihrer Praxis" in _body(mail)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_mailer_that_is_down_fails_no_change_and_its_log_names_no_address(settings_overrides, caplog):
    app = create_app({**settings_overrides, "mail_dir": None, "smtp_url": f"smtp://127.0.0.1:{_closed_port()}"})
    try:
        client, services = app.test_client(), app.extensions["companion"]
        admin = make_user(client, services, key="root", role="admin")
        owner = make_user(client, services, key="owner", role="clinician")
        with caplog.at_level(logging.INFO):
            changed = client.post("/api/v1/auth/password", headers=owner.headers,
                                  json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
            issued = client.post(f"/api/v1/admin/users/{owner.id}/password-reset", headers=admin.headers)
            cleared = client.delete(f"/api/v1/admin/users/{owner.id}/mfa", headers=admin.headers)
            reset = client.post("/api/v1/auth/password-reset", json={
                "email": owner.email, "code": issued.json["code"], "new_password": "yet another passphrase"})
        assert (changed.status_code, issued.status_code, cleared.status_code, reset.status_code) == (
            200, 201, 200, 204)
        assert client.post("/api/v1/auth/login", json={"email": owner.email,
                                                       "password": "yet another passphrase"}).status_code == 200
    finally:
        services.close()
    failures = [r for r in caplog.records if r.getMessage().startswith("an account notice could not be sent")]
    assert [r.notice for r in failures] == ["password_changed", "reset_code_issued", "authenticator_cleared",
                                            "password_reset"]
    assert {r.to for r in failures} == {failures[0].to} and "@" not in failures[0].to  # the keyed pseudonym
    assert not [r for r in caplog.records if owner.email in r.getMessage() or owner.email in str(vars(r))]


def test_a_password_change_mails_its_owner_alone(client, world, mailbox):
    client.post("/api/v1/auth/password", headers=world["patient_a"].headers,
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert [m["To"] for m in mailbox.messages()] == [world["patient_a"].email]
