"""The SMTP mailer never sends a password over a connection that is not encrypted: ``smtps://`` speaks TLS from
the first byte (checked against a loopback SMTP server of the test's own, behind a certificate of a throwaway
authority), ``smtp+starttls://`` upgrades first, and ``smtp://`` with credentials is refused."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from companion.domain.mail import Mail
from companion.notify.mail import MailError, SmtpMailer, mailer_for
from tests.support.tls import make_authority, server_context


@dataclass
class Received:
    logins: list[tuple[str, str]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    plain_connections: int = 0


def _serve_one(conn: socket.socket, seen: Received) -> None:
    """Enough of SMTP for smtplib: greeting, EHLO with AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""
    reader = conn.makefile("rb")

    def say(line: str) -> None:
        conn.sendall(line.encode() + b"\r\n")

    say("220 test ESMTP")
    while line := reader.readline():
        command = line.decode().strip()
        verb = command.split(" ")[0].upper()
        if verb == "EHLO":
            say("250-test")
            say("250 AUTH PLAIN")
        elif verb == "AUTH":
            _, user, password = base64.b64decode(command.split(" ")[2]).decode().split("\0")
            seen.logins.append((user, password))
            say("235 ok")
        elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
            say("250 ok")
        elif verb == "DATA":
            say("354 go on")
            body = []
            while (data := reader.readline()) not in (b".\r\n", b""):
                body.append(data.decode())
            seen.messages.append("".join(body))
            say("250 queued")
        elif verb == "QUIT":
            say("221 bye")
            return
        else:
            say("502 not here")


@pytest.fixture
def smtps_server(tmp_path, monkeypatch) -> Iterator[tuple[int, Received]]:
    """A loopback SMTP server that speaks TLS from the first byte; the client trusts its authority (SSL_CERT_FILE,
    read by ssl.create_default_context) and nothing else. A client that starts in plain text is counted."""
    authority = make_authority("Companion test mail CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(authority.write_pem(tmp_path / "ca.pem")))
    context = server_context(authority, tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    seen = Received()

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            with raw:
                try:
                    with context.wrap_socket(raw, server_side=True) as conn:
                        _serve_one(conn, seen)
                except (ssl.SSLError, OSError):
                    seen.plain_connections += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen
    listener.close()
    thread.join(timeout=5)


MAIL = Mail(to="pat@example.org", subject="Your code", body="ABCD2345")


def test_smtps_logs_in_and_sends_over_tls_from_the_first_byte(smtps_server):
    port, seen = smtps_server
    mailer = mailer_for(f"smtps://alerts:s3cret@127.0.0.1:{port}", None, "companion@example.org")
    mailer.send(MAIL)
    assert (seen.logins, seen.plain_connections) == ([("alerts", "s3cret")], 0)
    assert "ABCD2345" in seen.messages[0]


def test_smtps_refuses_a_server_whose_certificate_it_cannot_verify(smtps_server, monkeypatch, tmp_path):
    port, seen = smtps_server
    monkeypatch.setenv("SSL_CERT_FILE", str(make_authority("Someone else").write_pem(tmp_path / "other.pem")))
    with pytest.raises(MailError):
        mailer_for(f"smtps://alerts:s3cret@127.0.0.1:{port}", None, "companion@example.org").send(MAIL)
    assert seen.logins == []


def test_smtps_and_starttls_default_to_their_ports():
    assert (SmtpMailer("smtps://a:b@mail.example.org", "x").port,
            SmtpMailer("smtp+starttls://a:b@mail.example.org", "x").port,
            SmtpMailer("smtp://mail.example.org", "x").port) == (465, 587, 25)


@pytest.mark.parametrize("url", ["smtp://alerts:s3cret@mail.example.org:25", "smtp://alerts@mail.example.org"])
def test_a_mailer_with_credentials_on_plain_smtp_is_refused(url):
    # It was built (starttls False, the password kept) and logged in over plain text.
    with pytest.raises(ValueError, match="plain text"):
        mailer_for(url, None, "companion@example.org")
