"""Conditional reads of what apps poll: today, the panel, the review and the patient's lists carry an ETag (a hash
of the answer and of the caller, computed by the kernel), and If-None-Match with it is answered 304, no body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from companion.domain.access import CaregiverPermissions

RANGE = "?" + urlencode({"from": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
                         "to": (datetime.now(UTC) + timedelta(days=2)).isoformat()})
POLLED = ("today", "sessions", "pain-entries" + RANGE, "reminders", "alerts", "notifications", "favourites",
          "practice" + RANGE, "review/adherence", "review/tens", "review/pain", "review/alerts", "review/diary",
          "adherence/summary")


def _pain(client, patient, entry_id: str, nrs: int = 5):
    answer = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": entry_id, "recorded_at": datetime.now(UTC).isoformat(), "nrs": nrs})
    assert answer.status_code == 201


@pytest.mark.parametrize("what", POLLED, ids=[what.split("?")[0] for what in POLLED])
def test_a_polled_read_gives_an_etag_and_an_unchanged_one_is_answered_304_without_a_body(client, world, what):
    reader = world["clinician_team"] if what.startswith("review/") else world["patient_a"]
    url = f"/api/v1/patients/{world['patient_a'].id}/{what}"
    first = client.get(url, headers=reader.headers)
    assert first.status_code == 200, first.json
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and tag.endswith('"')
    again = client.get(url, headers={**reader.headers, "If-None-Match": tag})
    assert again.status_code == 304
    assert again.get_data() == b"" and again.headers["ETag"] == tag
    other = client.get(url, headers={**reader.headers, "If-None-Match": 'W/"not-this-one", "nor-this"'})
    assert other.status_code == 200 and other.json == first.json


def test_the_clinician_panel_is_tagged_per_clinician(client, world):
    mine = client.get("/api/v1/clinician/panel", headers=world["clinician_team"].headers)
    assert mine.status_code == 200 and mine.json["items"]
    tag = mine.headers["ETag"]
    assert client.get("/api/v1/clinician/panel", headers={**world["clinician_team"].headers,
                                                          "If-None-Match": tag}).status_code == 304
    theirs = client.get("/api/v1/clinician/panel", headers={**world["clinician_other"].headers, "If-None-Match": tag})
    assert theirs.status_code == 200 and theirs.headers["ETag"] != tag


def test_a_write_that_changes_the_answer_changes_the_etag(client, world):
    patient = world["patient_a"]
    today_url, entries_url = (f"/api/v1/patients/{patient.id}/{what}" for what in ("today", "pain-entries" + RANGE))
    today, entries = (client.get(url, headers=patient.headers) for url in (today_url, entries_url))
    _pain(client, patient, "etag-write-1", nrs=7)
    for url, before in ((today_url, today), (entries_url, entries)):
        after = client.get(url, headers={**patient.headers, "If-None-Match": before.headers["ETag"]})
        assert after.status_code == 200 and after.json != before.json
        assert after.headers["ETag"] != before.headers["ETag"]
        assert client.get(url, headers={**patient.headers, "If-None-Match": after.headers["ETag"]}).status_code == 304


def test_another_callers_etag_is_never_answered_304(client, world):
    patient, clinician, stranger = world["patient_a"], world["clinician_team"], world["patient_b"]
    url = f"/api/v1/patients/{patient.id}/today"
    tag = client.get(url, headers=patient.headers).headers["ETag"]
    # The clinician may read the same today, but the patient's tag is not theirs: a full answer with their own.
    seen_by_clinician = client.get(url, headers={**clinician.headers, "If-None-Match": tag})
    assert seen_by_clinician.status_code == 200 and seen_by_clinician.headers["ETag"] != tag
    # Someone without access learns nothing from a tag, not even that it is current: refused as without one.
    refused = client.get(url, headers={**stranger.headers, "If-None-Match": tag})
    assert refused.status_code in (403, 404) and "ETag" not in refused.headers


def test_a_304_is_audited_like_the_read_it_stands_for(client, world, db):
    patient, clinician = world["patient_a"], world["clinician_team"]
    url = f"/api/v1/patients/{patient.id}/review/pain"
    tag = client.get(url, headers=clinician.headers).headers["ETag"]
    answer = client.get(url, headers={**clinician.headers, "If-None-Match": tag, "X-Request-ID": "etag-audit-304"})
    assert answer.status_code == 304
    events = list(db.audit_events.find({"actor_id": clinician.id, "status": 304}))
    assert events and all(e["patient_ids"] == [patient.id] and e["action"] == "R" and e["outcome"] == "success"
                          for e in events)


def test_objects_keep_their_version_as_etag(client, world):
    patient = world["patient_a"]
    created = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "etag-version-1", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 3})
    url = created.headers["Location"]
    read = client.get(url, headers=patient.headers)
    assert read.headers["ETag"] == f'"{read.json["version"]}"'
    assert client.get(url, headers={**patient.headers, "If-None-Match": read.headers["ETag"]}).status_code == 304
    # Compared weakly, as RFC 9110 asks: a proxy that compressed the answer made its tag weak; a list; anything.
    tag = read.headers["ETag"]
    for sent in (f"W/{tag}", f'"999", {tag}', f'W/"x", {tag}', "*"):
        again = client.get(url, headers={**patient.headers, "If-None-Match": sent})
        assert (sent, again.status_code) == (sent, 304)
    for sent in ('"999"', 'W/"999"', "not a tag"):
        assert client.get(url, headers={**patient.headers, "If-None-Match": sent}).status_code == 200


def test_a_copy_with_the_note_withheld_is_not_confirmed_once_the_note_is_granted_nor_the_reverse(client, world,
                                                                                                 services):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    created = client.post(f"/api/v1/patients/{patient.id}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "etag-view-1", "recorded_at": datetime.now(UTC).isoformat(), "nrs": 6,
        "context": {"note": "after the school run"}})
    url = created.headers["Location"]
    withheld = client.get(url, headers=caregiver.headers)
    assert withheld.json["context"]["note"] is None
    assert withheld.headers["ETag"] == f'"{withheld.json["version"]}.withheld"'
    assert client.get(url, headers={**caregiver.headers, "If-None-Match": withheld.headers["ETag"]}).status_code == 304
    services.stores.care_links.grant(patient.id, caregiver.id, CaregiverPermissions(diary_notes=True))
    whole = client.get(url, headers={**caregiver.headers, "If-None-Match": withheld.headers["ETag"]})
    assert (whole.status_code, whole.json["context"]["note"]) == (200, "after the school run")
    assert whole.headers["ETag"] == f'"{whole.json["version"]}"'
    services.stores.care_links.grant(patient.id, caregiver.id, CaregiverPermissions())
    again = client.get(url, headers={**caregiver.headers, "If-None-Match": whole.headers["ETag"]})
    assert (again.status_code, again.json["context"]["note"]) == (200, None)
    # If-Match reads the version whichever view named it.
    edited = client.patch(url, headers={**patient.headers, "If-Match": withheld.headers["ETag"]}, json={"nrs": 5})
    assert edited.status_code == 200 and edited.headers["ETag"] == f'"{edited.json["version"]}"'


def test_every_tagged_read_documents_if_none_match_etag_and_304(client):
    spec = client.get("/openapi.json").json
    reads = [(path, item["get"]) for path, item in spec["paths"].items() if path.startswith("/api/") and "get" in item
             and "application/json" in item["get"]["responses"].get("200", {}).get("content", {})]
    assert len(reads) > 40
    for path, operation in reads:
        names = {p.get("name") for p in operation["parameters"]}
        assert "If-None-Match" in names, path
        assert "ETag" in operation["responses"]["200"]["headers"], path
        assert "304" in operation["responses"], path


def test_every_answer_that_shows_one_versioned_object_documents_its_etag(client):
    """Reads and writes alike: an answer whose body has a ``version`` says ``ETag: "<version>"`` (the README's
    "Versions and conflicts"); starting and completing a practice and snoozing a reminder did not."""
    spec = client.get("/openapi.json").json
    components = spec["components"]["schemas"]

    def properties(schema):
        if "$ref" in schema:
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        return schema.get("properties", {})

    answers, untagged = 0, []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation.get("responses", {}).items() if isinstance(operation, dict) else ():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith("2") and schema and "version" in properties(schema):
                    answers += 1
                    if "ETag" not in response.get("headers", {}):
                        untagged.append(f"{method.upper()} {path} {status}")
    assert answers >= 15
    assert untagged == []
