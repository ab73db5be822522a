"""What Companion says by email: fixed texts, a code at most, never health information.

Email is the out-of-band path of sign-up: the answer to ``POST /auth/signup`` is the same whether or not the
address has an account, and only the mailbox learns which it was (a code to finish signing up, or a note
that an account exists already).

It is also how an account's owner learns of a change to how the account is opened that they may not have made
(:data:`ACCOUNT_NOTICES`): their password changed, reset with an admin's code, a reset code issued, or their
authenticator cleared. An admin's code or clearing can be obtained by someone else (who talks the admin into it),
and the owner would otherwise find out only when signed out. The notice says what happened and when, on the
owner's clock, and whom to tell if it was not them; nothing else about the account.

The texts are catalog messages (``N_``); ``say`` puts a message and its arguments in the reader's words
(``companion.i18n.Reader.render``: the caller passes the language the sign-up asked in, or the account's own).
English by default.
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

PASSWORD_CHANGED_SUBJECT = N_("Your Companion password was changed")
PASSWORD_CHANGED_BODY = N_("The password of your Companion account was changed on {date} at {time} ({zone}). Every "
                           "other session of your account was signed out.\n\nIf this was not you, contact your "
                           "clinic's Companion administrator at once: someone else may know your password.\n")
PASSWORD_RESET_SUBJECT = N_("Your Companion password was reset")
PASSWORD_RESET_BODY = N_("The password of your Companion account was reset with a code from an administrator on {date} "
                         "at {time} ({zone}). Every session of your account was signed out.\n\nIf this was not you, "
                         "contact your clinic's Companion administrator at once: someone else may have taken over "
                         "your account.\n")
RESET_CODE_ISSUED_SUBJECT = N_("A password reset code was issued for your Companion account")
RESET_CODE_ISSUED_BODY = N_("An administrator issued a code to reset the password of your Companion account on {date} "
                            "at {time} ({zone}). Whoever holds the code can set a new password within {hours} hours. "
                            "Your password has not been changed.\n\nIf you did not ask for a code, contact your "
                            "clinic's Companion administrator at once.\n")
AUTHENTICATOR_CLEARED_SUBJECT = N_("The authenticator of your Companion account was cleared")
AUTHENTICATOR_CLEARED_BODY = N_("An administrator cleared the authenticator app of your Companion account on {date} at "
                                "{time} ({zone}), and every session of your account was signed out. At your next "
                                "sign-in you set up an authenticator again.\n\nIf you did not ask for this, contact "
                                "your clinic's Companion administrator at once.\n")

PASSWORD_CHANGED, PASSWORD_RESET, RESET_CODE_ISSUED, AUTHENTICATOR_CLEARED = (
    "password_changed", "password_reset", "reset_code_issued", "authenticator_cleared")
ACCOUNT_NOTICES = {  # what happened to the account: (subject, body); the body names {date}, {time} and {zone}
    PASSWORD_CHANGED: (PASSWORD_CHANGED_SUBJECT, PASSWORD_CHANGED_BODY),
    PASSWORD_RESET: (PASSWORD_RESET_SUBJECT, PASSWORD_RESET_BODY),
    RESET_CODE_ISSUED: (RESET_CODE_ISSUED_SUBJECT, RESET_CODE_ISSUED_BODY),
    AUTHENTICATOR_CLEARED: (AUTHENTICATOR_CLEARED_SUBJECT, AUTHENTICATOR_CLEARED_BODY),
}


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


def account_notice(notice: str, to: str, *, date: str, time: str, zone: str, say: Say = _english,
                   **more: str) -> Mail:
    """The mail telling an account's owner (``to``, the account's address) that ``notice`` (a key of
    :data:`ACCOUNT_NOTICES`) happened to their account on ``date`` at ``time`` in ``zone`` (already written on
    their clock and in their locale); ``more``: the other arguments its text names (``hours``, for a reset
    code)."""
    subject, body = ACCOUNT_NOTICES[notice]
    return Mail(to, say(subject), say(body, date=date, time=time, zone=zone, **more))
