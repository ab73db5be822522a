"""A caregiver's copy of a feed that withholds the patient's own words (the diary's notes, an occurrence's
reason for skipping) follows what the patient allows: a cursor issued in one view is answered 410 once the
caller reads in the other, and the fresh read brings the copy the caregiver may hold now."""

from __future__ import annotations

from datetime import UTC, datetime

from companion.domain.access import CaregiverPermissions
from tests.patient.conftest import START
from tests.support.problems import assert_problem

NOTE = "worse after the night shift"


def base(world) -> str:
    return f"/api/v1/patients/{world['patient_a'].id}"


def changes(client, world, feed: str, who: str, cursor: str | None = None):
    return client.get(f"{base(world)}/{feed}/changes", query_string={"cursor": cursor} if cursor else {},
                      headers=world[who].headers)


def allow_notes(services, world, allowed: bool) -> None:
    services.stores.care_links.grant(world["patient_a"].id, world["caregiver_linked"].id,
                                     CaregiverPermissions(diary_notes=allowed))


def noted_entry(client, world) -> dict:
    return client.post(f"{base(world)}/pain-entries", headers=world["patient_a"].headers, json={
        "client_entry_id": "with-a-note", "recorded_at": START.isoformat(), "nrs": 6, "context": {"note": NOTE}}).json


def resync_asked(answer) -> None:
    body = assert_problem(answer, 410)
    assert body["type"].endswith("/resync-required") and "permissions" in body["detail"]


def test_a_caregiver_granted_the_notes_reads_the_diary_feed_again_and_gets_them(client, world, services):
    created = noted_entry(client, world)
    first = changes(client, world, "pain-entries", "caregiver_linked").json
    assert [(e["id"], e["context"]["note"]) for e in first["items"]] == [(created["id"], None)]
    allow_notes(services, world, True)
    resync_asked(changes(client, world, "pain-entries", "caregiver_linked", first["next_cursor"]))
    fresh = changes(client, world, "pain-entries", "caregiver_linked").json
    assert [e["context"]["note"] for e in fresh["items"]] == [NOTE]
    assert changes(client, world, "pain-entries", "caregiver_linked", fresh["next_cursor"]).json["items"] == []


def test_a_caregiver_whose_notes_are_withdrawn_reads_the_diary_feed_again_without_them(client, world, services):
    allow_notes(services, world, True)
    noted_entry(client, world)
    first = changes(client, world, "pain-entries", "caregiver_linked").json
    assert [e["context"]["note"] for e in first["items"]] == [NOTE]
    allow_notes(services, world, False)
    resync_asked(changes(client, world, "pain-entries", "caregiver_linked", first["next_cursor"]))
    fresh = changes(client, world, "pain-entries", "caregiver_linked").json
    assert [e["context"]["note"] for e in fresh["items"]] == [None]


def test_a_caregiver_granted_the_notes_reads_the_occurrence_feed_again_and_gets_the_reasons_for_skipping(
        client, world, services, clock):
    client.post(f"{base(world)}/reminders", headers=world["patient_a"].headers, json={
        "kind": "medication", "title": "Tablet", "completion_window_min": 60,
        "schedule": {"type": "weekly", "times": ["09:30"], "start_date": "2026-03-02"}})
    clock.move_to(datetime(2026, 3, 2, 9, 40, tzinfo=UTC))
    due = changes(client, world, "occurrences", "patient_a").json["items"][0]
    client.patch(f"{base(world)}/occurrences/{due['id']}", headers=world["patient_a"].headers,
                 json={"status": "skipped", "skip_reason": "felt low"})
    first = changes(client, world, "occurrences", "caregiver_linked").json
    assert {o["id"]: o["skip_reason"] for o in first["items"]}[due["id"]] is None
    allow_notes(services, world, True)
    resync_asked(changes(client, world, "occurrences", "caregiver_linked", first["next_cursor"]))
    fresh = changes(client, world, "occurrences", "caregiver_linked").json
    assert {o["id"]: o["skip_reason"] for o in fresh["items"]}[due["id"]] == "felt low"


def test_cursors_without_a_view_go_on_for_the_patient_and_are_read_again_once_by_a_caregiver(client, world):
    """A cursor issued before views were marked (``<last change read>.<since>``) goes on for whoever always
    reads everything (the patient); a caregiver's such cursor may come from a copy read in either view, and is
    answered 410 once."""
    noted_entry(client, world)
    patients = changes(client, world, "pain-entries", "patient_a").json["next_cursor"]
    assert changes(client, world, "pain-entries", "patient_a", patients).status_code == 200
    caregivers = changes(client, world, "pain-entries", "caregiver_linked").json["next_cursor"]
    unmarked = caregivers.rsplit(".", 1)[0]
    assert unmarked.count(".") == 1
    resync_asked(changes(client, world, "pain-entries", "caregiver_linked", unmarked))
    assert changes(client, world, "pain-entries", "caregiver_linked", caregivers).status_code == 200
