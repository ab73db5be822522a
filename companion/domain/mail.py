"""What Companion says by email: fixed texts, a code at most, never health information.

Email is the out-of-band path of sign-up: the answer to ``POST /auth/signup`` is the same whether or not the
address has an account, and only the mailbox learns which it was (a code to finish signing up, or a note
that an account exists already).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def signup_code(to: str, code: str, valid_minutes: int) -> Mail:
    return Mail(to, "Your Companion sign-up code",
                f"Your code to finish signing up to Companion is {code}\n\n"
                f"Enter it in the app within {valid_minutes} minutes. If you did not ask to sign up, ignore this "
                "email: no account is made without the code.\n")


def signup_existing(to: str) -> Mail:
    return Mail(to, "Someone tried to sign up to Companion with your email",
                "Someone (perhaps you) tried to create a Companion account with this email address, which already "
                "has one. Nothing was changed.\n\nIf it was you, sign in with your password; if you have forgotten "
                "it, ask your clinic's Companion administrator for a reset code.\n")
