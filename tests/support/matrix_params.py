"""Path parameters for the authorization matrix (tests/api/test_authorization_matrix.py).

For every path parameter a route uses, PROVIDERS names a function `(client, world, services) -> str`
that returns the id of an object of that kind belonging to patient A (creating it through the API or
the services if needed). `patient_id` is always patient A. The matrix refuses routes with a parameter
that has no provider here, so a new route cannot slip past the authorization checks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.clock import now
from companion.domain.access import Grant, Relationship
from tests.clinician.seed import Seed


def _care_link(client, world, services) -> str:
    return services.stores.care_links.active(world["patient_a"].id, world["caregiver_linked"].id).id


def _notification(client, world, services) -> str:
    doc, _ = services.stores.outbox.schedule(source_key="matrix:notification", recipient_user_id=world["patient_a"].id,
                                          patient_id=world["patient_a"].id, kind="generic_update", send_at=now())
    return doc["_id"]


def _pain_entry(client, world, services) -> str:
    entry, _ = services.diary.record_entry(Grant(world["patient_a"].id, Relationship.SELF), {
        "client_entry_id": "matrix-entry-1", "recorded_at": datetime.now(UTC), "nrs": 4, "context": None,
        "bpi": None, "session_record_id": None, "phase": None})
    return entry["_id"]


def _library_item(client, world, services) -> str:
    services.library.load()
    return min(item["_id"] for item in services.library.browse(limit=1000))


def _practice(client, world, services) -> str:
    return services.library.start_practice(world["patient_a"].id, _library_item(client, world, services), None)["_id"]


def _reminder(client, world, services) -> str:
    return services.reminders.create(world["patient_a"].id, {
        "kind": "tens", "title": "Session", "completion_window_min": 60, "repeat": None,
        "schedule": {"type": "hourly", "window_start": "00:00", "window_end": "23:00", "every_hours": 1,
                     "start_date": None, "end_date": None}})["_id"]


def _occurrence(client, world, services) -> str:
    _reminder(client, world, services)
    current = datetime.now(UTC)
    coming = services.reminders.occurrences_between(Grant(world["patient_a"].id, Relationship.SELF), current,
                                                    current + timedelta(hours=2))
    return coming[0]["_id"]


def _session_record(client, world, services) -> str:
    from companion.api.ingestion import SessionRecordSchema
    from tests.support.records import session_record

    record = session_record(world.a_device, 9001, duration_s=0)  # held (a clinical finding), so it can be resolved
    services.ingestion.receive(None, world["patient_a"].id, [SessionRecordSchema().load(record)], {world.a_device})
    return record["record_id"]


def _alert(client, world, services) -> str:
    return Seed(services.db).alert(world["patient_a"].id, now())["_id"]


def _user(client, world, services) -> str:
    """An account the admin routes may deactivate, reset and delete without touching the world's people."""
    found = services.accounts.by_email("matrix-subject@example.org")
    if found is not None:
        return found.id
    return services.accounts.sign_up(email="matrix-subject@example.org", password="matrix subject password",
                                     display_name="Matrix Subject", role="caregiver", time_zone="UTC").id


def _team_clinician(client, world, services) -> str:
    """A second clinician on patient A's team, for the admin to take off it (the world's stays)."""
    found = services.accounts.by_email("matrix-clinician@example.org")
    clinician = found or services.accounts.sign_up(email="matrix-clinician@example.org", password="matrix clinician pw",
                                                   display_name="Matrix Clinician", role="clinician", time_zone="UTC")
    services.care.add_clinician(world.team_id, clinician.id)
    return clinician.id


def _team_member(client, world, services) -> str:
    """A second patient on patient A's team, for the admin to take out of it (patient A stays)."""
    found = services.accounts.by_email("matrix-member@example.org")
    member = found or services.accounts.sign_up(email="matrix-member@example.org", password="matrix member password",
                                                display_name="Matrix Member", role="patient", time_zone="UTC")
    services.care.enrol(world.team_id, member.id)
    return member.id


def _gateway(client, world, services) -> str:
    """A second gateway of patient A's, for the patient to revoke (the world's gateway A stays)."""
    code, _ = services.gateways.create_pairing_code(world["patient_a"].id, address="matrix")
    return services.gateways.pair(code, "matrix gateway", address="matrix").gateway_id


def _invitation(client, world, services) -> str:
    return services.care.invite(world["clinician_team"].id, world.team_id, world["patient_a"].email,
                                "matrix: referral from the pain clinic")["id"]


PROVIDERS = {
    "install_id": lambda client, world, services: "matrix-phone-a",
    "notification_id": _notification,
    "link_id": _care_link,
    "serial": lambda client, world, services: world.a_device,
    "seq": lambda client, world, services: "1",  # a record number of the unit
    "team_id": lambda client, world, services: world.team_id,
    "entry_id": _pain_entry,
    "slug": _library_item,
    "practice_id": _practice,
    "reminder_id": _reminder,
    "occurrence_id": _occurrence,
    "alert_id": _alert,
    "record_id": _session_record,
    "user_id": _user,
    "clinician_id": _team_clinician,
    "member_id": _team_member,
    "gateway_id": _gateway,
    "invitation_id": _invitation,
    # The clinician pages' static files (a public route, which the matrix does not call).
    "filename": lambda client, world, services: "dashboard.css",
}
