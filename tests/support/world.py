"""A small world of people around two patients, built through the real API and services.

Patient A and patient B; a caregiver linked to A and one linked to nobody; a clinician on A's care
team and one on no team; a gateway bound to A and one bound to B; an admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from companion.domain.access import CaregiverPermissions

PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    key: str
    id: str
    role: str
    token: str
    email: str = ""
    refresh_token: str = ""

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    people: dict[str, Person] = field(default_factory=dict)
    team_id: str = ""
    a_device: str = "CTU-A0001"
    b_device: str = "CTU-B0001"

    def __getitem__(self, key: str) -> Person:
        return self.people[key]


def make_user(client, services, *, key: str, role: str, time_zone: str = "UTC") -> Person:
    email = f"{key}@example.org"
    user = services.accounts.sign_up(email=email, password=PASSWORD, display_name=key.replace("_", " ").title(),
                                     role=role, time_zone=time_zone)
    return login(client, key, email, user.id, role)


def login(client, key: str, email: str, user_id: str, role: str) -> Person:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.json
    body = response.json
    return Person(key=key, id=user_id, role=role, token=body["access_token"], email=email,
                  refresh_token=body["refresh_token"])


def pair_gateway(client, patient: Person, key: str, serial: str) -> Person:
    assert client.post(f"/api/v1/patients/{patient.id}/devices", json={"serial": serial},
                       headers=patient.headers).status_code == 201
    code = client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]
    paired = client.post("/api/v1/gateways/pair", json={"code": code, "name": key}).json
    token = client.post("/api/v1/auth/gateway-token", json={
        "gateway_id": paired["gateway_id"], "gateway_secret": paired["gateway_secret"]}).json["access_token"]
    return Person(key=key, id=paired["gateway_id"], role="gateway", token=token)


def build_world(client, services) -> World:
    w = World()
    for key, role, zone in [
        ("patient_a", "patient", "Europe/London"), ("patient_b", "patient", "America/New_York"),
        ("caregiver_linked", "caregiver", "UTC"), ("caregiver_unlinked", "caregiver", "UTC"),
        ("clinician_team", "clinician", "UTC"), ("clinician_other", "clinician", "UTC"),
        ("admin", "admin", "UTC"),
    ]:
        w.people[key] = make_user(client, services, key=key, role=role, time_zone=zone)
    # Seeded consent (the offer and its acceptance are under test in tests/api/test_caregiver_offers.py).
    services.stores.care_links.grant(w["patient_a"].id, w["caregiver_linked"].id,
                                     CaregiverPermissions(alerts=frozenset({"missed_session"})))
    care = services.care
    team = care.create_team("Pain clinic A")
    care.add_clinician(team.id, w["clinician_team"].id)
    # Seeded enrolments (not an admin's act under test: that one also pushes a notice to the patient).
    services.stores.care_teams.enrol(team.id, w["patient_a"].id)
    other = care.create_team("Other clinic")
    care.add_clinician(other.id, w["clinician_other"].id)
    services.stores.care_teams.enrol(other.id, w["patient_b"].id)
    w.people["gateway_a"] = pair_gateway(client, w["patient_a"], "gateway_a", w.a_device)
    w.people["gateway_b"] = pair_gateway(client, w["patient_b"], "gateway_b", w.b_device)
    w.team_id = team.id
    return w
