"""The allow-list of notification kinds and the messages built from it (snapshots per kind)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from companion.domain.notifications import (
    TEMPLATES,
    Audience,
    UnknownNotificationKind,
    collapse_key_for,
    notice_for,
    ttl_for,
)
from companion.notify.push import PushItem, build_message
from tests.notify.clock import T0

CAREGIVER_TITLE = "Companion: a check-in needs your attention"
CAREGIVER_BODY = "Open Companion to see what needs your attention."

# kind: (title, body, android priority, visibility, channel, apns-priority, data kind, default ttl)
EXPECTED = {
    "therapy_reminder": ("Time for your therapy session", "Open Companion when you are ready.",
                         "normal", "PRIVATE", "therapy_reminders", "5", "therapy_reminder", "3600s"),
    "reminder_repeat": ("A gentle reminder from Companion", "Your session is still waiting for you.",
                        "normal", "PRIVATE", "therapy_reminders", "5", "reminder_repeat", "3600s"),
    "battery_low": ("Companion: time to charge", "Open Companion for details.",
                    "normal", "PRIVATE", "device_status", "5", "battery_low", "43200s"),
    "device_fault": ("Companion: please check your unit", "Open Companion for details.",
                     "normal", "PRIVATE", "device_status", "5", "device_fault", "21600s"),
    "generic_update": ("You have a new update", "Open Companion to see it.",
                       "normal", "PRIVATE", "updates", "5", "generic_update", "86400s"),
    "missed_session_caregiver": (CAREGIVER_TITLE, CAREGIVER_BODY, "high", "SECRET", "caregiver_alerts", "10",
                                 "caregiver_alert", "21600s"),
    "pain_flare": (CAREGIVER_TITLE, CAREGIVER_BODY, "high", "SECRET", "caregiver_alerts", "10",
                   "caregiver_alert", "43200s"),
    "adherence_low": (CAREGIVER_TITLE, CAREGIVER_BODY, "normal", "SECRET", "caregiver_alerts", "5",
                      "caregiver_alert", "86400s"),
    "device_silent": (CAREGIVER_TITLE, CAREGIVER_BODY, "normal", "SECRET", "caregiver_alerts", "5",
                      "caregiver_alert", "86400s"),
}


def built(kind: str) -> dict:
    ttl = ttl_for(kind)
    item = PushItem(outbox_id="ob-1", token="phone-1", kind=kind, expires_at=T0 + ttl,
                    collapse_key=collapse_key_for(kind, "patient-1"))
    return json.loads(str(build_message(item, T0)))


def snapshot_row(message: dict) -> tuple:
    android, apns = message["android"], message["apns"]
    return (message["notification"]["title"], message["notification"]["body"], android["priority"],
            android["notification"]["visibility"], android["notification"]["channel_id"],
            apns["headers"]["apns-priority"], message["data"]["kind"], android["ttl"])


def test_every_kind_has_a_snapshot():
    assert set(EXPECTED) == set(TEMPLATES)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_built_message_matches_the_snapshot_for_each_kind(kind):
    assert snapshot_row(built(kind)) == EXPECTED[kind]


def test_full_message_for_a_therapy_reminder():
    key = collapse_key_for("therapy_reminder", "patient-1")
    assert built("therapy_reminder") == {
        "token": "phone-1",
        "notification": {"title": "Time for your therapy session", "body": "Open Companion when you are ready."},
        "data": {"notification_id": "ob-1", "kind": "therapy_reminder"},
        "android": {"collapse_key": key, "priority": "normal", "ttl": "3600s",
                    "notification": {"visibility": "PRIVATE", "tag": key, "channel_id": "therapy_reminders"}},
        "apns": {"headers": {"apns-expiration": str(int((T0 + timedelta(hours=1)).timestamp())),
                             "apns-collapse-id": key, "apns-priority": "5", "apns-push-type": "alert"},
                 "payload": {"aps": {"category": "companion.private"}}},
    }


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


def test_only_time_critical_caregiver_alerts_are_high_priority():
    urgent = {kind for kind, t in TEMPLATES.items() if t.urgent}
    assert urgent == {"missed_session_caregiver", "pain_flare"}
    assert all(TEMPLATES[kind].audience is Audience.CAREGIVER for kind in urgent)


def test_caregiver_alerts_are_secret_and_patient_notices_private():
    for template in TEMPLATES.values():
        expected = "secret" if template.audience is Audience.CAREGIVER else "private"
        assert template.visibility.value == expected


def test_no_template_line_names_a_health_detail():
    health_words = re.compile(r"\b(pain|flare|adherence|missed|dose|mg|ma|hz|tens|electrode|score)\b", re.I)
    lines = [t.title + " " + t.body for t in TEMPLATES.values()]
    assert [line for line in lines if health_words.search(line)] == []


def test_collapse_key_differs_per_kind_and_patient():
    keys = {collapse_key_for(kind, patient) for kind in ("therapy_reminder", "battery_low")
            for patient in ("p-1", "p-2")}
    assert len(keys) == 4


def test_collapse_key_does_not_carry_the_patient_id():
    key = collapse_key_for("pain_flare", "65f0c0ffee0000000000beef")
    assert "beef" not in key and len(key.encode()) <= 64


def test_notice_reads_only_the_patient_id_from_its_context():
    context = {"patient_id": "p-1", "name": "Qzxvy Canarysson", "pain": 9}
    assert notice_for("pain_flare", "ob-1", context) == notice_for("pain_flare", "ob-1", {"patient_id": "p-1"})


def test_unknown_kind_is_refused():
    with pytest.raises(UnknownNotificationKind):
        ttl_for("pain_score_9")
