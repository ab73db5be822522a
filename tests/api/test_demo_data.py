"""The demo data the run command loads: people who can log in and weeks of consistent history."""

from __future__ import annotations

from companion.demo import DEMO_DOMAIN, DEMO_PASSWORD, seed


def test_demo_seed_loads_people_and_history_once(client, services, db):
    lines = seed(services, days=10, progress=False)
    assert lines[0] == "demo data loaded"
    assert seed(services, days=10, progress=False)[0] == "demo data already loaded"
    assert db.users.count_documents({"role": "patient"}) == 3
    login = client.post("/api/v1/auth/login", json={"email": f"maria@{DEMO_DOMAIN}", "password": DEMO_PASSWORD})
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    maria = client.get("/api/v1/auth/me", headers=headers).json["id"]
    assert client.get(f"/api/v1/patients/{maria}/sessions", headers=headers).json["items"]
    assert client.get(f"/api/v1/patients/{maria}/therapy-plan", headers=headers).json["version"] == 1
    statuses = {o["status"] for o in db.reminder_occurrences.find({"patient_id": maria, "status": {"$ne": "pending"}})}
    assert statuses == {"done", "missed"}
    assert db.practice_log.count_documents({"patient_id": maria}) > 0
