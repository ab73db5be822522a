"""An object a create answers is the object as stored: an app that keeps the 201 (or 202) body finds it equal to
every later read of the same object. MongoDB keeps a date to the millisecond, so an answer built from the
values before they were written showed microseconds that no read ever shows again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.patient.helpers import PLAN
from tests.support.world import PASSWORD

REMINDER = {"kind": "medication", "title": "Morning tablet", "completion_window_min": 60,
            "schedule": {"type": "weekly", "times": ["09:30"]}}


def _one(items: list[dict], created: dict, key: str = "id") -> dict:
    return next(item for item in items if item[key] == created[key])


def _reminder(client, world, services):
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/reminders", headers=patient.headers, json=REMINDER)
    return created, client.get(created.headers["Location"], headers=patient.headers).json


def _practice(client, world, services):
    services.library.load()
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/practice", headers=patient.headers,
                          json={"item_slug": "three-breath-reset"})
    now = datetime.now(UTC)
    listed = client.get(f"/api/v1/patients/{patient.id}/practice", headers=patient.headers, query_string={
        "from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}).json
    return created, _one(listed["items"], created.json)


def _pain_entry(client, world, services):
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "entry-as-stored", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 4})
    return created, client.get(created.headers["Location"], headers=patient.headers).json


def _therapy_plan(client, world, services):
    patient, clinician = world["patient_a"], world["clinician_team"]
    url = f"/api/v1/patients/{patient.id}/therapy-plan"
    return client.put(url, headers=clinician.headers, json=PLAN), client.get(url, headers=clinician.headers).json


def _clinical_note(client, world, services):
    patient, clinician = world["patient_a"], world["clinician_team"]
    url = f"/api/v1/patients/{patient.id}/review/notes"
    created = client.post(url, headers=clinician.headers, json={"text": "Responds well to 100 Hz."})
    return created, _one(client.get(url, headers=clinician.headers).json["items"], created.json)


def _caregiver_offer(client, world, services):
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/caregivers", headers=patient.headers, json={
        "caregiver_email": world["caregiver_unlinked"].email, "current_password": PASSWORD})
    return created, client.get(created.headers["Location"], headers=patient.headers).json


def _unit(client, world, services):
    patient = world["patient_a"]
    url = f"/api/v1/patients/{patient.id}/devices"
    created = client.post(url, headers=patient.headers, json={"serial": "CTU-A0002"})
    return created, _one(client.get(url, headers=patient.headers).json["devices"], created.json, "serial")


def _invitation(client, world, services):
    clinician = world["clinician_team"]
    url = f"/api/v1/clinician/teams/{world.team_id}/invitations"
    created = client.post(url, headers=clinician.headers, json={"patient_email": world["patient_b"].email,
                                                                "reason": "Referred by the pain clinic"})
    return created, _one(client.get(url, headers=clinician.headers).json["items"], created.json)


def _emergency_access(client, world, services):
    """Read back by the patient: the grant as their data export lists it."""
    patient, clinician = world["patient_a"], world["clinician_other"]
    created = client.post("/api/v1/emergency-access", headers=clinician.headers,
                          json={"patient_id": patient.id, "reason": "Seen in A&E, no team reachable"})
    export = client.get(f"/api/v1/patients/{patient.id}/data-export", headers=patient.headers).json
    grants = [g for section in export.values() if isinstance(section, dict)
              for g in section.get("emergency_access", [])]
    return created, {**created.json, **{k: grants[0][k] for k in ("granted_at", "expires_at") if k in created.json}}


@pytest.mark.parametrize("create_and_read", [_reminder, _practice, _pain_entry, _therapy_plan, _clinical_note,
                                             _caregiver_offer, _unit, _invitation,
                                             _emergency_access], ids=lambda f: f.__name__[1:])
def test_a_created_object_is_answered_as_every_later_read_shows_it(client, world, services, create_and_read):
    created, read = create_and_read(client, world, services)
    assert created.status_code in (200, 201, 202), created.json
    assert created.json == read
