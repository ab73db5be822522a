"""Sending email (an adapter, like the push sender): SMTP, or a directory of .eml files.

- ``COMPANION_SMTP_URL=smtp://host:port`` or ``smtp+starttls://user:password@host:port``: each message is
  handed to that server (STARTTLS with certificate verification when asked for);
- ``COMPANION_MAIL_DIR=path``: each message is written to ``path`` as one ``.eml`` file (written to a
  temporary name, then renamed: a reader never sees half a message). ``make run`` uses ``var/mail``, so a
  developer reads sign-up codes there.

Only the mail's text and the address leave; nothing is logged but a digest of the address.
"""

from __future__ import annotations

import hashlib
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

log = logging.getLogger(__name__)


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
    def __init__(self, directory: str | Path, sender: str):
        self.directory = Path(directory)
        self.sender = sender

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
        log.info("mail written", extra={"to": hashlib.sha256(mail.to.encode()).hexdigest()[:12]})


class SmtpMailer:
    def __init__(self, url: str, sender: str, *, timeout_s: float = 10):
        parts = urlsplit(url)
        self.starttls = parts.scheme == "smtp+starttls"
        self.host, self.port = parts.hostname or "localhost", parts.port or (587 if self.starttls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout_s = timeout_s

    def send(self, mail: Mail) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(_message(mail, self.sender))
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(type(exc).__name__) from exc
        log.info("mail sent", extra={"to": hashlib.sha256(mail.to.encode()).hexdigest()[:12]})


def mailer_for(smtp_url: str | None, mail_dir: str | None, sender: str):
    """The configured mailer, or None when email is not configured (development without ``make run``)."""
    if smtp_url:
        return SmtpMailer(smtp_url, sender)
    if mail_dir:
        return DirectoryMailer(mail_dir, sender)
    return None
