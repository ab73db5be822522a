"""Pairing a home gateway: a short-lived, single-use code becomes credentials bound to one patient."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import time_machine


def test_pairing_code_works_once_even_when_raced(app, client, world):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]

    def pair(_):
        return app.test_client().post("/api/v1/gateways/pair", json={"code": code, "name": "hub"}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(pair, range(6)))
    assert statuses.count(201) == 1 and statuses.count(401) == 5


def test_pairing_code_expires_after_ten_minutes(client, world):
    patient = world["patient_a"]
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        assert client.post("/api/v1/gateways/pair", json={"code": code}).status_code == 401


def test_gateway_sees_only_its_patients_units(client, world):
    listed = client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).json["devices"]
    assert [d["serial"] for d in listed] == [world.a_device]


def test_a_unit_bound_to_one_patient_cannot_be_bound_to_another(client, world):
    response = client.post(f"/api/v1/patients/{world['patient_b'].id}/devices", json={"serial": world.a_device},
                           headers=world["patient_b"].headers)
    assert response.status_code == 409


def test_revoked_gateway_token_stops_working(client, world, services):
    from companion.store.relationships import Gateways

    Gateways(services.db).revoke(world["gateway_a"].id)
    assert client.get("/api/v1/gateway/devices", headers=world["gateway_a"].headers).status_code == 401
