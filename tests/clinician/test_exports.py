"""Exports: a patient's days and events and the panel as CSV (UTF-8 with a BOM, true/false, whole numbers
as integers); a patient as a FHIR R4 transaction Bundle that fhir.resources accepts and a FHIR server can
import as resources (tests/clinician/test_fhir_validation.py runs HAPI FHIR's own validator on it)."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from companion.services.exports import EVENTS_CSV_HEADER, PANEL_CSV_HEADER, PATIENT_CSV_HEADER
from companion.services.fhir import IDENTIFIER_SYSTEM, UCUM, fhir_string, record_urn, transaction_bundle
from companion.services.review import PatientReview
from companion.store.batches import newest_first, oldest_first
from tests.clinician.conftest import BPI_ANSWERS, at_day
from tests.clinician.test_pages import sign_in
from tests.support.problems import assert_problem

BOM = "\ufeff"


def _rows(text: str) -> list[dict]:
    assert text.startswith(BOM), "a CSV export starts with a UTF-8 byte order mark"
    return list(csv.DictReader(io.StringIO(text[len(BOM):])))


def _export(client, world, kind: str, days: int = 30):
    return client.get(f"/api/v1/patients/{world['patient_a'].id}/exports/{kind}?days={days}",
                      headers=world["clinician_team"].headers)


def test_patient_csv_has_one_row_per_day_with_the_scripted_figures(client, world, scripted_a, db):
    response = _export(client, world, "csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    raw = response.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM, as UTF-8 bytes
    text = raw.decode("utf-8-sig")
    assert text.splitlines()[0].split(",") == PATIENT_CSV_HEADER
    rows = {r["date"]: r for r in _rows(response.get_data(as_text=True))}
    assert len(rows) == 30
    two_days_ago = rows[str(datetime.now(UTC).date() - timedelta(days=2))]
    # A day's adherence is its own sessions' against its plan, whatever its stored day says (seeded here: two days
    # ago not covered, yesterday covered, neither as its sessions have it; docs/exports.md).
    assert two_days_ago == {"date": two_days_ago["date"], "adherence_state": "progress", "covered": "true",
                            "tens_minutes": "60", "tens_target_minutes": "40", "tens_sessions": "2",
                            "pain_entries": "4", "pain_mean_nrs": "5.5", "pain_max_nrs": "7"}
    yesterday = rows[str(datetime.now(UTC).date() - timedelta(days=1))]
    assert (yesterday["adherence_state"], yesterday["covered"], yesterday["tens_minutes"]) == ("no_events", "false", "0")
    export = db.audit_events.find_one({"action": "E", "patient_ids": world["patient_a"].id})
    assert export["actor_id"] == world["clinician_team"].id


def test_an_export_covers_the_period_asked_for_and_refuses_one_it_cannot(client, world, scripted_a):
    url, headers = f"/api/v1/patients/{world['patient_a'].id}/exports", world["clinician_team"].headers
    today = datetime.now(UTC).date()  # the patient lives on UTC here
    day = today - timedelta(days=2)  # two sessions (60 min) and four pain ratings

    def rows(path):
        answer = client.get(f"{url}/{path}", headers=headers)
        assert answer.status_code == 200, answer.json
        return _rows(answer.get_data(as_text=True))

    one = rows(f"csv?from={day}&to={day}")
    assert [(r["date"], r["tens_minutes"], r["pain_entries"]) for r in one] == [(str(day), "60", "4")]
    assert [r["date"] for r in rows(f"csv?days=3&to={today - timedelta(days=1)}")] == [
        str(today - timedelta(days=n)) for n in (3, 2, 1)]
    events = rows(f"events?from={day}&to={day}")
    assert {r["local_date"] for r in events} == {str(day)}
    assert [r["event"] for r in events].count("tens_session") == 2
    assert [r["event"] for r in events].count("pain_entry") == 4
    bundle = client.get(f"{url}/fhir?from={day}&to={day}", headers=headers).json
    assert [e["resource"]["resourceType"] for e in bundle["entry"]].count("DeviceUseStatement") == 2
    assert bundle["timestamp"].startswith(str(day))  # seen from the end of the period
    # A period that cannot be: named in the answer, nothing exported.
    for query, field in ((f"to={today + timedelta(days=2)}", "to"), (f"days=3&from={day}", "days"),
                         (f"from={today}&to={day}", "from"), (f"from={today - timedelta(days=400)}", "from")):
        answer = assert_problem(client.get(f"{url}/csv?{query}", headers=headers), 422)
        assert field in str(answer["errors"]), (query, answer)


def test_an_export_period_near_year_one_is_refused_not_a_500(client, world):
    url, headers = f"/api/v1/patients/{world['patient_a'].id}/exports/csv", world["clinician_team"].headers
    for query in ("to=0001-01-10", "from=0001-01-01&to=0001-01-02", "days=1&to=0001-01-01"):
        assert_problem(client.get(f"{url}?{query}", headers=headers), 422)


def test_a_years_patient_csv_figures_every_day_not_only_the_last_ninety(client, world, seed, services):
    a = world["patient_a"].id
    today = services.adherence.local_today(a)  # Europe/London's today, not UTC's
    first = today - timedelta(days=365)
    seed.plan(a, 1, datetime.combine(first - timedelta(days=30), time(), UTC), daily_minutes=10)
    for n in range(0, 365, 3):  # 10 minutes at noon every third day of the year before today
        seed.session(a, datetime.combine(first + timedelta(days=n), time(12), UTC), minutes=10)
    rows = _rows(_export(client, world, "csv", days=366).get_data(as_text=True))
    assert len(rows) == 366 and rows[-1]["date"] == str(today)
    assert [(r["adherence_state"], r["covered"]) for r in rows[:-1]] == [
        ("progress", "true") if n % 3 == 0 else ("no_events", "false") for n in range(365)]


def test_a_past_periods_fhir_export_keeps_its_notifications_however_many_came_after(client, world, scripted_a, db):
    """The notifications were read newest first from the period's start up to now, at most 5,000: two years of
    seven a day later, a past month's own fell past the limit and its export carried none."""
    a = scripted_a["patient_id"]
    last = datetime.now(UTC).date() - timedelta(days=760)

    def note(created_at: datetime, n: int) -> dict:
        return {"_id": f"later-note-{n}", "source_key": f"reminder:later-{n}", "recipient_user_id": a,
                "patient_id": a, "kind": "reminder", "collapse_key": "c", "expires_at": created_at,
                "not_before": created_at, "state": "sent", "attempts": 1, "round": 1, "lease_until": None,
                "owner": None, "phones": [], "created_at": created_at, "sent_at": created_at, "delivered_at": None,
                "opened_at": None, "error_codes": []}

    in_period = datetime.combine(last - timedelta(days=3), datetime.min.time(), UTC) + timedelta(hours=8)
    after = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=6)
    db.push_outbox.insert_many([note(in_period, 0)] + [note(after + timedelta(hours=24 * (n // 7) + 2 * (n % 7)), n + 1)
                                                       for n in range(7 * 740)])
    answer = client.get(f"/api/v1/patients/{a}/exports/fhir?to={last.isoformat()}&days=30",
                        headers=world["clinician_team"].headers)
    assert answer.status_code == 200
    assert [e["resource"]["resourceType"] for e in answer.json["entry"]].count("Communication") == 1


def test_a_years_events_csv_holds_every_dose_not_only_the_newest_thousand(client, world, db):
    pid, now = world["patient_a"].id, datetime.now(UTC)
    doses = [{"_id": f"dose-{n}", "patient_id": pid, "reminder_id": "r-export", "kind": "medication", "status": "done",
              "due_at": now - timedelta(days=300) + timedelta(hours=6 * n), "deleted": False} for n in range(1200)]
    db.reminder_occurrences.insert_many(doses)
    rows = _rows(_export(client, world, "events", days=366).get_data(as_text=True))
    assert sorted(r["id"] for r in rows if r["event"] == "medication_dose") == sorted(d["_id"] for d in doses)


def _on_utc(db, patient_id):
    db.users.update_one({"_id": patient_id}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})


def test_a_years_events_csv_keeps_its_first_doses_beside_other_reminders(client, world, db):
    """A patient with 14 reminders a day (an hourly check 08:00-20:00 and a morning tablet): a year of them is more
    than the 5,000 occurrences a review reads, newest first and up to tomorrow, and the first days' doses fell
    out of the export."""
    pid = world["patient_a"].id
    _on_utc(db, pid)
    today = datetime.now(UTC).date()
    docs = []
    for n in range(365, -2, -1):  # tomorrow's too
        day = today - timedelta(days=n)
        docs.append({"_id": f"med-{day}", "patient_id": pid, "reminder_id": "r-med", "kind": "medication",
                     "status": "done", "local_date": day.isoformat(), "local_time": "07:00", "zone": "UTC",
                     "due_at": datetime.combine(day, time(7), UTC), "deleted": False})
        docs += [{"_id": f"chk-{day}-{hour}", "patient_id": pid, "reminder_id": "r-chk", "kind": "tens",
                  "status": "done", "local_date": day.isoformat(), "local_time": f"{hour:02d}:00", "zone": "UTC",
                  "due_at": datetime.combine(day, time(hour), UTC), "deleted": False} for hour in range(8, 21)]
    db.reminder_occurrences.insert_many(docs)
    rows = _rows(_export(client, world, "events", days=366).get_data(as_text=True))
    doses = [r["local_date"] for r in rows if r["event"] == "medication_dose"]
    assert doses == sorted(d["local_date"] for d in docs if d["kind"] == "medication" and d["due_at"] <= datetime.now(UTC))


def test_a_years_fhir_export_holds_every_push_of_the_year(client, world, db):
    """Fourteen pushes a day: a year of them is more than the 5,000 notifications the review reads, newest first."""
    pid = world["patient_a"].id
    _on_utc(db, pid)
    first = datetime.now(UTC).date() - timedelta(days=365)
    db.push_outbox.insert_many([
        {"_id": f"push-{n}", "source_key": f"reminder:{n}", "recipient_user_id": pid, "patient_id": pid,
         "kind": "reminder", "state": "sent", "round": 1, "attempts": 1,
         "created_at": datetime.combine(first + timedelta(days=n // 14), time(7 + n % 14), UTC)}
        for n in range(14 * 365)])
    bundle = _export(client, world, "fhir", days=366).json
    sent = sorted(e["resource"]["identifier"][0]["value"] for e in bundle["entry"]
                  if e["resource"]["resourceType"] == "Communication")
    assert len(sent) == 14 * 365 and sent == sorted(record_urn("Communication", f"push-{n}") for n in range(14 * 365))


def test_a_days_counted_minutes_add_up_to_the_day_csvs_tens_minutes(client, world, seed, db):
    """Each session's minutes were rounded in the events CSV and the day's total in the day CSV: two sessions of
    10 min 2 s were listed as 10 and 10 on a day of 20.1."""
    pid = world["patient_a"].id
    _on_utc(db, pid)
    day = datetime.now(UTC).date() - timedelta(days=1)
    for hour in (8, 14):
        session = seed.session(pid, datetime.combine(day, time(hour), UTC), minutes=10)
        db.session_records.update_one({"_id": session["_id"]}, {"$set": {"duration_s": 602}})
    days = _rows(_export(client, world, "csv", days=7).get_data(as_text=True))
    events = _rows(_export(client, world, "events", days=7).get_data(as_text=True))
    [tens_minutes] = [r["tens_minutes"] for r in days if r["date"] == str(day)]
    counted = [r["counted_min"] for r in events if r["event"] == "tens_session" and r["local_date"] == str(day)]
    assert (counted, tens_minutes) == (["10", "10"], "20")


def test_the_events_csv_is_sent_as_it_is_read(client, world, scripted_a):
    answer = _export(client, world, "events")
    assert answer.status_code == 200 and answer.is_streamed and "Content-Length" not in answer.headers


def test_an_export_reads_a_range_a_page_at_a_time_without_losing_or_repeating_an_instant(db):
    """Pages cut at an instant several records share: each is read once, in order of time, then of id."""
    at = [datetime(2026, 3, 1, 8, tzinfo=UTC) + timedelta(minutes=n) for n in range(4)]
    shares = {at[0]: 2, at[1]: 4, at[2]: 5, at[3]: 1}
    docs = [{"_id": f"{moment:%H%M}-{n}", "patient_id": "p-pages", "due_at": moment}
            for moment, count in shares.items() for n in range(count)]
    db.reminder_occurrences.insert_many(docs + [{"_id": "another", "patient_id": "p-other", "due_at": at[1]}])
    read = list(oldest_first(db.reminder_occurrences, {"patient_id": "p-pages"}, "due_at", at[0], at[3], page=3))
    assert [d["_id"] for d in read] == [d["_id"] for d in sorted(docs, key=lambda d: (d["due_at"], d["_id"]))]
    assert [d["_id"] for d in oldest_first(db.reminder_occurrences, {"patient_id": "p-pages"}, "due_at", at[1], at[2],
                                           page=3)] == [d["_id"] for d in docs if at[1] <= d["due_at"] <= at[2]]


def test_a_newest_first_read_pages_without_losing_or_repeating_an_instant_and_stops_at_its_limit(db):
    """The download's keyset read (its alerts): pages cut at an instant several records share, newest first."""
    at = [datetime(2026, 3, 1, 8, tzinfo=UTC) + timedelta(minutes=n) for n in range(4)]
    shares = {at[0]: 2, at[1]: 4, at[2]: 5, at[3]: 1}
    docs = [{"_id": f"{moment:%H%M}-{n}", "patient_id": "p-pages", "raised_at": moment}
            for moment, count in shares.items() for n in range(count)]
    db.alerts.insert_many(docs + [{"_id": "another", "patient_id": "p-other", "raised_at": at[1]}])
    ordered = [d["_id"] for d in sorted(docs, key=lambda d: (d["raised_at"], d["_id"]), reverse=True)]
    assert [d["_id"] for d in newest_first(db.alerts, {"patient_id": "p-pages"}, "raised_at", 100, page=3)] == ordered
    assert [d["_id"] for d in newest_first(db.alerts, {"patient_id": "p-pages"}, "raised_at", 7, page=3)] == \
        ordered[:7]


def test_panel_csv_lists_every_matching_patient_and_defuses_formulas(client, world, seed, db):
    sneaky = seed.patient("=HYPERLINK(\"http://x\")")
    seed.enrol(world.team_id, sneaky)
    response = client.get("/api/v1/clinician/panel/export?sort=name", headers=world["clinician_team"].headers)
    assert response.status_code == 200
    rows = _rows(response.get_data(as_text=True))
    assert list(rows[0]) == PANEL_CSV_HEADER
    assert [r["name"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "Patient A"]


def test_events_csv_has_one_row_per_session_entry_dose_and_practice_with_local_and_utc_times(
        client, world, export_a, db):
    zone = "America/New_York"  # where the patient has always lived (each event's zone is the one of its moment)
    db.users.update_one({"_id": world["patient_a"].id}, {"$set": {"time_zone": zone, "time_zone_history": []}})
    response = _export(client, world, "events")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].endswith('-events.csv"')
    text = response.get_data(as_text=True)
    assert text[len(BOM):].splitlines()[0].split(",") == EVENTS_CSV_HEADER
    rows = _rows(text)
    kinds = [r["event"] for r in rows]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "tens_session": 3, "pain_entry": 9, "medication_dose": 2, "mindfulness_practice": 1}
    assert [r["utc_time"] for r in rows] == sorted(r["utc_time"] for r in rows)  # oldest first

    for row in rows:  # every local time is the UTC time in the patient's zone, offset included
        utc = datetime.strptime(row["utc_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        local = utc.astimezone(ZoneInfo(zone))
        offset = local.strftime("%z")
        assert (row["local_date"], row["local_time"], row["utc_offset"], row["time_zone"]) == (
            local.date().isoformat(), local.strftime("%H:%M"), f"UTC{offset[:3]}:{offset[3:]}", zone)

    session = next(r for r in rows if r["id"] == export_a["sessions"][2]["_id"])  # 45 min, 3 days ago at 09:00 UTC
    assert session["utc_time"] == at_day(3, 9).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert {k: session[k] for k in ("duration_min", "device_serial", "programme", "frequency_hz", "pulse_width_us",
                                    "intensity_mean_ma", "intensity_peak_ma", "end_reason", "clock_status", "nrs")} == {
        "duration_min": "45", "device_serial": "CTU-S0001", "programme": "1", "frequency_hz": "100",
        "pulse_width_us": "200", "intensity_mean_ma": "18.5", "intensity_peak_ma": "24", "end_reason": "completed",
        "clock_status": "ok", "nrs": ""}

    bpi = next(r for r in rows if r["id"] == export_a["bpi_entry"]["_id"])
    assert {k: bpi[k] for k in ("nrs", "location", "activity", "sleep_quality", "mood", "note", "bpi_worst", "bpi_least",
                                "bpi_average", "bpi_now", "bpi_severity", "bpi_interference", "duration_min")} == {
        "nrs": "6", "location": "left knee", "activity": "walking", "sleep_quality": "3", "mood": "3",
        "note": "'=worse after gardening", "bpi_worst": "8", "bpi_least": "3", "bpi_average": "5", "bpi_now": "6",
        "bpi_severity": "5.5", "bpi_interference": "5.5", "duration_min": ""}
    before = next(r for r in rows if r["phase"] == "before")
    assert before["session_id"] in {s["_id"] for s in export_a["sessions"]}

    doses = [(r["title"], r["status"]) for r in rows if r["event"] == "medication_dose"]
    assert doses == [("Paracetamol 1 g", "missed"), ("Paracetamol 1 g", "done")]
    practice = next(r for r in rows if r["event"] == "mindfulness_practice")
    assert (practice["title"], practice["duration_min"], practice["status"]) == ("body-scan", "12", "completed")
    export = db.audit_events.find_one({"action": "E", "patient_ids": world["patient_a"].id,
                                       "route": "/api/v1/patients/<patient_id>/exports/events"})
    assert export["actor_id"] == world["clinician_team"].id and export["outcome"] == "success"


def test_the_dashboard_offers_the_events_csv_and_audits_it_as_an_export(client, world, export_a, db):
    sign_in(client, world["clinician_team"].email)
    a = world["patient_a"].id
    html = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    assert f'href="/clinician/patients/{a}/events.csv"' in html
    response = client.get(f"/clinician/patients/{a}/events.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert len([r for r in _rows(response.get_data(as_text=True)) if r["event"] == "tens_session"]) == 3
    event = db.audit_events.find_one({"route": "/clinician/patients/<patient_id>/events.csv"})
    assert (event["actor_id"], event["action"], event["patient_ids"]) == (world["clinician_team"].id, "E", [a])
    sign_in(client, world["clinician_other"].email)
    assert client.get(f"/clinician/patients/{a}/events.csv").status_code == 404


def test_an_emergency_grant_reads_the_record_but_does_not_download_it(client, world, db):
    """Break-the-glass access opens what an emergency needs to read; the bulk downloads stay with the patient and
    their care team (403 says why; the refusal is audited as an attempted export)."""
    patient, other = world["patient_a"], world["clinician_other"]
    glass = {"patient_id": patient.id, "minutes": 5, "reason": "seen in the emergency department"}
    assert client.post("/api/v1/emergency-access", headers=other.headers, json=glass).status_code == 201
    assert client.get(f"/api/v1/patients/{patient.id}/review/adherence", headers=other.headers).status_code == 200
    for kind in ("csv", "events", "fhir"):
        refused = client.get(f"/api/v1/patients/{patient.id}/exports/{kind}?days=366", headers=other.headers)
        assert refused.status_code == 403, kind
    assert db.audit_events.count_documents({"actor_id": other.id, "action": "E", "outcome": "denied"}) == 3
    sign_in(client, other.email)
    for page in ("export.csv", "events.csv", "export.fhir.json"):
        assert client.get(f"/clinician/patients/{patient.id}/{page}").status_code == 403, page
    assert _export(client, world, "events").status_code == 200  # the care team
    assert client.get(f"/api/v1/patients/{patient.id}/exports/csv?days=30",
                      headers=patient.headers).status_code == 200  # the patient


def _references(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for value in node for r in _references(value)]
    return []


def _by_type(bundle: dict) -> dict[str, list[dict]]:
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return by_type


def test_the_fhir_export_is_a_transaction_a_server_imports_as_resources(client, world, export_a):
    response = _export(client, world, "fhir")
    assert response.status_code == 200 and response.mimetype == "application/fhir+json"
    body = response.json
    Bundle.model_validate(body)
    assert body["type"] == "transaction"
    urls = [e["fullUrl"] for e in body["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    for entry in body["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert "id" not in resource  # the server assigns ids; the identifier finds the resource again
        identifiers = resource["identifier"]
        identifier = identifiers if isinstance(identifiers, dict) else identifiers[0]
        assert identifier == {"system": IDENTIFIER_SYSTEM, "value": entry["fullUrl"]}
        search = f"identifier={IDENTIFIER_SYSTEM}|{entry['fullUrl']}"
        if resource["resourceType"] == "Patient":  # created once, never overwritten by an export
            assert entry["request"] == {"method": "POST", "url": "Patient", "ifNoneExist": search}
        else:  # created, or updated in place when imported again
            assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}?{search}"}
    assert set(_references(body)) <= set(urls), "every reference points at an entry of the bundle"

    again = _export(client, world, "fhir").json
    assert [e["fullUrl"] for e in again["entry"]] == urls, "the same records keep the same identifiers"

    by_type = _by_type(body)
    assert {k: len(v) for k, v in by_type.items()} == {
        # Observations: 3 sessions, 9 ratings and the 2 BPI scores; and the rating deleted 10 days ago, retracted.
        "Patient": 1, "Device": 2, "CarePlan": 2, "Observation": 3 + 9 + 2 + 1, "DeviceUseStatement": 3,
        "QuestionnaireResponse": 1, "Communication": 2}
    patient_ref = {"reference": urls[0]}
    assert by_type["Patient"][0]["name"] == [{"text": "Patient A"}]
    assert all(r["subject"] == patient_ref for t in ("Observation", "CarePlan", "Communication", "DeviceUseStatement",
                                                      "QuestionnaireResponse") for r in by_type[t])
    assert sorted(c["status"] for c in by_type["CarePlan"]) == ["active", "revoked"]
    assert sorted(c["status"] for c in by_type["Communication"]) == ["completed", "not-done"]


def test_tens_sessions_carry_their_parameters_in_ucum_units_and_their_device(client, world, export_a):
    body = _export(client, world, "fhir").json
    by_type, by_url = _by_type(body), {e["fullUrl"]: e["resource"] for e in body["entry"]}
    statements = by_type["DeviceUseStatement"]
    assert sorted(d["timingPeriod"]["start"] for d in statements) == sorted(
        s["started_at"].isoformat() for s in export_a["sessions"])
    longest = next(d for d in statements if d["timingPeriod"]["start"] == export_a["sessions"][2]["started_at"].isoformat())
    assert by_url[longest["device"]["reference"]]["serialNumber"] == "CTU-S0001"
    record = by_url[longest["derivedFrom"][0]["reference"]]
    assert record["device"] == longest["device"] and record["effectivePeriod"] == longest["timingPeriod"]
    quantities = {c["code"]["text"]: c["valueQuantity"] for c in record["component"] if "valueQuantity" in c}
    assert quantities == {
        "stimulation frequency": {"value": 100, "unit": "Hz", "system": UCUM, "code": "Hz"},
        "pulse width": {"value": 200, "unit": "µs", "system": UCUM, "code": "us"},
        "intensity, mean": {"value": 18.5, "unit": "mA", "system": UCUM, "code": "mA"},
        "intensity, peak": {"value": 24, "unit": "mA", "system": UCUM, "code": "mA"},
        "duration": {"value": 45, "unit": "min", "system": UCUM, "code": "min"}}
    unit = next(d for d in by_type["Device"] if d["serialNumber"] == "CTU-S0001")
    assert unit["property"][0]["valueQuantity"] == [{"value": 76, "unit": "%", "system": UCUM, "code": "%"}]
    assert unit["version"] == [{"type": {"text": "firmware"}, "value": "1.4.2"}]
    plan = next(c for c in by_type["CarePlan"] if c["status"] == "active")
    tens = next(a["detail"] for a in plan["activity"] if a["detail"].get("kind") == "DeviceRequest")
    assert tens["dailyAmount"] == {"value": 40, "unit": "min", "system": UCUM, "code": "min"}
    assert tens["scheduledTiming"] == {"repeat": {"boundsPeriod": {"start": "2024-01-01"}, "duration": 30,
                                                  "durationUnit": "min"}}
    assert plan["replaces"][0]["reference"] in by_url


def test_diary_entries_carry_their_context_and_a_bpi_its_answers_and_scores(client, world, export_a):
    body = _export(client, world, "fhir").json
    by_type, by_url = _by_type(body), {e["fullUrl"]: e["resource"] for e in body["entry"]}
    ratings = [o for o in by_type["Observation"] if o["code"].get("coding", [{}])[0].get("code") == "72514-3"]
    retracted = [o for o in ratings if o["status"] == "entered-in-error"]  # the one deleted 10 days ago
    assert [(o["effectiveDateTime"], "valueInteger" in o) for o in retracted] == [(at_day(10).isoformat(), False)]
    ratings = [o for o in ratings if o["status"] == "final"]
    assert sorted(o["valueInteger"] for o in ratings) == [4, 4, 4, 4, 5, 6, 6, 7, 8]
    rated = next(o for o in ratings if o["effectiveDateTime"] == export_a["bpi_entry"]["recorded_at"].isoformat())
    assert rated["bodySite"] == {"text": "left knee"}
    assert {c["code"]["text"]: c.get("valueString", c.get("valueInteger")) for c in rated["component"]} == {
        "activity at the time": "walking", "sleep quality (0-10, as the patient rated it)": 3,
        "mood (0-10, as the patient rated it)": 3}
    assert rated["note"] == [{"authorReference": rated["subject"], "text": "=worse after gardening"}]
    assert any("before the TENS session" in n["text"] for o in ratings for n in o.get("note", []))

    form = by_type["QuestionnaireResponse"][0]
    assert form["status"] == "completed" and form["authored"] == rated["effectiveDateTime"]
    answers = {item["linkId"]: item["answer"][0]["valueInteger"] for group in form["item"] for item in group["item"]}
    assert answers == {"worst": 8, "least": 3, "average": 5, "now": 6, "general_activity": 6, "mood": 5, "sleep": 7,
                       "enjoyment_of_life": 4}
    scores = {o["code"]["text"]: o for o in by_type["Observation"] if o.get("derivedFrom")
              and by_url[o["derivedFrom"][0]["reference"]] is form}
    interference = scores["BPI pain interference score"]
    assert interference["code"]["coding"] == [{"system": "http://loinc.org", "code": "77565-0",
                                               "display": "Pain interference score [BPI Short Form]"}]
    assert interference["valueQuantity"] == {"value": 5.5, "unit": "score", "system": UCUM, "code": "{score}"}
    severity = scores["BPI pain severity score (mean of worst, least, average and now)"]
    assert severity["valueQuantity"]["value"] == 5.5 and "coding" not in severity["code"]


def test_an_export_without_any_data_or_a_name_is_still_a_valid_transaction(client, world, db):
    db.users.update_one({"_id": world["patient_a"].id}, {"$set": {"display_name": ""}})
    body = _export(client, world, "fhir").json
    Bundle.model_validate(body)
    by_type = _by_type(body)
    assert {k: len(v) for k, v in by_type.items()} == {"Patient": 1, "Device": 1}  # the unit bound in the world
    assert "name" not in by_type["Patient"][0]  # FHIR strings are never empty


def test_a_unit_that_changed_hands_is_a_device_of_each_patient_in_their_bundles(world, seed, services):
    serial = "CTU-HANDS1"
    a, b = world["patient_a"].id, world["patient_b"].id
    seed.session(a, at_day(5, 9), serial=serial)  # A wore it, then B
    seed.session(b, at_day(2, 9), serial=serial)
    devices = {}
    for pid in (a, b):
        review = PatientReview(services.stores, services.stores.users.by_id(pid))
        bundle = transaction_bundle(review, 30)
        [device] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
                    and e["resource"]["serialNumber"] == serial]
        devices[pid] = device
    # Each imports as a Device of its own patient: the identifiers differ, so neither overwrites the other.
    assert devices[a]["identifier"] != devices[b]["identifier"]



def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def test_control_characters_a_patient_typed_reach_no_fhir_string_and_no_narrative(client, world, seed, db):
    # Text fields refuse only NUL: a page break pasted into a location, an escape into a note, a note of nothing else.
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": [],
                                               "display_name": "Patient\x1bA"}})
    seed.pain(a, at_day(1, 9), 5, location="left\x0cknee\x0b", note="\x07\x08")
    body = _export(client, world, "fhir", days=7).json
    for entry in body["entry"]:
        ET.fromstring(entry["resource"]["text"]["div"])  # noqa: S314 (our own narrative): well-formed XHTML
    assert [s for s in _strings(body) if re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", s)] == []
    [rating] = [e["resource"] for e in body["entry"] if e["resource"].get("valueInteger") == 5]
    assert rating["bodySite"] == {"text": "left knee"}
    assert rating["note"][0]["text"] == "\ufffd"  # a FHIR string is never empty
    assert "left knee" in rating["text"]["div"]
    assert _by_type(body)["Patient"][0]["name"] == [{"text": "Patient A"}]


def test_a_fhir_string_keeps_tabs_and_line_breaks_and_loses_other_control_characters():
    assert fhir_string("line one\r\n\tline two") == "line one\r\n\tline two"
    assert fhir_string("\x0cpage\x0c\x0cbreak\x1f") == "page break"
    assert fhir_string("no\ufffeno\uffff") == "no no"
    assert fhir_string("\x00") == "\ufffd"


def test_a_held_session_of_a_negative_length_ends_where_it_starts_and_keeps_the_reported_length(
        client, world, seed, db):
    # Ingestion stores a record whose length is below zero, held (a clinical finding), and held sessions are
    # exported: a Period that ended before it started (FHIR per-1) would make a server refuse the whole transaction.
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    session = seed.session(a, at_day(1, 9), minutes=10)
    db.session_records.update_one({"_id": session["_id"]}, {"$set": {
        "duration_s": -600, "held": True, "counts": False, "counted_minutes": 0.0,
        "flags": [{"flag": "clinical", "detail": "duration must be more than 0 and at most 24 hours"}]}})
    by_type = _by_type(_export(client, world, "fhir", days=7).json)
    start = at_day(1, 9).isoformat()
    [statement] = by_type["DeviceUseStatement"]
    [record] = [o for o in by_type["Observation"] if "effectivePeriod" in o]
    assert statement["status"] == "on-hold"
    assert statement["timingPeriod"] == record["effectivePeriod"] == {"start": start, "end": start}
    assert [c["valueQuantity"]["value"] for c in record["component"]
            if c["code"]["text"].startswith("duration as the unit reported it")] == [-10]


def test_a_diary_entry_deleted_since_an_import_comes_back_entered_in_error_without_what_the_patient_wrote(
        client, world, seed, db):
    # Importing a later export updates resources in place: an entry left out would stay "final" on the server.
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    entry = seed.pain(a, at_day(1, 9), 10, note="typo, meant 1", location="left knee", bpi=BPI_ANSWERS)
    first = {e["fullUrl"]: e for e in _export(client, world, "fhir", days=7).json["entry"]}
    exported = {url for url, e in first.items() if e["resource"].get("effectiveDateTime") == entry["recorded_at"].isoformat()
                or e["resource"].get("authored") == entry["recorded_at"].isoformat()}
    assert exported == {record_urn(kind, entry["_id"]) for kind in (
        "Observation/pain-nrs", "QuestionnaireResponse/bpi", "Observation/bpi-severity", "Observation/bpi-interference")}
    now = datetime.now(UTC)
    db.pain_entries.update_one({"_id": entry["_id"]}, {"$set": {"deleted": True, "deleted_at": now, "updated_at": now}})
    body = _export(client, world, "fhir", days=7).json
    Bundle.model_validate(body)
    again = {e["fullUrl"]: e for e in body["entry"]}
    assert {url: (again[url]["request"], again[url]["resource"]["status"]) for url in exported} == {
        url: (first[url]["request"], "entered-in-error") for url in exported}
    retracted = [again[url]["resource"] for url in exported]
    assert not {"valueInteger", "valueQuantity", "bodySite", "note", "component", "item"} & {
        k for r in retracted for k in r}, "nothing the patient wrote goes out again"
    assert all("typo" not in s and "knee" not in s for s in _strings(retracted))
    assert set(_references(body)) <= set(again)

    db.pain_entries.update_one({"_id": entry["_id"]}, {"$set": {"purged": True}, "$unset": {"recorded_at": ""}})
    assert not exported & {e["fullUrl"] for e in _export(client, world, "fhir", days=7).json["entry"]}


def _tens_activities(client, world) -> dict[str, dict]:
    plans = _by_type(_export(client, world, "fhir", days=7).json)["CarePlan"]
    return {plan["title"]: next(a["detail"] for a in plan["activity"] if a["detail"].get("kind") == "DeviceRequest")
            for plan in plans}


def test_the_care_plans_tens_activity_is_bounded_by_the_courses_dates_and_completed_after_its_end(
        client, world, seed, db):
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    today = datetime.now(UTC).date()
    old = seed.plan(a, 1, at_day(40, 0), active_to=at_day(5, 0), daily_minutes=60)
    db.therapy_plans.update_one({"_id": old["_id"]}, {"$set": {"tens.end_date": str(today - timedelta(days=10))}})
    new = seed.plan(a, 2, at_day(5, 0), daily_minutes=40, start_date=str(today + timedelta(days=3)))
    tens = _tens_activities(client, world)
    # Version 1's course ended before version 2 replaced it; version 2's has not begun.
    assert {title: (t["status"], t["scheduledTiming"]["repeat"]["boundsPeriod"]) for title, t in tens.items()} == {
        "Therapy plan version 1": ("completed", {"start": "2024-01-01", "end": str(today - timedelta(days=10))}),
        "Therapy plan version 2": ("not-started", {"start": str(today + timedelta(days=3))})}
    assert tens["Therapy plan version 2"]["description"].endswith(f"from {today + timedelta(days=3)}")

    for end, status in ((today, "in-progress"), (today - timedelta(days=1), "completed")):
        db.therapy_plans.update_one({"_id": new["_id"]}, {"$set": {"tens.start_date": str(today - timedelta(days=4)),
                                                                    "tens.end_date": str(end)}})
        assert _tens_activities(client, world)["Therapy plan version 2"]["status"] == status, end
    # As the day CSV has it: no TENS target after the course's last day.
    days = list(csv.DictReader(io.StringIO(_export(client, world, "csv", days=2).get_data(as_text=True).lstrip("\ufeff"))))
    assert [d["tens_target_minutes"] for d in days] == ["40", ""]

    # Version 2, written on day -5, starts its course on day -4: day -5 follows version 1's, which began that day
    # (plans.day_plan). It stopped then, and its CarePlan's period takes in that day.
    db.therapy_plans.update_one({"_id": old["_id"]}, {"$set": {"tens.start_date": str(today - timedelta(days=5)),
                                                                "tens.end_date": None}})
    assert _tens_activities(client, world)["Therapy plan version 1"]["status"] == "stopped"
    care_plans = {p["title"]: p for p in _by_type(_export(client, world, "fhir", days=7).json)["CarePlan"]}
    assert (care_plans["Therapy plan version 1"]["status"], care_plans["Therapy plan version 1"]["period"]) == (
        "revoked", {"start": at_day(40, 0).isoformat(), "end": at_day(4, 0).isoformat()})
    db.therapy_plans.update_one({"_id": old["_id"]}, {"$set": {"tens.start_date": str(today - timedelta(days=4))}})
    assert _tens_activities(client, world)["Therapy plan version 1"]["status"] == "cancelled"  # replaced before it began


def test_review_fhir_tens_status_follows_the_course_the_days_follow_after_a_change_dated_later(
        client, world, seed, db):
    """Version 2, written yesterday, starts its TENS in 3 days: every day until then follows version 1's course
    (plans.day_plan): the day CSV has version 1's 60-minute target today. The CarePlan export must not say that
    course stopped (nor that no course is in progress)."""
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    today = datetime.now(UTC).date()
    seed.plan(a, 1, at_day(40, 0), active_to=at_day(1, 0), daily_minutes=60)
    seed.plan(a, 2, at_day(1, 0), daily_minutes=40, start_date=str(today + timedelta(days=3)))
    days = list(csv.DictReader(io.StringIO(_export(client, world, "csv", days=2).get_data(as_text=True).lstrip("\ufeff"))))
    assert [d["tens_target_minutes"] for d in days] == ["60", "60"]  # the figures follow version 1 today
    statuses = {title: t["status"] for title, t in _tens_activities(client, world).items()}
    assert statuses == {"Therapy plan version 1": "in-progress", "Therapy plan version 2": "not-started"}
    # Version 1's plan still sets today's TENS: its CarePlan is active, its period open.
    care_plan = next(p for p in _by_type(_export(client, world, "fhir", days=7).json)["CarePlan"]
                     if p["title"] == "Therapy plan version 1")
    assert (care_plan["status"], care_plan["period"]) == ("active", {"start": at_day(40, 0).isoformat()})
