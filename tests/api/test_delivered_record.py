"""A gateway asks whether a unit's record reached the server, and with which content hash (how it tells a lost
acknowledgement from a restarted counter where it has no hash of its own: docs/device-gateway.md)."""

from __future__ import annotations

from tests.support.records import session_record


def url(serial: str, seq: int) -> str:
    return f"/api/v1/gateway/devices/{serial}/records/{seq}"


def test_a_gateway_learns_the_content_hash_its_patients_gateway_delivered_and_the_read_is_audited(
        client, world, db):
    gateway = world["gateway_a"]
    record = session_record(world.a_device, 5)
    assert client.post("/api/v1/gateway/session-records", json={"records": [record]},
                       headers=gateway.headers).status_code == 200

    held = client.get(url(world.a_device, 5), headers=gateway.headers)
    never = client.get(url(world.a_device, 6), headers=gateway.headers)

    assert held.status_code == 200, held.json
    assert held.json == {"serial": world.a_device, "seq": 5, "delivered": True,
                         "content_hash": record["content_hash"]}
    assert never.json == {"serial": world.a_device, "seq": 6, "delivered": False, "content_hash": None}
    [read] = db.audit_events.find({"route": "/api/v1/gateway/devices/<serial>/records/<int:seq>",
                                   "resource_ids": f"{world.a_device}:5"})
    assert (read["actor_id"], read["action"], read["outcome"], read["patient_ids"]) == (
        gateway.id, "R", "success", [world["patient_a"].id])


def test_a_gateway_may_not_ask_about_another_patients_unit(client, world, db):
    record = session_record(world.a_device, 5)
    client.post("/api/v1/gateway/session-records", json={"records": [record]}, headers=world["gateway_a"].headers)

    refused = client.get(url(world.a_device, 5), headers=world["gateway_b"].headers)

    assert refused.status_code == 403
    assert record["content_hash"] not in refused.get_data(as_text=True)
    [denied] = db.audit_events.find({"route": "/api/v1/gateway/devices/<serial>/records/<int:seq>",
                                     "actor_id": world["gateway_b"].id})
    assert denied["outcome"] == "denied" and denied["patient_ids"] == [world["patient_b"].id]


def test_a_unit_released_from_the_patient_is_no_longer_asked_about(client, world, services):
    record = session_record(world.a_device, 5)
    client.post("/api/v1/gateway/session-records", json={"records": [record]}, headers=world["gateway_a"].headers)
    services.gateways.release_unit(world["patient_a"].id, world.a_device)

    assert client.get(url(world.a_device, 5), headers=world["gateway_a"].headers).status_code == 403


def test_the_operation_is_documented_with_its_answer(client):
    operation = client.get("/openapi.json").json["paths"]["/api/v1/gateway/devices/{serial}/records/{seq}"]["get"]
    assert operation["operationId"] == "get_delivered_record"
    assert {"200", "401", "403"} <= set(operation["responses"])
