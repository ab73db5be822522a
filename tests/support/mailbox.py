"""The email the app under test sent: the .eml files its directory mailer wrote (``COMPANION_MAIL_DIR``)."""

from __future__ import annotations

import email
import re
from email.message import Message
from pathlib import Path

CODE = re.compile(r"\b([A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4})\b")


class Mailbox:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def messages(self, to: str | None = None) -> list[Message]:
        if not self.directory.exists():
            return []
        found = []
        for path in sorted(self.directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            message = email.message_from_bytes(path.read_bytes())
            if to is None or message["To"] == to:
                found.append(message)
        return found

    def last_code(self, to: str) -> str:
        """The code in the latest sign-up email to ``to``."""
        for message in reversed(self.messages(to)):
            found = CODE.search(message.get_payload(decode=True).decode())
            if found:
                return found.group(1)
        raise AssertionError(f"no code was emailed to {to}")


def sign_up(client, mailbox: Mailbox, *, email: str, password: str, display_name: str = "Pat",
            role: str = "patient", time_zone: str = "UTC"):
    """Sign up through the API as a person would: ask, read the code from the email, confirm. The confirmation's
    response."""
    asked = client.post("/api/v1/auth/signup", json={"email": email, "password": password, "display_name": display_name,
                                                     "role": role, "time_zone": time_zone})
    assert asked.status_code == 202, asked.get_json()
    return client.post("/api/v1/auth/signup/confirm", json={"email": email, "code": mailbox.last_code(email),
                                                           "password": password})
