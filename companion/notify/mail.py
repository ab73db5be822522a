"""Sending email (an adapter, like the push sender): SMTP, or a directory of .eml files.

- ``COMPANION_SMTP_URL``: each message is handed to that server. ``smtp+starttls://user:password@host:port``
  (STARTTLS, port 587 by default) or ``smtps://user:password@host:port`` (TLS from the first byte, port 465),
  both verifying the server's certificate; ``smtp://host:port`` (port 25) only without credentials, for a relay
  on a trusted network: a password is never sent over a connection that is not encrypted
  (:func:`smtp_url_problem`, which the settings apply at start-up too);
- ``COMPANION_MAIL_DIR=path``: each message is written to ``path`` as one ``.eml`` file (written to a
  temporary name, then renamed: a reader never sees half a message). ``make run`` uses ``var/mail``, so a
  developer reads sign-up codes there.

Only the mail's text and the address leave. A line is logged per message, naming the address by its keyed
:func:`companion.logs.pseudonym` (the one the failed sign-in lines use, so an operator can line them up) and
only when the mailer was given the key: never a plain digest, which anyone with a list of addresses recomputes.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from companion.domain.mail import Mail
from companion.logs import pseudonym

log = logging.getLogger(__name__)


def _recipient(mail: Mail, key: bytes | None) -> dict[str, str]:
    """The log fields naming the recipient: their pseudonym under ``key``, or none without a key."""
    return {"to": pseudonym(key, mail.to.strip().lower())} if key else {}


class MailError(Exception):
    """The message could not be handed over."""


def _message(mail: Mail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="companion.invalid")
    message.set_content(mail.body)
    return message


class DirectoryMailer:
    def __init__(self, directory: str | Path, sender: str, *, pseudonym_key: bytes | None = None):
        self.directory = Path(directory)
        self.sender = sender
        self.pseudonym_key = pseudonym_key

    def send(self, mail: Mail) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            name = f"{uuid.uuid4().hex}.eml"
            partial = self.directory / f".{name}.tmp"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(_message(mail, self.sender).as_bytes())
            partial.rename(self.directory / name)
        except OSError as exc:
            raise MailError(str(exc)) from exc
        log.info("mail written", extra=_recipient(mail, self.pseudonym_key))


# Each accepted scheme: whether it encrypts (and how), and its default port.
SMTP_SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_ENCRYPTED = ("smtp+starttls", "smtps")


def smtp_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the SMTP server to hand mail to (None: nothing): an unknown scheme, or a user
    or password on ``smtp://``, which would log in over plain text."""
    parts = urlsplit(url)
    if parts.scheme not in SMTP_SCHEMES:
        return f"unknown scheme {parts.scheme!r}"
    if (parts.username or parts.password) and parts.scheme not in _ENCRYPTED:
        return ("smtp:// carries credentials over plain text: use smtp+starttls:// (STARTTLS, port 587) or "
                "smtps:// (TLS, port 465)")
    return None


class SmtpMailer:
    def __init__(self, url: str, sender: str, *, timeout_s: float = 10, pseudonym_key: bytes | None = None):
        problem = smtp_url_problem(url)
        if problem is not None:
            raise ValueError(f"SMTP URL refused: {problem}")
        parts = urlsplit(url)
        self.starttls = parts.scheme == "smtp+starttls"
        self.implicit_tls = parts.scheme == "smtps"
        self.host, self.port = parts.hostname or "localhost", parts.port or SMTP_SCHEMES[parts.scheme]
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout_s = timeout_s
        self.pseudonym_key = pseudonym_key

    def send(self, mail: Mail) -> None:
        try:
            with self._connect() as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(_message(mail, self.sender))
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(type(exc).__name__) from exc
        log.info("mail sent", extra=_recipient(mail, self.pseudonym_key))

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                    context=ssl.create_default_context())
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)


def mailer_for(smtp_url: str | None, mail_dir: str | None, sender: str, *, pseudonym_key: bytes | None = None):
    """The configured mailer, or None when email is not configured (development without ``make run``). Raises
    ValueError for an SMTP URL :func:`smtp_url_problem` refuses (the settings refuse it first). Its log lines name
    the recipient by their pseudonym under ``pseudonym_key`` (Settings.pseudonym_key), or not at all without it."""
    if smtp_url:
        return SmtpMailer(smtp_url, sender, pseudonym_key=pseudonym_key)
    if mail_dir:
        return DirectoryMailer(mail_dir, sender, pseudonym_key=pseudonym_key)
    return None
