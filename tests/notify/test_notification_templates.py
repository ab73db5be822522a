"""The allow-list of notification kinds and the messages built from it (snapshots per kind)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from companion.domain.alerts import AlertKind
from companion.domain.notifications import (
    CAREGIVER_OVERLOAD_FOUND_LATE,
    OVERLOAD_FOUND_LATE,
    TEMPLATES,
    Audience,
    UnknownNotificationKind,
    alert_key,
    alert_of,
    alert_push_kind,
    caregiver_kind,
    collapse_key_for,
    ignores_quiet_hours,
    notice_for,
    template_for,
    tray_tag_for,
    ttl_for,
)
from companion.notify.push import PushItem, build_message
from tests.notify.clock import T0

CAREGIVER_TITLE = "Companion: a check-in needs your attention"
CAREGIVER_BODY = "Open Companion to see what needs your attention."
PLANNED = T0 - timedelta(minutes=5)  # 11:55 UTC, 11:55 in London (GMT)

# kind: (title, body, android priority, visibility, channel, apns-priority, interruption level, data kind,
#        analytics label, default ttl). Reminders and urgent alerts high and time-sensitive; nudges, device
#        care and routine alerts normal and active; updates normal and passive.
EXPECTED = {
    "therapy_reminder": ("Time for your therapy session", "Your 11:55 session is ready when you are.",
                         "high", "PRIVATE", "therapy_reminders", "10", "time-sensitive", "therapy_reminder",
                         "therapy_reminder", "3600s"),
    "reminder_repeat": ("A gentle reminder from Companion", "Your 11:55 session is still waiting for you.",
                        "high", "PRIVATE", "therapy_reminders", "10", "time-sensitive", "reminder_repeat",
                        "reminder_repeat", "3600s"),
    "planned_reminder": ("A reminder from Companion", "It is time for what you planned at 11:55.",
                         "high", "PRIVATE", "therapy_reminders", "10", "time-sensitive", "planned_reminder",
                         "planned_reminder", "3600s"),
    "practice_nudge": ("A moment for yourself", "Your 11:55 practice is ready when you are.",
                       "normal", "PRIVATE", "practice", "5", "active", "practice_nudge", "practice_nudge", "3600s"),
    "battery_low": ("Companion: time to charge", "Open Companion for details.",
                    "normal", "PRIVATE", "device_status", "5", "active", "battery_low", "battery_low", "43200s"),
    "electrode_off": ("Companion: please check your unit", "Open Companion for details.",
                      "normal", "PRIVATE", "device_status", "5", "active", "electrode_off", "electrode_off",
                      "21600s"),
    "overload": ("Companion: please check your unit", "Open Companion for details.",
                 "high", "PRIVATE", "device_status", "10", "time-sensitive", "overload", "overload", "21600s"),
    # An overload found late (more than OVERLOAD_URGENT_FOR after it): routine device care, still an overload to the app.
    "overload_found_late": ("Companion: please check your unit", "Open Companion for details.",
                            "normal", "PRIVATE", "device_status", "5", "active", "overload", "overload_found_late",
                            "21600s"),
    "generic_update": ("You have a new update", "Open Companion to see it.",
                       "normal", "PRIVATE", "updates", "5", "passive", "generic_update", "generic_update", "86400s"),
    **{f"caregiver_{alert}": (CAREGIVER_TITLE, CAREGIVER_BODY, priority, "SECRET", "caregiver_alerts", apns, level,
                              "caregiver_alert", "caregiver_alert", ttl)
       for alert, priority, apns, level, ttl in (
           ("missed_tens_session", "high", "10", "time-sensitive", "21600s"),
           ("pain_flare", "high", "10", "time-sensitive", "21600s"),
           ("overload", "high", "10", "time-sensitive", "21600s"),
           ("overload_found_late", "normal", "5", "active", "86400s"),
           ("electrode_off", "normal", "5", "active", "86400s"),
           ("battery_low", "normal", "5", "active", "86400s"),
           ("low_adherence", "normal", "5", "active", "86400s"),
           ("unit_silent", "normal", "5", "active", "86400s"),
       )},
}


def built(kind: str, locales: tuple = ("en-GB",), zone: str = "Europe/London", planned_at=PLANNED) -> dict:
    ttl = ttl_for(kind)
    item = PushItem(outbox_id="ob-1", token="phone-1", kind=kind, expires_at=T0 + ttl,
                    collapse_key=collapse_key_for(kind, "patient-1"), locales=locales, zone=zone,
                    planned_at=planned_at)
    return json.loads(str(build_message(item, T0)))


def snapshot_row(message: dict) -> tuple:
    android, apns = message["android"], message["apns"]
    return (message["notification"]["title"], message["notification"]["body"], android["priority"],
            android["notification"]["visibility"], android["notification"]["channel_id"],
            apns["headers"]["apns-priority"], apns["payload"]["aps"]["interruption-level"], message["data"]["kind"],
            message["fcm_options"]["analytics_label"], android["ttl"])


def test_every_kind_has_a_snapshot():
    assert set(EXPECTED) == set(TEMPLATES)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_built_message_matches_the_snapshot_for_each_kind(kind):
    assert snapshot_row(built(kind)) == EXPECTED[kind]


def test_full_message_for_a_therapy_reminder():
    key = collapse_key_for("therapy_reminder", "patient-1")
    body = "Your 11:55 session is ready when you are."
    assert built("therapy_reminder") == {
        "token": "phone-1",
        "notification": {"title": "Time for your therapy session", "body": body},
        "data": {"notification_id": "ob-1", "kind": "therapy_reminder"},
        "android": {"collapse_key": key, "priority": "high", "ttl": "3600s",
                    "notification": {"visibility": "PRIVATE", "tag": key, "channel_id": "therapy_reminders",
                                     "title_loc_key": "therapy_reminder_title",
                                     "body_loc_key": "therapy_reminder_body", "body_loc_args": ["11:55"]}},
        "apns": {"headers": {"apns-expiration": str(int((T0 + timedelta(hours=1)).timestamp())),
                             "apns-collapse-id": key, "apns-priority": "10", "apns-push-type": "alert"},
                 "payload": {"aps": {"alert": {"title": "Time for your therapy session", "body": body,
                                               "title-loc-key": "therapy_reminder_title",
                                               "loc-key": "therapy_reminder_body", "loc-args": ["11:55"]},
                                     "category": "companion.private", "interruption-level": "time-sensitive"}}},
        "fcm_options": {"analytics_label": "therapy_reminder"},
    }


def test_reminder_text_names_the_planned_time_on_the_recipients_clock_not_utc():
    # 11:55 UTC is 07:55 in New York (EDT since 8 March) and 17:25 in Kolkata; each locale its own format.
    assert built("therapy_reminder", ("en-US",), zone="America/New_York")["notification"]["body"] == (
        "Your 7:55\u202fAM session is ready when you are.")
    assert built("therapy_reminder", ("en-IN",), zone="Asia/Kolkata")["android"]["notification"][
        "body_loc_args"] == ["5:25\u202fpm"]


def test_a_reminder_without_a_planned_time_says_the_untimed_line():
    message = built("therapy_reminder", planned_at=None)
    assert message["notification"]["body"] == "Open Companion when you are ready."
    assert message["android"]["notification"]["body_loc_key"] == "therapy_reminder_untimed_body"
    assert "body_loc_args" not in message["android"]["notification"]


def test_practice_nudge_does_not_call_itself_a_therapy_session():
    message = built("practice_nudge")
    assert "therapy" not in json.dumps(message["notification"]).lower()
    assert "session" not in json.dumps(message["notification"]).lower()


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_kind_has_its_collapse_key_on_both_platforms(kind):
    message = built(kind)
    key = collapse_key_for(kind, "patient-1")
    assert message["android"]["collapse_key"] == message["apns"]["headers"]["apns-collapse-id"] == key


def test_every_patient_kind_has_an_analytics_label_of_its_own_and_caregiver_kinds_share_one():
    labels = {kind: built(kind)["fcm_options"]["analytics_label"] for kind in TEMPLATES}
    patient = [labels[k] for k, t in TEMPLATES.items() if t.audience is Audience.PATIENT]
    caregiver = {labels[k] for k, t in TEMPLATES.items() if t.audience is Audience.CAREGIVER}
    assert len(set(patient)) == len(patient)
    assert caregiver == {"caregiver_alert"}
    assert all(re.fullmatch(r"[a-zA-Z0-9-_.~%]{1,50}", label) for label in labels.values())


def test_data_carries_only_the_notification_id_and_public_kind():
    for kind in TEMPLATES:
        assert set(built(kind)["data"]) == {"notification_id", "kind"}


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_kind_has_a_ttl_no_longer_than_fcms_four_week_default(kind):
    template = TEMPLATES[kind]
    assert timedelta(0) < template.default_ttl <= template.max_ttl < timedelta(weeks=4)


def test_reminder_ttl_is_the_completion_window():
    assert ttl_for("therapy_reminder", timedelta(minutes=30)) == timedelta(minutes=30)


def test_session_now_reminder_ttl_never_exceeds_one_hour():
    assert ttl_for("therapy_reminder", timedelta(hours=5)) == timedelta(hours=1)


def test_reminders_and_urgent_alerts_are_high_priority_and_the_rest_normal():
    urgent = {kind for kind, t in TEMPLATES.items() if t.urgent}
    assert urgent == {"therapy_reminder", "reminder_repeat", "planned_reminder", "overload",
                      "caregiver_missed_tens_session", "caregiver_pain_flare", "caregiver_overload"}


def test_every_caregiver_alert_kind_has_its_own_push_kind():
    caregiver_kinds = {k for k, t in TEMPLATES.items() if t.audience is Audience.CAREGIVER}
    assert caregiver_kinds == {caregiver_kind(alert) for alert in AlertKind} | {CAREGIVER_OVERLOAD_FOUND_LATE}


def test_an_overload_no_longer_urgent_is_pushed_as_routine_under_kinds_of_its_own():
    assert [alert_push_kind(AlertKind.OVERLOAD, audience, urgent=True) for audience in Audience] == \
        ["overload", "caregiver_overload"]
    late = [alert_push_kind(AlertKind.OVERLOAD, audience, urgent=False) for audience in Audience]
    assert late == [OVERLOAD_FOUND_LATE, CAREGIVER_OVERLOAD_FOUND_LATE]
    assert not any(template_for(kind).urgent or ignores_quiet_hours(kind, "alert:a-1") for kind in late)
    assert alert_push_kind(AlertKind.MISSED_TENS, Audience.CAREGIVER, urgent=False) == "caregiver_missed_tens_session"


def test_kinds_queued_by_earlier_versions_still_resolve():
    assert template_for("device_silent").kind == "caregiver_unit_silent"
    assert template_for("missed_session_caregiver").urgent


def test_caregiver_alerts_are_secret_and_patient_notices_private():
    for template in TEMPLATES.values():
        expected = "secret" if template.audience is Audience.CAREGIVER else "private"
        assert template.visibility.value == expected


def test_no_template_line_names_a_health_detail():
    health_words = re.compile(r"\b(pain|flare|adherence|missed|dose|mg|ma|hz|tens|electrode|score)\b", re.I)
    lines = [f"{t.title.message} {t.body.message} {t.untimed_body.message}" for t in TEMPLATES.values()]
    assert [line for line in lines if health_words.search(line)] == []


def test_collapse_key_differs_per_kind_and_patient():
    keys = {collapse_key_for(kind, patient) for kind in ("therapy_reminder", "battery_low")
            for patient in ("p-1", "p-2")}
    assert len(keys) == 4


def test_a_caregiver_alert_looks_the_same_on_the_wire_whatever_its_kind_within_its_priority():
    """What reaches FCM and APNs for a caregiver (the whole message: texts, data, TTL, expiration, collapse key,
    label) tells nothing of the alert's kind beyond its priority (the documented trade-off: a flare must not
    wait like a low battery)."""
    def wire(kind: str) -> str:
        item = PushItem(outbox_id="ob-1", token="phone-1", kind=kind, expires_at=T0 + ttl_for(kind),
                        collapse_key=collapse_key_for(kind, "patient-1", "caregiver-1"), locales=("en-GB",))
        return json.dumps(json.loads(str(build_message(item, T0))), sort_keys=True)

    by_priority: dict[bool, set[str]] = {}
    for kind, template in TEMPLATES.items():
        if template.audience is Audience.CAREGIVER:
            by_priority.setdefault(template.urgent, set()).add(wire(kind))
    assert {urgent: len(messages) for urgent, messages in by_priority.items()} == {True: 1, False: 1}
    # One key per patient, caregiver and priority: two caregivers' phones are not linked by it, two patients not
    # merged, and an urgent alert held for an offline phone is not replaced by a routine one.
    keys = {collapse_key_for(kind, patient, caregiver)
            for kind in ("caregiver_pain_flare", "caregiver_missed_tens_session", "caregiver_battery_low",
                         "caregiver_unit_silent") for patient in ("p-1", "p-2") for caregiver in ("c-1", "c-2")}
    assert len(keys) == 8


def test_collapse_key_does_not_carry_the_patient_id():
    key = collapse_key_for("pain_flare", "65f0c0ffee0000000000beef")
    assert "beef" not in key and len(key.encode()) <= 64


def test_notice_reads_only_the_patient_id_from_its_context():
    context = {"patient_id": "p-1", "name": "Qzxvy Canarysson", "pain": 9}
    assert notice_for("pain_flare", "ob-1", context) == notice_for("pain_flare", "ob-1", {"patient_id": "p-1"})


def test_unknown_kind_is_refused():
    with pytest.raises(UnknownNotificationKind):
        ttl_for("pain_score_9")


def test_an_alerts_pushes_and_its_escalations_name_the_alert_they_tell_of():
    assert alert_key("a1") != alert_key("a1", escalated=True)
    assert alert_of(alert_key("a1")) == alert_of(alert_key("a1", escalated=True)) == "a1"
    assert alert_of("reminder:o1") is None and alert_of("invitation:i1") is None


def test_a_reminders_pushes_are_tagged_in_the_tray_by_their_occurrence_and_every_other_push_by_its_collapse_key():
    key = collapse_key_for("planned_reminder", "patient-1")
    first = tray_tag_for("reminder:occ-0800", key)
    assert {tray_tag_for(f"reminder:occ-0800{rest}", key) for rest in (":repeat:2", ":resend",
                                                                       ":snooze:20260302T081500")} == {first}
    assert tray_tag_for("reminder:occ-0830", key) != first and "occ-0800" not in first
    assert tray_tag_for("alert:a1", "k") == tray_tag_for("missed-summary:p1:2026-03-02", "k") == "k"
    message = json.loads(str(build_message(PushItem(outbox_id="ob-1", token="phone-1", kind="planned_reminder",
                                                    expires_at=T0 + timedelta(hours=1), collapse_key=key,
                                                    tag=first), T0)))
    assert message["android"]["notification"]["tag"] == message["apns"]["headers"]["apns-collapse-id"] == first
    assert message["android"]["collapse_key"] == key
