"""What a push notification may say: the fixed allow-list of kinds and their generic lines.

This is the one place where what Companion knows about a patient turns into what leaves for Google's
and Apple's servers and may show on a lock screen. Nothing here reads a name, a pain score, a device
model, a dose or free text: every title and body is a constant, the data carries an opaque
``notification_id`` and a public kind, and the app fetches details over the authenticated API.

Pure Python: no firebase-admin, no database (companion.notify.push turns these into FCM messages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

# The kinds of phone an app install registers from.
PLATFORMS = ("android", "ios", "web")


class Audience(Enum):
    """Who receives a kind of notification."""

    PATIENT = "patient"
    CAREGIVER = "caregiver"


class Visibility(Enum):
    """Android lock-screen visibility; PRIVATE hides the text until unlock, SECRET shows nothing."""

    PRIVATE = "private"
    SECRET = "secret"  # noqa: S105 - Android's visibility name, not a secret


@dataclass(frozen=True)
class NotificationTemplate:
    """A kind of notification and everything the sender needs to know about it.

    ``max_ttl`` bounds how long FCM keeps the message for an offline phone (its own default is four
    weeks); ``default_ttl`` applies when the caller has no completion window. ``urgent`` kinds go out
    with high priority (Android ``high``, APNs 10); the rest with normal priority (APNs 5).
    """

    kind: str
    audience: Audience
    title: str
    body: str
    default_ttl: timedelta
    max_ttl: timedelta
    urgent: bool
    visibility: Visibility
    public_kind: str
    channel_id: str


_PATIENT_REMINDER_CHANNEL = "therapy_reminders"
_PATIENT_DEVICE_CHANNEL = "device_status"
_PATIENT_GENERAL_CHANNEL = "updates"
_CAREGIVER_CHANNEL = "caregiver_alerts"

# One line for every caregiver alert: the lock screen (SECRET anyway), FCM and APNs learn only that
# something needs attention, never whether it was a missed session, low adherence or a pain flare.
_CAREGIVER_TITLE = "Companion: a check-in needs your attention"
_CAREGIVER_BODY = "Open Companion to see what needs your attention."
_CAREGIVER_PUBLIC_KIND = "caregiver_alert"


def _patient(kind: str, title: str, body: str, ttl: timedelta, channel: str,
             max_ttl: timedelta | None = None) -> NotificationTemplate:
    return NotificationTemplate(kind, Audience.PATIENT, title, body, ttl, max_ttl or ttl, False,
                                Visibility.PRIVATE, kind, channel)


def _caregiver(kind: str, ttl: timedelta, urgent: bool) -> NotificationTemplate:
    return NotificationTemplate(kind, Audience.CAREGIVER, _CAREGIVER_TITLE, _CAREGIVER_BODY, ttl, ttl,
                                urgent, Visibility.SECRET, _CAREGIVER_PUBLIC_KIND, _CAREGIVER_CHANNEL)


_HOUR = timedelta(hours=1)

TEMPLATES: Mapping[str, NotificationTemplate] = {
    t.kind: t
    for t in (
        # A "session now" reminder is worthless once its completion window has closed: at most 1 h.
        _patient("therapy_reminder", "Time for your therapy session", "Open Companion when you are ready.",
                 _HOUR, _PATIENT_REMINDER_CHANNEL),
        _patient("reminder_repeat", "A gentle reminder from Companion", "Your session is still waiting for you.",
                 _HOUR, _PATIENT_REMINDER_CHANNEL),
        _patient("battery_low", "Companion: time to charge", "Open Companion for details.",
                 12 * _HOUR, _PATIENT_DEVICE_CHANNEL),
        _patient("device_fault", "Companion: please check your unit", "Open Companion for details.",
                 6 * _HOUR, _PATIENT_DEVICE_CHANNEL),
        _patient("generic_update", "You have a new update", "Open Companion to see it.",
                 24 * _HOUR, _PATIENT_GENERAL_CHANNEL, max_ttl=72 * _HOUR),
        # Caregiver alerts: time-critical ones (a missed session, a flare) go out with high priority.
        _caregiver("missed_session_caregiver", 6 * _HOUR, urgent=True),
        _caregiver("pain_flare", 12 * _HOUR, urgent=True),
        _caregiver("adherence_low", 24 * _HOUR, urgent=False),
        _caregiver("device_silent", 24 * _HOUR, urgent=False),
    )
}


class UnknownNotificationKind(ValueError):
    """Raised for a kind outside the allow-list; nothing is sent for it."""


def template_for(kind: str) -> NotificationTemplate:
    """The template of ``kind``; raises :class:`UnknownNotificationKind` outside the allow-list."""
    try:
        return TEMPLATES[kind]
    except KeyError:
        raise UnknownNotificationKind(kind) from None


def ttl_for(kind: str, completion_window: timedelta | None = None) -> timedelta:
    """How long FCM should keep a ``kind`` message: the completion window, capped by the kind's maximum.

    Without a window the kind's default applies. A reminder's TTL equals its completion window so an
    offline phone never wakes up to a session that is already over.
    """
    template = template_for(kind)
    if completion_window is None:
        return template.default_ttl
    if completion_window <= timedelta(0):
        raise ValueError("a completion window must be positive")
    return min(completion_window, template.max_ttl)


def collapse_key_for(kind: str, patient_id: str) -> str:
    """The collapse key (and APNs collapse id) for ``kind`` about ``patient_id``.

    One key per kind and patient, so a phone that was offline gets only the latest of each. The
    patient id is digested so that FCM and APNs see no identifier they could join with anything else;
    the result stays well under APNs' 64-byte limit.
    """
    template = template_for(kind)
    digest = hashlib.sha256(f"{template.kind}\x00{patient_id}".encode()).hexdigest()[:24]
    return f"{template.public_kind}-{digest}"


@dataclass(frozen=True)
class Notice:
    """What may leave for FCM about one notification: a kind, an opaque id, a TTL and a collapse key."""

    kind: str
    notification_id: str
    ttl: timedelta
    collapse_key: str


def notice_for(kind: str, notification_id: str, context: Mapping[str, Any],
               completion_window: timedelta | None = None) -> Notice:
    """Reduce whatever a reminder or alert rule knows (``context``) to what a push may carry.

    Only ``context["patient_id"]`` is read, and only to derive the digested collapse key; every other
    entry (names, scores, notes, device details) is ignored by construction.
    """
    return Notice(kind=template_for(kind).kind, notification_id=notification_id,
                  ttl=ttl_for(kind, completion_window),
                  collapse_key=collapse_key_for(kind, str(context["patient_id"])))


def data_for(kind: str, notification_id: str) -> dict[str, str]:
    """The data block of a push: the opaque notification id and the kind's public name, nothing else."""
    return {"notification_id": notification_id, "kind": template_for(kind).public_kind}
