"""The exports add up to the adherence figures: a FHIR consumer summing what each TENS session counts gets the
day's minutes the clinician sees, and the day CSV's adherence state and covered follow its own minutes, late data
included (docs/exports.md)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta

from fhir.resources.R4B import get_fhir_model_class

from companion.api.ingestion import SessionRecordSchema
from tests.support.records import session_record

BOM = "\ufeff"
SERIAL = "CTU-F0001"
UCUM = "http://unitsofmeasure.org"
# The Companion extension carrying the minutes of a session that count (docs/exports.md): its canonical URL is a
# promise to every server that imported an export, so the test spells it out.
COUNTED_MINUTES = "https://companion.example/fhir/StructureDefinition/counted-minutes"


def _rows(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True).removeprefix(BOM))))


def _wearing(world, services, db) -> tuple[str, object]:
    """Patient A on UTC (local days are UTC days), 40 min of TENS a day since a month ago, wearing SERIAL."""
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    month_ago = datetime.now(UTC) - timedelta(days=30)
    db.therapy_plans.insert_one({
        "_id": "plan-figures", "patient_id": a, "version": 1, "created_at": month_ago, "created_by": "clinician",
        "active_from": month_ago, "active_to": None, "medications": [], "mindfulness": None,
        "tens": {"sessions_per_day": None, "daily_minutes_target": 40, "minutes_per_session": 20, "programmes": [1],
                 "intensity_min_ma": 10, "intensity_max_ma": 30, "start_date": None, "end_date": None,
                 "counts_towards_adherence": True}})
    services.gateways.bind_unit(a, SERIAL, "companion-tens", bound_at=month_ago)
    return a, services.stores.users.by_id(a)


def _upload(services, patient_id: str, seq: int, started_at: datetime, minutes: int) -> dict:
    record = SessionRecordSchema().load(session_record(SERIAL, seq, started_at=started_at, duration_s=minutes * 60))
    return services.ingestion.receive(None, patient_id, [record], {SERIAL})


def _export(client, world, kind: str, days: int = 7):
    return client.get(f"/api/v1/patients/{world['patient_a'].id}/exports/{kind}?days={days}",
                      headers=world["clinician_team"].headers)


def test_fhir_sessions_say_how_many_of_their_minutes_count_and_those_add_up_to_the_days_minutes(
        client, world, services, db):
    """Yesterday: a 30-minute session, the unit's next one recorded 10 minutes into it (30 minutes, 10 of them
    after the first ended: it counts 10), and a 40-minute one the care team excluded. Each DeviceUseStatement and
    Observation keeps the period the unit recorded; the Companion extension says how many minutes count, and their
    sum is the 40 minutes of the day CSV and of the day's adherence, where the periods add up to 100."""
    a, patient = _wearing(world, services, db)
    day = datetime.now(UTC).date() - timedelta(days=1)
    eight = datetime.combine(day, time(8), UTC)
    _upload(services, a, 1, eight, 30)
    _upload(services, a, 2, eight + timedelta(minutes=10), 30)
    _upload(services, a, 3, eight + timedelta(hours=6), 40)
    services.sessions.resolve(a, f"{SERIAL}:3", "exclude", world["clinician_team"].id, note="not a real session")
    snapshot = services.adherence.compute_day(patient, day)

    [by_day] = [r for r in _rows(_export(client, world, "csv")) if r["date"] == day.isoformat()]
    answer = _export(client, world, "fhir")
    assert answer.status_code == 200
    for entry in answer.json["entry"]:  # the extension and the notes are FHIR as a model of R4(B) reads it
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    statements = {e["resource"]["timingPeriod"]["start"]: e["resource"] for e in answer.json["entry"]
                  if e["resource"]["resourceType"] == "DeviceUseStatement"}
    observations = {e["fullUrl"]: e["resource"] for e in answer.json["entry"]
                    if e["resource"]["resourceType"] == "Observation" and "effectivePeriod" in e["resource"]}

    def counted(resource: dict) -> float:
        [extension] = [x for x in resource.get("extension", []) if x["url"] == COUNTED_MINUTES]
        assert {k: v for k, v in extension["valueQuantity"].items() if k != "value"} == {
            "unit": "min", "system": UCUM, "code": "min"}
        return extension["valueQuantity"]["value"]

    def recorded(resource: dict) -> float:
        period = resource["timingPeriod"]
        return (datetime.fromisoformat(period["end"]) - datetime.fromisoformat(period["start"])).total_seconds() / 60

    starts = [(eight + timedelta(minutes=m)).isoformat() for m in (0, 10, 360)]
    assert [(statements[s]["status"], recorded(statements[s]), counted(statements[s])) for s in starts] == [
        ("completed", 30, 30), ("completed", 30, 10), ("entered-in-error", 40, 0)]
    for s in starts:  # the Observation of what the unit delivered says it too
        assert counted(observations[statements[s]["derivedFrom"][0]["reference"]]) == counted(statements[s])
    assert "note" not in statements[starts[0]]
    partly = " ".join(n["text"] for n in statements[starts[1]]["note"])
    assert "10 of its 30 minutes count" in partly and f"{SERIAL}:1" in partly, partly
    assert "Excluded by the care team" in " ".join(n["text"] for n in statements[starts[2]]["note"])

    assert sum(counted(s) for s in statements.values()) == float(by_day["tens_minutes"]) == \
        snapshot["tens_minutes"] == 40
    assert sum(recorded(s) for s in statements.values()) == 100  # what summing the periods would have said


def test_the_day_csv_says_a_day_a_late_session_covered_is_covered_before_the_job_recomputes_it(
        client, world, services, db):
    """Yesterday's 20 minutes were computed as not covered (40 asked); a second session of 20 minutes arrives
    late, and the hourly adherence job has not yet computed the day again. The day's row counts 40 of 40 minutes:
    it says covered, as the day's adherence will once computed again, where it said 40 of 40 and not covered."""
    a, patient = _wearing(world, services, db)
    day = datetime.now(UTC).date() - timedelta(days=1)
    _upload(services, a, 1, datetime.combine(day, time(8), UTC), 20)
    assert services.adherence.compute_day(patient, day)["covered"] is False
    _upload(services, a, 2, datetime.combine(day, time(18), UTC), 20)  # late: the stored day is not computed again
    assert db.adherence_days.find_one({"patient_id": a, "date": day.isoformat()})["covered"] is False

    [row] = [r for r in _rows(_export(client, world, "csv")) if r["date"] == day.isoformat()]
    events = [r for r in _rows(_export(client, world, "events"))
              if r["event"] == "tens_session" and r["local_date"] == day.isoformat()]
    assert {k: row[k] for k in ("adherence_state", "covered", "tens_minutes", "tens_target_minutes",
                                "tens_sessions")} == {"adherence_state": "progress", "covered": "true",
                                                      "tens_minutes": "40", "tens_target_minutes": "40",
                                                      "tens_sessions": "2"}
    assert sum(float(r["counted_min"]) for r in events) == float(row["tens_minutes"])
    recomputed = services.adherence.compute_day(patient, day)
    assert (recomputed["state"], recomputed["covered"]) == (row["adherence_state"], True)
