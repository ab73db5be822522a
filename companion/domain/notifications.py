"""What a push notification may say and how it travels: the fixed allow-list of kinds, one rule row each.

This is the one place where what Companion knows about a patient turns into what leaves for Google's
and Apple's servers and may show on a lock screen. Nothing here reads a name, a pain score, a device
model, a dose or free text: every title and body is a catalog message (translated by ``companion.i18n``
into the recipient's language), the only argument a text may take is the time a reminder was planned
for, the data carries an opaque ``notification_id`` and a public kind, and the app fetches details over
the authenticated API.

Per kind (``TEMPLATES``): who receives it, its texts and their on-device localisation keys, how urgent it
is (``Delivery``: Android priority, APNs priority and iOS interruption level), how long FCM and APNs keep
it for an offline phone (a reminder only until its completion window closes), its channel and lock-screen
visibility, and its analytics label. Caregiver alerts have one kind per alert kind (``caregiver_<alert
kind>``) but share one text, one public kind, one localisation key and one analytics label, so that
neither Google nor Apple nor a lock screen learns whether it was a missed session, a flare or a fault.

Pure Python: no firebase-admin, no Babel, no database (companion.notify.push turns these into FCM messages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from companion.domain.alerts import AlertKind
from companion.domain.messages import N_
from companion.domain.quiet_hours import QuietHours, in_quiet_hours, next_allowed

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
class Delivery:
    """How urgently a kind travels: Android priority, APNs priority and the iOS 15+ interruption level.

    High priority is for time-sensitive messages a person sees (Android may hold a normal one in Doze
    until it expires, and FCM deprioritises high-priority messages that show nothing); ``time-sensitive``
    lets an iOS notification through a Focus the person allowed it for.
    """

    android_priority: str
    apns_priority: str
    interruption_level: str

    @property
    def high(self) -> bool:
        return self.android_priority == "high"


URGENT = Delivery("high", "10", "time-sensitive")  # reminders, urgent alerts
ROUTINE = Delivery("normal", "5", "active")  # nudges, device care, non-urgent alerts
QUIET = Delivery("normal", "5", "passive")  # summaries and updates: into the notification list, no sound


@dataclass(frozen=True)
class PushText:
    """One line of a push: its catalog message id (English source) and the key an app may localise it by
    on the device instead (Android ``*_loc_key`` string resource, APNs ``loc-key`` in Localizable.strings).
    The message may name ``{time}``, the only argument a push text takes (it becomes ``loc_args[0]``)."""

    loc_key: str
    message: str

    @property
    def arguments(self) -> tuple[str, ...]:
        return ("time",) if "{time}" in self.message else ()


@dataclass(frozen=True)
class NotificationTemplate:
    """A kind of notification and everything the sender needs to know about it.

    ``max_ttl`` bounds how long FCM keeps the message for an offline phone (its own default is four
    weeks); ``default_ttl`` applies when the caller has no completion window. ``untimed_body`` is said
    when a notification has no planned time to name (one queued before times were recorded). ``windowed``:
    its validity is a completion window (a reminder's, at most a few hours), so FCM's "not now" is tried
    again for as long as the window is open (companion.notify.retry_policy); the other kinds, whose
    lifetimes run to days, also stop after a number of attempts.
    """

    kind: str
    audience: Audience
    title: PushText
    body: PushText
    untimed_body: PushText
    default_ttl: timedelta
    max_ttl: timedelta
    delivery: Delivery
    visibility: Visibility
    public_kind: str
    channel_id: str
    analytics_label: str
    spread: timedelta = timedelta(0)  # non-urgent kinds: the window their pushes are spread over (send_offset)
    windowed: bool = False

    @property
    def urgent(self) -> bool:
        """Whether it goes out at high priority (Android ``high``, APNs 10, time-sensitive)."""
        return self.delivery.high


# Non-urgent pushes go out spread over a window (Firebase's scaling guidance: no bursts on the minute);
# each recipient's place in it is fixed (``send_offset``), so their nudges keep a steady time.
NUDGE_SPREAD = timedelta(minutes=10)
SUMMARY_SPREAD = timedelta(minutes=30)

_PATIENT_REMINDER_CHANNEL = "therapy_reminders"
_PATIENT_PRACTICE_CHANNEL = "practice"
_PATIENT_DEVICE_CHANNEL = "device_status"
_PATIENT_GENERAL_CHANNEL = "updates"
_CAREGIVER_CHANNEL = "caregiver_alerts"

# One line for every caregiver alert: the lock screen (SECRET anyway), FCM and APNs learn only that
# something needs attention, never whether it was a missed session, low adherence or a pain flare.
_CAREGIVER_TITLE = PushText("caregiver_alert_title", N_("Companion: a check-in needs your attention"))
_CAREGIVER_BODY = PushText("caregiver_alert_body", N_("Open Companion to see what needs your attention."))
_CAREGIVER_PUBLIC_KIND = "caregiver_alert"
_DETAILS = PushText("open_for_details_body", N_("Open Companion for details."))


def _patient(kind: str, title: PushText, body: PushText, ttl: timedelta, delivery: Delivery, channel: str, *,
             max_ttl: timedelta | None = None, untimed: PushText | None = None,
             spread: timedelta = timedelta(0), windowed: bool = False,
             public_kind: str | None = None) -> NotificationTemplate:
    return NotificationTemplate(kind, Audience.PATIENT, title, body, untimed or body, ttl, max_ttl or ttl, delivery,
                                Visibility.PRIVATE, public_kind or kind, channel, kind, spread, windowed)


def caregiver_kind(alert: AlertKind) -> str:
    """The push kind that tells a caregiver of an ``alert`` (one per alert kind; an overload found late has one more:
    ``alert_push_kind``)."""
    return f"caregiver_{alert.value}"


def _caregiver(alert: AlertKind, ttl: timedelta, delivery: Delivery, kind: str | None = None) -> NotificationTemplate:
    return NotificationTemplate(kind or caregiver_kind(alert), Audience.CAREGIVER, _CAREGIVER_TITLE, _CAREGIVER_BODY,
                                _CAREGIVER_BODY, ttl, ttl, delivery, Visibility.SECRET, _CAREGIVER_PUBLIC_KIND,
                                _CAREGIVER_CHANNEL, _CAREGIVER_PUBLIC_KIND)


# An overload found too late to be urgent (companion.domain.alerts.OVERLOAD_URGENT_FOR: a hub's backlog uploaded late, a
# worker back from an outage) is told as routine device care, under kinds of its own: at normal priority, and waiting
# for the recipient's quiet hours wherever a push is held for them (they are not among ``ignores_quiet_hours``). The
# patient's says what the overload's says, under the same public kind (the app shows it as an overload).
OVERLOAD_FOUND_LATE = "overload_found_late"
CAREGIVER_OVERLOAD_FOUND_LATE = "caregiver_overload_found_late"


def alert_push_kind(alert: AlertKind, audience: Audience, urgent: bool) -> str:
    """The push kind that tells ``audience`` of an alert of kind ``alert`` (a patient hears of the unit's own
    troubles): the alert kind's own (``caregiver_kind`` for a caregiver); for an overload no longer urgent when it is
    raised (``urgent`` False: found late), ``OVERLOAD_FOUND_LATE`` or ``CAREGIVER_OVERLOAD_FOUND_LATE``."""
    if alert is AlertKind.OVERLOAD and not urgent:
        return CAREGIVER_OVERLOAD_FOUND_LATE if audience is Audience.CAREGIVER else OVERLOAD_FOUND_LATE
    return caregiver_kind(alert) if audience is Audience.CAREGIVER else alert.value


_HOUR = timedelta(hours=1)
_CAREGIVER_URGENT_TTL = 6 * _HOUR  # a missed session, a flare, an overload: worth little once the day moved on
_CAREGIVER_ROUTINE_TTL = 24 * _HOUR  # a unit to check, low adherence: still worth hearing of the next day

TEMPLATES: Mapping[str, NotificationTemplate] = {
    t.kind: t
    for t in (
        # Reminders: a TENS session, a medication or anything the patient planned is time-sensitive, and
        # worthless once its completion window has closed (the TTL is the window, at most 1 h).
        _patient("therapy_reminder",
                 PushText("therapy_reminder_title", N_("Time for your therapy session")),
                 PushText("therapy_reminder_body", N_("Your {time} session is ready when you are.")),
                 _HOUR, URGENT, _PATIENT_REMINDER_CHANNEL, windowed=True,
                 untimed=PushText("therapy_reminder_untimed_body", N_("Open Companion when you are ready."))),
        _patient("reminder_repeat",
                 PushText("reminder_repeat_title", N_("A gentle reminder from Companion")),
                 PushText("reminder_repeat_body", N_("Your {time} session is still waiting for you.")),
                 _HOUR, URGENT, _PATIENT_REMINDER_CHANNEL, windowed=True,
                 untimed=PushText("reminder_repeat_untimed_body", N_("Your session is still waiting for you."))),
        _patient("planned_reminder",
                 PushText("planned_reminder_title", N_("A reminder from Companion")),
                 PushText("planned_reminder_body", N_("It is time for what you planned at {time}.")),
                 _HOUR, URGENT, _PATIENT_REMINDER_CHANNEL, windowed=True,
                 untimed=PushText("planned_reminder_untimed_body", N_("Open Companion to see what you planned."))),
        # A mindfulness practice is an invitation, not an appointment: normal priority, its own channel.
        _patient("practice_nudge",
                 PushText("practice_nudge_title", N_("A moment for yourself")),
                 PushText("practice_nudge_body", N_("Your {time} practice is ready when you are.")),
                 _HOUR, ROUTINE, _PATIENT_PRACTICE_CHANNEL, max_ttl=2 * _HOUR, spread=NUDGE_SPREAD, windowed=True,
                 untimed=PushText("practice_nudge_untimed_body", N_("Your practice is ready when you are."))),
        # The unit's own troubles, told to the patient; an overload that just stopped a session: urgent.
        _patient(AlertKind.BATTERY_LOW.value, PushText("battery_low_title", N_("Companion: time to charge")),
                 _DETAILS, 12 * _HOUR, ROUTINE, _PATIENT_DEVICE_CHANNEL),
        _patient(AlertKind.ELECTRODE_OFF.value, PushText("check_unit_title", N_("Companion: please check your unit")),
                 _DETAILS, 6 * _HOUR, ROUTINE, _PATIENT_DEVICE_CHANNEL),
        _patient(AlertKind.OVERLOAD.value, PushText("check_unit_title", N_("Companion: please check your unit")),
                 _DETAILS, 6 * _HOUR, URGENT, _PATIENT_DEVICE_CHANNEL),
        _patient(OVERLOAD_FOUND_LATE, PushText("check_unit_title", N_("Companion: please check your unit")),
                 _DETAILS, 6 * _HOUR, ROUTINE, _PATIENT_DEVICE_CHANNEL, public_kind=AlertKind.OVERLOAD.value),
        # Summaries and updates can wait, and never interrupt.
        _patient("generic_update", PushText("generic_update_title", N_("You have a new update")),
                 PushText("generic_update_body", N_("Open Companion to see it.")),
                 24 * _HOUR, QUIET, _PATIENT_GENERAL_CHANNEL, max_ttl=72 * _HOUR, spread=SUMMARY_SPREAD),
        # Caregiver alerts: the time-critical ones (a missed session, a flare, an overload) at high priority. Within
        # each priority the same lifetime, so that nothing on the wire (TTL, apns-expiration) tells one kind from
        # another of its priority.
        _caregiver(AlertKind.MISSED_TENS, _CAREGIVER_URGENT_TTL, URGENT),
        _caregiver(AlertKind.PAIN_FLARE, _CAREGIVER_URGENT_TTL, URGENT),
        _caregiver(AlertKind.OVERLOAD, _CAREGIVER_URGENT_TTL, URGENT),
        _caregiver(AlertKind.OVERLOAD, _CAREGIVER_ROUTINE_TTL, ROUTINE, CAREGIVER_OVERLOAD_FOUND_LATE),
        _caregiver(AlertKind.ELECTRODE_OFF, _CAREGIVER_ROUTINE_TTL, ROUTINE),
        _caregiver(AlertKind.BATTERY_LOW, _CAREGIVER_ROUTINE_TTL, ROUTINE),
        _caregiver(AlertKind.LOW_ADHERENCE, _CAREGIVER_ROUTINE_TTL, ROUTINE),
        _caregiver(AlertKind.UNIT_SILENT, _CAREGIVER_ROUTINE_TTL, ROUTINE),
    )
}

# Kinds stored by earlier versions (in outbox documents that may still be waiting), under their new name.
# Before, every caregiver device alert went out as "device_silent"; such a document is told as one.
LEGACY_KINDS: Mapping[str, str] = {
    "missed_session_caregiver": caregiver_kind(AlertKind.MISSED_TENS),
    "adherence_low": caregiver_kind(AlertKind.LOW_ADHERENCE),
    "device_silent": caregiver_kind(AlertKind.UNIT_SILENT),
    "pain_flare": caregiver_kind(AlertKind.PAIN_FLARE),
    "device_fault": AlertKind.ELECTRODE_OFF.value,
}

# The push kind of a reminder, by the reminder's kind (TENS, medication, mindfulness, custom) and
# whether it is the first push or a nudge after it.
_REMINDER_KINDS = {"tens": ("therapy_reminder", "reminder_repeat"), "mindfulness": ("practice_nudge", "practice_nudge")}
_OTHER_REMINDER = ("planned_reminder", "planned_reminder")


def reminder_kind(reminder_kind: str | None, nudge: bool = False) -> str:
    """The push kind for a reminder of ``reminder_kind`` (``tens``, ``medication``, ``mindfulness``,
    ``custom``; None for an occurrence stored before kinds were recorded, told as TENS), first or nudge."""
    first, again = _REMINDER_KINDS.get(reminder_kind or "tens", _OTHER_REMINDER)
    return again if nudge else first


class UnknownNotificationKind(ValueError):
    """Raised for a kind outside the allow-list; nothing is sent for it."""


def template_for(kind: str) -> NotificationTemplate:
    """The template of ``kind``; raises :class:`UnknownNotificationKind` outside the allow-list."""
    try:
        return TEMPLATES[LEGACY_KINDS.get(kind, kind)]
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


def send_offset(kind: str, recipient_user_id: str, ttl: timedelta) -> timedelta:
    """How long after its time a ``kind`` push to ``recipient_user_id`` goes out: zero for urgent and timed
    kinds; for a spread kind (nudges, summaries) a place in its window fixed by the recipient (a digest of
    kind and recipient, whole seconds), at most a quarter of the ``ttl`` so it keeps most of its validity."""
    template = template_for(kind)
    window = min(template.spread, ttl / 4)
    seconds = int(window.total_seconds())
    if seconds <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(f"{template.kind}\x00{recipient_user_id}".encode(), digest_size=8).digest()
    return timedelta(seconds=int.from_bytes(digest, "big") % seconds)


def outside_quiet_hours(kind: str, recipient_user_id: str, at: datetime, tz: ZoneInfo,
                        quiet: QuietHours | None) -> tuple[datetime, bool]:
    """When a non-urgent ``kind`` push to ``recipient_user_id``, decided at ``at``, is sent (``send_at``), and
    whether it may take its place in the kind's spread after that (``spread``): at ``at``, or at the end of the
    recipient's quiet hours on ``tz``'s clock if ``at`` falls in them; spread unless its place in the spread would
    fall in them (then at ``send_at`` exactly). For the pushes that are not reminders or alerts: a summary, an
    invitation, an enrolment, a caregiver's offer."""
    send_at = next_allowed(at, tz, quiet)
    place = send_at + send_offset(kind, recipient_user_id, ttl_for(kind))
    return send_at, not in_quiet_hours(place.astimezone(tz).time(), quiet)


def ignores_quiet_hours(kind: str, source_key: str) -> bool:
    """Whether a push goes whatever the hour of its recipient's quiet hours: an urgent alert (an overload told while
    it is fresh, to the patient and to their caregivers; not one found late) and a snooze's reminder (the patient asked for that time). Every other push
    waits for their end (companion.domain.alerts.delivery_time, companion.services.reminder_dispatch,
    :func:`outside_quiet_hours`; docs/pushes.md lists every place a push is scheduled)."""
    return template_for(kind).kind in _URGENT_ALERT_KINDS or ":snooze:" in source_key


_URGENT_ALERT_KINDS = frozenset({AlertKind.OVERLOAD.value, caregiver_kind(AlertKind.OVERLOAD)})


def requeued_for_quiet_hours(queued: Mapping[str, Any], now: datetime, tz: ZoneInfo,
                             quiet: QuietHours | None) -> tuple[datetime, datetime] | None:
    """When a push queued and not sent yet (an outbox document: ``kind``, ``source_key``, ``not_before``,
    ``expires_at``, ``attempts``, ``intended_at``, ``created_at``, a reminder's ``planned_at``) goes once its
    recipient's quiet hours (or the clock they keep them on, ``tz``) have changed, with the new end of its lifetime;
    None when its time stands. It was meant to go at ``intended_at`` (when it was queued, or the time it was moved
    to, e.g. a restored reminder's; ``created_at`` for a document queued before it was kept), and a reminder's push
    never before the time it reminds of (``planned_at``); a push FCM asked to have sent later (``attempts`` > 0)
    at its time, never brought forward. Inside the new quiet hours, it waits for their end; held for quiet hours
    that no longer hold it, it goes now (or when the new ones end); within its place in its kind's spread, it keeps
    it. A push that goes whatever the hour (:func:`ignores_quiet_hours`) keeps its time. Its lifetime moves with
    it, but a reminder's, which is its completion window, never does."""
    kind, not_before = queued["kind"], queued["not_before"]
    if ignores_quiet_hours(kind, queued["source_key"]):
        return None
    wanted = not_before if queued.get("attempts") else queued.get("intended_at") or queued["created_at"]
    if queued.get("planned_at") is not None:
        wanted = max(wanted, queued["planned_at"])
    goes = next_allowed(max(wanted, now), tz, quiet)
    if goes <= not_before <= goes + template_for(kind).spread:
        return None
    expires_at = queued["expires_at"] if template_for(kind).windowed else queued["expires_at"] + (goes - not_before)
    return goes, expires_at


def collapse_key_for(kind: str, patient_id: str, recipient_id: str | None = None) -> str:
    """The collapse key for ``kind`` about ``patient_id`` (sent to ``recipient_id``), and the tag in the tray of every
    push but a reminder's (:func:`tray_tag_for`).

    One key per kind and patient, so a phone that was offline gets only the latest of each. Caregiver alerts,
    which all say the same line, share one key per patient, caregiver and priority: a key per alert kind would let
    FCM and APNs count each kind, one shared by every caregiver of a patient would link their phones, and one
    shared by both priorities would let a routine alert replace an urgent one held for an offline phone (or the
    reverse, the urgent one then lost when the routine one's longer lifetime outlasts it). The ids are
    digested so that FCM and APNs see no identifier they could join with anything else; the result stays well
    under APNs' 64-byte limit.
    """
    template = template_for(kind)
    basis = f"{template.public_kind}\x00{template.urgent}\x00{patient_id}\x00{recipient_id or ''}" \
        if template.audience is Audience.CAREGIVER else f"{template.kind}\x00{patient_id}"
    digest = hashlib.sha256(basis.encode()).hexdigest()[:24]
    return f"{template.public_kind}-{digest}"


def tray_tag_for(source_key: str, collapse_key: str) -> str:
    """The tag a push shows under in the phone's notification tray (Android ``tag``, APNs ``apns-collapse-id``): a
    push with the tag of one still shown replaces it there. A reminder's pushes are tagged by the occurrence they
    remind of (its first push, nudges, re-send and snooze replace one another; for a DST gap's slots, the one whose
    push they share), so the 08:30 dose's reminder shows beside the 08:00 one's instead of replacing it; every other
    push by its ``collapse_key`` (a newer summary, or caregiver alert, stands for the one before). The collapse key
    itself still tells FCM which of the messages it holds for an offline phone to keep. Digested as the collapse key
    is: FCM and APNs see no identifier they could join with anything else."""
    source, _, rest = source_key.partition(":")
    if source != "reminder" or not rest:
        return collapse_key
    basis = "reminder\x00" + rest.split(":")[0]  # the occurrence
    return f"reminder-{hashlib.sha256(basis.encode()).hexdigest()[:24]}"


def texts_for(kind: str, has_time: bool) -> tuple[PushText, PushText]:
    """The title and body a ``kind`` push says; the untimed body when there is no planned time to name."""
    template = template_for(kind)
    return template.title, template.body if has_time or not template.body.arguments else template.untimed_body


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


def alert_key(alert_id: str, *, escalated: bool = False) -> str:
    """The source key of the pushes that tell of an alert (one notification per recipient): ``alert:<id>``; those
    that tell of it again as urgent once a fresh overload made it so (``companion.domain.alerts.escalates``),
    ``alert:<id>:escalated``, so that each recipient has one of each whatever the passes that raise it."""
    return f"alert:{alert_id}:escalated" if escalated else f"alert:{alert_id}"


def alert_of(source_key: str) -> str | None:
    """The id of the alert a push's source key tells of (``alert_key``), or None for any other push."""
    kind, _, rest = source_key.partition(":")
    return rest.split(":")[0] if kind == "alert" else None


# The source keys of the pushes that remind a patient of one reminder occurrence (one notification each).
MAX_NUDGES = 5  # a reminder repeats at most this often (companion.api.reminder_schemas)


def initial_key(occurrence_id: str) -> str:
    """The source key of an occurrence's first reminder push."""
    return f"reminder:{occurrence_id}"


def snooze_key(occurrence: dict) -> str | None:
    """The source key of the push an occurrence's current snooze causes (None when not snoozed)."""
    snoozed = occurrence.get("snoozed_until")
    return None if snoozed is None else f"{initial_key(occurrence['_id'])}:snooze:{snoozed:%Y%m%dT%H%M%S}"


def nudge_key(occurrence: dict, n: int) -> str:
    """The source key of an occurrence's ``n``-th nudge (of its leader's, a DST gap): ``...:repeat:<n>``, and for a
    slot a move undone brought back (``restored_at`` set) ``...:repeat:<n>@<due_at, epoch seconds>``, so that its
    nudges on the restored clock are not taken for those sent while it sat on the other one. A nudge keyed by a due
    instant goes after it, and a slot is only ever brought back to a due instant still to come, so no nudge of one
    restore can take the place of another's. Slots never brought back keep the plain key (so do the pushes
    already queued under it)."""
    key = f"{initial_key(occurrence.get('push_with') or occurrence['_id'])}:repeat:{n}"
    return f"{key}@{int(occurrence['due_at'].timestamp())}" if occurrence.get("restored_at") else key


def reminding_keys_of(occurrence: dict, *, shared: bool = True) -> list[str]:
    """Every push that may remind of ``occurrence`` as it stands: its (or its leader's, a DST gap) first push,
    nudges and re-send, and its current snooze's; for a slot a move undone brought back, the nudges sent before
    too (the plain keys). ``shared`` False: its own alone (its snooze's), not those of the push it shares with the
    other slots of a DST gap (which still remind of those while one is open)."""
    snoozed = snooze_key(occurrence)
    if not shared:
        return [snoozed] if snoozed else []
    first = initial_key(occurrence.get("push_with") or occurrence["_id"])
    nudges = [nudge_key(occurrence, n) for n in range(1, MAX_NUDGES + 1)]
    if occurrence.get("restored_at"):
        nudges += [f"{first}:repeat:{n}" for n in range(1, MAX_NUDGES + 1)]
    keys = [first, f"{first}:resend", *nudges]
    return keys + [snoozed] if snoozed else keys


def left_on_the_other_clock(before: dict, after: dict) -> list[str]:
    """The pushes queued to remind of a slot as it stood (``before``) that remind of nothing once a move undone has
    brought it back to the clock it was due on (``after``): its re-send and its nudges, planned on the clock it left
    (each is withdrawn, not sent at that clock's time). Not its first push, one push on either clock (moved to the
    restored time when it has not gone yet), nor its snooze's (the time the patient asked for, whatever the clock),
    nor the nudges it plans on the restored clock."""
    first = initial_key(before.get("push_with") or before["_id"])
    kept = {first, snooze_key(before), *(nudge_key(after, n) for n in range(1, MAX_NUDGES + 1))}
    return [key for key in reminding_keys_of(before) if key not in kept]
