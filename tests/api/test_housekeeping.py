"""The cleanup job removes only what has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine

from companion.store.throttle import Counters


def test_purge_removes_expired_counters_and_keeps_current_ones(db, services):
    counters = Counters(db)
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=2)):
        counters.hit("old", 60)
    counters.hit("new", 60)
    removed = services.housekeeping.purge_expired()
    assert removed["rate_events"] == 1
    assert [e["key"] for e in db.rate_events.find()] == ["new"]
    assert services.housekeeping.purge_expired()["rate_events"] == 0


def test_sessions_that_can_no_longer_be_alive_are_forgotten_and_a_gateways_renewals_store_no_refresh_token(
        client, services, db, world):
    """A gateway asks for a token every 15 minutes with its secret (96 sessions a day): its sessions are kept
    a day, and no refresh token is stored for them (it is never given one). A person's session is kept until
    it could no longer be alive (30 days after its login) and a day more."""
    gateway, patient = world["gateway_a"], world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": "hall"}).json
    credentials = {"gateway_id": paired["gateway_id"], "gateway_secret": paired["gateway_secret"]}
    renewals = 0
    with time_machine.travel(datetime.now(UTC) - timedelta(days=2)):
        for _ in range(3):
            assert client.post("/api/v1/auth/gateway-token", json=credentials).status_code == 200
            renewals += 1
    assert db.refresh_tokens.count_documents({"user_id": paired["gateway_id"]}) == 0
    assert db.token_families.count_documents({"user_id": paired["gateway_id"]}) == renewals
    fresh = client.post("/api/v1/auth/gateway-token", json=credentials).json["access_token"]

    services.housekeeping.purge_expired()
    assert db.token_families.count_documents({"user_id": paired["gateway_id"]}) == 1
    assert client.get("/api/v1/gateway/devices", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    assert client.get(f"/api/v1/patients/{patient.id}", headers=patient.headers).status_code == 200
    people_sessions = db.token_families.count_documents({"role": {"$ne": "gateway"}})
    assert people_sessions >= 1 and gateway.role == "gateway"
    with time_machine.travel(datetime.now(UTC) + timedelta(days=32)):
        services.housekeeping.purge_expired()
        assert db.token_families.count_documents({}) == 0
