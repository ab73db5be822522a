"""What Companion says by email: fixed texts, a code at most, never health information.

Email is the out-of-band path of sign-up: the answer to ``POST /auth/signup`` is the same whether or not the
address has an account, and only the mailbox learns which it was (a code to finish signing up, or a note
that an account exists already).

The texts are catalog messages (``N_``); ``say`` puts a message and its arguments in the reader's words
(``companion.i18n.Reader.render``: the caller passes the language the sign-up asked in). English by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from companion.domain.messages import N_

Say = Callable[..., str]

SIGNUP_CODE_SUBJECT = N_("Your Companion sign-up code")
SIGNUP_CODE_BODY = N_("Your code to finish signing up to Companion is {code}\n\nEnter it in the app within {minutes} "
                      "minutes. If you did not ask to sign up, ignore this email: no account is made without the "
                      "code.\n")
SIGNUP_EXISTING_SUBJECT = N_("Someone tried to sign up to Companion with your email")
SIGNUP_EXISTING_BODY = N_("Someone (perhaps you) tried to create a Companion account with this email address, which "
                          "already has one. Nothing was changed.\n\nIf it was you, sign in with your password; if "
                          "you have forgotten it, ask your clinic's Companion administrator for a reset code.\n")


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def _english(message: str, **arguments: str) -> str:
    return message.format(**arguments) if arguments else message


def signup_code(to: str, code: str, valid_minutes: int, say: Say = _english) -> Mail:
    return Mail(to, say(SIGNUP_CODE_SUBJECT), say(SIGNUP_CODE_BODY, code=code, minutes=str(valid_minutes)))


def signup_existing(to: str, say: Say = _english) -> Mail:
    return Mail(to, say(SIGNUP_EXISTING_SUBJECT), say(SIGNUP_EXISTING_BODY))
