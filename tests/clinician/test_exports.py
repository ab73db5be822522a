"""Exports: a patient's days and the panel as CSV; a patient as a FHIR R4 Bundle that validates."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from companion.services.exports import PANEL_CSV_HEADER, PATIENT_CSV_HEADER


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_patient_csv_has_one_row_per_day_with_the_scripted_figures(client, world, scripted_a, db):
    response = client.get(f"/api/v1/patients/{world['patient_a'].id}/exports/csv?days=30",
                          headers=world["clinician_team"].headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert text.splitlines()[0].split(",") == PATIENT_CSV_HEADER
    rows = {r["date"]: r for r in _rows(text)}
    assert len(rows) == 30
    two_days_ago = rows[str(datetime.now(UTC).date() - timedelta(days=2))]
    assert two_days_ago == {"date": two_days_ago["date"], "adherence_state": "progress", "covered": "False",
                            "tens_minutes": "60.0", "tens_target_minutes": "40", "tens_sessions": "2",
                            "pain_entries": "4", "pain_mean_nrs": "5.5", "pain_max_nrs": "7"}
    export = db.audit_events.find_one({"action": "E", "patient_ids": world["patient_a"].id})
    assert export["actor_id"] == world["clinician_team"].id


def test_panel_csv_lists_every_matching_patient_and_defuses_formulas(client, world, seed, db):
    sneaky = seed.patient("=HYPERLINK(\"http://x\")")
    db.team_enrolments.insert_one({"_id": "e1", "team_id": world.team_id, "patient_id": sneaky})
    response = client.get("/api/v1/clinician/panel/export?sort=name", headers=world["clinician_team"].headers)
    assert response.status_code == 200
    rows = _rows(response.get_data(as_text=True))
    assert list(rows[0]) == PANEL_CSV_HEADER
    assert [r["name"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "Patient A"]


def test_fhir_bundle_validates_and_holds_the_patients_record(client, world, scripted_a):
    response = client.get(f"/api/v1/patients/{world['patient_a'].id}/exports/fhir?days=30",
                          headers=world["clinician_team"].headers)
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    body = response.json
    Bundle.model_validate(body)
    by_type: dict[str, list[dict]] = {}
    for entry in body["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        by_type.setdefault(resource["resourceType"], []).append(resource)
    assert {k: len(v) for k, v in by_type.items()} == {
        "Patient": 1, "Observation": 8, "Device": 1, "DeviceUseStatement": 3, "CarePlan": 2, "Communication": 2}
    assert all(o["code"]["coding"][0]["code"] == "72514-3" and o["code"]["coding"][0]["system"] == "http://loinc.org"
               for o in by_type["Observation"])
    assert sorted(o["valueInteger"] for o in by_type["Observation"]) == [4, 4, 4, 4, 5, 6, 7, 8]
    assert sorted(d["timingPeriod"]["start"] for d in by_type["DeviceUseStatement"]) == sorted(
        s["started_at"].isoformat() for s in scripted_a["sessions"])
    assert sorted(c["status"] for c in by_type["CarePlan"]) == ["active", "revoked"]
    assert sorted(c["status"] for c in by_type["Communication"]) == ["completed", "not-done"]
    patient_ref = f"Patient/{world['patient_a'].id}"
    assert all(r["subject"]["reference"] == patient_ref for t in ("Observation", "CarePlan", "Communication")
               for r in by_type[t])
