"""The demo data the run command loads: people who can log in and weeks of history that show the product."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from companion.api.diary_schemas import CLIENT_ID
from companion.demo import DEMO_DOMAIN, DEMO_PASSWORD, LATE_DAYS, PATIENTS, seed
from companion.services.container import Services
from companion.settings import load_settings


def login(client, key: str) -> tuple[dict, str]:
    answer = client.post("/api/v1/auth/login", json={"email": f"{key}@{DEMO_DOMAIN}", "password": DEMO_PASSWORD})
    assert answer.status_code == 200
    headers = {"Authorization": f"Bearer {answer.json['access_token']}"}
    return headers, client.get("/api/v1/auth/me", headers=headers).json["id"]


def test_demo_seed_loads_people_and_history_once(client, services, db):
    lines = seed(services, days=14, progress=False)
    assert lines[0] == "demo data loaded"
    assert seed(services, days=14, progress=False)[0] == "demo data already loaded"
    assert db.users.count_documents({"role": "patient"}) == 3
    headers, maria = login(client, "maria")
    assert client.get(f"/api/v1/patients/{maria}/sessions", headers=headers).json["items"]
    assert client.get(f"/api/v1/patients/{maria}/therapy-plan", headers=headers).json["version"] == 1
    statuses = {o["status"] for o in db.reminder_occurrences.find({"status": {"$ne": "pending"}})}
    assert statuses == {"done", "missed"}
    assert db.practice_log.count_documents({"patient_id": maria}) > 0
    # The diary as an app would have sent it: every id one the API takes (an app may send it again).
    ids = [e["client_entry_id"] for e in db.pain_entries.find({}, {"client_entry_id": 1})]
    assert ids and all(CLIENT_ID.regex.match(i) for i in ids)


def test_the_demo_tells_a_clinician_the_right_story(client, services, db):
    seed(services, days=14, progress=False)
    ids = {p.key: login(client, p.key)[1] for p in PATIENTS}
    # Plans that started weeks ago: every patient has figures, adherent or not.
    pdc = {key: services.adherence.summary(pid)["tens"]["7"] for key, pid in ids.items()}
    assert all(p["pdc"] is not None for p in pdc.values())
    assert pdc["maria"]["adherent"] is True and pdc["james"]["adherent"] is False
    # A realistic unit: a few sessions a day, a battery that lasts days (never low enough for an alert).
    per_day = db.session_records.count_documents({"patient_id": ids["maria"]}) / 15
    assert 1.5 <= per_day <= 3
    assert db.device_events.count_documents({"kind": "battery_low"}) == 0
    # James's unit restarted at its epoch: those sessions are corrected, the raw reading (2000) kept beside.
    reset = list(db.session_records.find({"patient_id": ids["james"], "time_quality": "corrected"}))
    assert reset and all(r["device_started_at"].year == 2000 for r in reset)
    assert all(not r["held"] for r in db.session_records.find({}))
    # Priya's late upload: her last days were recomputed, and the alert it caused resolved with the reason.
    alert = db.alerts.find_one({"patient_id": ids["priya"], "kind": "low_adherence"})
    assert alert is not None and alert["resolved_at"] is not None and "later" in alert["resolved_reason"]
    today = services.adherence.local_today(ids["priya"])
    late = [db.adherence_days.find_one({"_id": f"{ids['priya']}:{(today.fromordinal(today.toordinal() - n)).isoformat()}"})
            for n in range(1, LATE_DAYS + 1)]
    assert all(day and day["tens_minutes"] > 0 for day in late)
    # Today is shown in progress, never counted against the patient.
    summary = services.adherence.summary(ids["maria"])
    assert summary["in_progress"]["date"] == services.adherence.local_today(ids["maria"]).isoformat()
    # The clinician's panel (one team, by need: read from the team's panel lines) lists the three, the least
    # adherent first (no alert is open), Maria last.
    headers, _ = login(client, "dr.okafor")
    panel = client.get("/api/v1/clinician/panel", headers=headers).json
    assert panel["total"] == 3 and {r["patient_id"] for r in panel["items"]} == set(ids.values())
    assert [r["open_alerts"] for r in panel["items"]] == [0, 0, 0]
    # James is not adherent but has no alert at all (his missed days are scattered): README and docstring say so.
    assert pdc["james"]["pdc"] < 0.8 and db.alerts.count_documents({"patient_id": ids["james"]}) == 0
    assert [r["pdc_7"] for r in panel["items"]] == sorted(r["pdc_7"] for r in panel["items"])
    assert panel["items"][-1]["patient_id"] == ids["maria"]


@pytest.mark.parametrize("at", ["2026-12-01T08:40:00", "2026-12-01T13:40:00"])
def test_the_demo_holds_no_session_whatever_the_time_it_is_loaded(settings_overrides, at):
    """The hub's last pull is five minutes before the load: a session that ended after it is not in it (a session
    the hub carried before its end would be held as of unknown time). These instants are ends of such sessions."""
    services = Services(load_settings(settings_overrides), clock=lambda: datetime.fromisoformat(at).replace(tzinfo=UTC))
    try:
        seed(services, days=14, progress=False)
        held = [r["_id"] for r in services.db.session_records.find({"held": True})]
        assert services.db.session_records.count_documents({}) > 80 and held == []
    finally:
        services.client.close()


def test_the_readme_and_the_docstring_tell_the_story_the_demo_loads():
    """They promised James a low-adherence alert that the demo never raises (the test above finds none)."""
    import companion.demo
    from tests.support.ferretdb import ROOT

    readme = " ".join((ROOT / "README.md").read_text().split())
    docstring = " ".join(companion.demo.__doc__.split())
    for text in (readme, docstring):
        assert "with a low-adherence alert" not in text and "he has a low-adherence alert" not in text
    assert "so he has none" in readme and "James has no alert" in docstring
