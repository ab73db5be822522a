"""HAPI FHIR's own R4 validator (the one HAPI's server runs) on the FHIR exports: no error, and no warning
but those a validator without a terminology server always gives. See tests/support/hapi_validator.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.clinician.conftest import BPI_ANSWERS, at_day
from tests.support.hapi_validator import validate

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The warnings a valid export gets, each understood: without a terminology server the validator cannot look
# up LOINC or SNOMED CT codes (UCUM it checks itself); and it advises against UCUM annotations such as
# {score}, which is the unit LOINC gives for its scores (BPI severity and interference are such scores).
EXPECTED_WARNINGS = (
    re.compile(r"CodeSystem is unknown and can't be validated: http://(loinc\.org|snomed\.info/sct) "),
    re.compile(r"UCUM Codes that contain human readable annotations like \{score\} can be misleading"),
)


def test_hapi_fhirs_r4_validator_accepts_the_exports(client, world, export_a, seed, db, tmp_path):
    a = world["patient_a"].id
    # What the export must bend to fit FHIR: a held session of a negative length, text with a control character,
    # a deleted entry with a BPI (entered-in-error), and a TENS course that has ended.
    held = seed.session(a, at_day(4, 9), minutes=10)
    db.session_records.update_one({"_id": held["_id"]}, {"$set": {"duration_s": -600, "held": True, "counts": False}})
    seed.pain(a, at_day(4, 12), 3, location="left\x0cknee", note="line\x0bbreak")
    seed.pain(a, at_day(4, 13), 9, bpi=BPI_ANSWERS, deleted=True)
    db.therapy_plans.update_many({"patient_id": a, "version": 1}, {"$set": {"tens.end_date": str(at_day(20).date())}})
    bundles = {"with-data": client.get(f"/api/v1/patients/{a}/exports/fhir?days=30", headers=world["clinician_team"].headers),
               "empty-period": client.get(f"/api/v1/patients/{world['patient_b'].id}/exports/fhir?days=1",
                                          headers=world["clinician_other"].headers)}
    exports = {}
    for name, response in bundles.items():
        assert response.status_code == 200, (name, response.json)
        exports[name] = response.json
    # A control, to show the validator is awake: a unit UCUM does not know and an entry without its request.
    broken = json.loads(json.dumps(exports["with-data"]).replace('"code": "us"', '"code": "microsecond"', 1))
    del broken["entry"][0]["request"]
    exports["broken"] = broken
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for name, bundle in exports.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(bundle, indent=1))
        (ARTIFACTS / f"fhir-{name}.json").write_text(json.dumps(bundle, indent=1))
    findings = {}
    for path, issues in zip(paths, validate(paths), strict=True):
        (ARTIFACTS / f"hapi-{path.stem}.json").write_text(json.dumps(issues, indent=1))
        if path.stem == "broken":
            errors = " ".join(i.get("diagnostics", "") for i in issues if i["severity"] == "error")
            assert "unit 'microsecond' is unknown" in errors and "bdl-3" in errors, errors  # bdl-3: request required
            continue
        findings[path.stem] = [f"{i['severity']}: {i.get('diagnostics')} at {i.get('location')}" for i in issues
                               if i["severity"] in ("fatal", "error")
                               or (i["severity"] == "warning"
                                   and not any(p.search(i.get("diagnostics", "")) for p in EXPECTED_WARNINGS))]
    assert findings == {"with-data": [], "empty-period": []}
