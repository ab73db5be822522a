"""A person's phones and what was pushed to them: FCM tokens per app install, receipts, and the history of
notifications about a patient (what each was about, since a push carries only an opaque id)."""

from __future__ import annotations

from datetime import datetime

from companion.domain.access import Grant, notifications_visible_to
from companion.domain.errors import NotFound
from companion.store.stores import Stores


def describe_source(source_key: str) -> tuple[str, str | None]:
    """What a notification is about, from its source key: (``about``, the id the app can fetch)."""
    kind, _, rest = source_key.partition(":")
    if kind == "reminder":
        return "reminder_occurrence", rest.split(":repeat:")[0].split(":snooze:")[0].removesuffix(":resend")
    if kind == "alert":
        return "alert", rest
    return "missed_summary", None


def _described(items: list[dict]) -> list[dict]:
    for item in items:
        item["about"], item["about_id"] = describe_source(item["source_key"])
    return items


class Notifications:
    def __init__(self, stores: Stores):
        self.tokens = stores.push_tokens
        self.outbox = stores.outbox

    def phones(self, user_id: str) -> list[dict]:
        """The person's registered phones (never the tokens themselves), by install id."""
        return sorted(self.tokens.for_users([user_id]).get(user_id, []), key=lambda p: p["install_id"])

    def register_phone(self, user_id: str, install_id: str, token: str, platform: str, address: str) -> dict:
        """Register or refresh one install's token (the app does so at least monthly)."""
        return self.tokens.register(user_id, install_id, token, platform, address)

    def forget_phone(self, user_id: str, install_id: str) -> None:
        """Forget one install's token (signing out on that phone). An install with no token registered is
        already forgotten: a retried sign-out succeeds as the first did."""
        self.tokens.unregister(user_id, install_id)

    def sent_to(self, user_id: str, limit: int) -> list[dict]:
        """The notifications sent to a person, newest first, with what each is about."""
        return _described(self.outbox.for_recipient(user_id, limit=limit))

    def record_receipt(self, user_id: str, notification_id: str, receipt: str) -> None:
        """The recipient's app got (``delivered``) or the person opened (``opened``) a notification."""
        if not self.outbox.record_receipt(notification_id, user_id, receipt):
            raise NotFound("no such notification for you")

    def about_patient(self, grant: Grant, caller_id: str, *, since: datetime | None, until: datetime | None,
                      limit: int) -> list[dict]:
        """Notifications sent about the patient, newest first (a caregiver sees only those sent to them)."""
        return _described(self.outbox.for_patient(grant.patient_id, since=since, until=until,
                                                  recipient_user_id=notifications_visible_to(grant, caller_id),
                                                  limit=limit))
