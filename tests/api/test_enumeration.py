"""No answer says whether an email or an id belongs to someone (issue 15, finding 8 of the report, item 9 of the
brief): sign-up answers the same for a taken email, the difference goes only to the mailbox; emergency access
answers the same whether or not the id is a patient's."""

from __future__ import annotations

from tests.support.world import PASSWORD

ASK = {"password": PASSWORD, "display_name": "Someone", "time_zone": "UTC"}


def test_signing_up_with_a_taken_email_gets_the_same_answer_and_creates_nothing(client, world, db, mailbox):
    taken = world["patient_a"].email
    before = db.users.count_documents({})
    fresh = client.post("/api/v1/auth/signup", json={"email": "brand-new@example.org", **ASK})
    existing = client.post("/api/v1/auth/signup", json={"email": taken.upper(), **ASK})
    assert fresh.status_code == existing.status_code == 202
    assert fresh.get_json() == existing.get_json()
    assert db.users.count_documents({}) == before
    # The difference goes out of band, to the mailbox only.
    (note,) = mailbox.messages(taken)
    assert "already" in note.get_payload(decode=True).decode()
    (code_mail,) = mailbox.messages("brand-new@example.org")
    assert mailbox.last_code("brand-new@example.org")
    assert "code" in code_mail["Subject"]


def test_the_emailed_code_makes_the_account_and_a_wrong_one_does_not(client, db, mailbox):
    asked = client.post("/api/v1/auth/signup", json={"email": "carla@example.org", **ASK})
    assert asked.status_code == 202
    wrong = client.post("/api/v1/auth/signup/confirm", json={"email": "carla@example.org", "code": "ABCDEFGH",
                                                                    "password": PASSWORD})
    unknown = client.post("/api/v1/auth/signup/confirm", json={"email": "nobody@example.org", "code": "ABCDEFGH",
                                                                      "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_json()["detail"] == unknown.get_json()["detail"]
    assert db.users.count_documents({"email": "carla@example.org"}) == 0
    made = client.post("/api/v1/auth/signup/confirm",
                       json={"email": "carla@example.org", "code": mailbox.last_code("carla@example.org"),
                             "password": PASSWORD})
    assert made.status_code == 201 and made.get_json()["email"] == "carla@example.org"
    login = client.post("/api/v1/auth/login", json={"email": "carla@example.org", "password": PASSWORD})
    assert login.status_code == 200
    again = client.post("/api/v1/auth/signup/confirm",
                        json={"email": "carla@example.org", "code": mailbox.last_code("carla@example.org"),
                             "password": PASSWORD})
    assert again.status_code == 401  # a code works once


def test_a_second_sign_up_for_the_same_email_neither_chooses_the_password_nor_spoils_the_owners_code(client, db,
                                                                                                      mailbox):
    """Someone else asks for the same email during the owner's sign-up: their request is kept apart from the owner's
    (it replaced it, so the owner's code then worked only with the other's password). The owner's newest mail,
    with the owner's password, makes the owner's account, as the owner asked for it; the other's password never
    works."""
    assert client.post("/api/v1/auth/signup", json={"email": "dana@example.org", **ASK}).status_code == 202
    other = {**ASK, "password": "the other person's passphrase", "role": "caregiver"}
    assert client.post("/api/v1/auth/signup", json={"email": "dana@example.org", **other}).status_code == 202
    code = mailbox.last_code("dana@example.org")  # the owner reads the latest mail (the other's request sent it)
    owner = client.post("/api/v1/auth/signup/confirm",
                        json={"email": "dana@example.org", "code": code, "password": PASSWORD})
    assert owner.status_code == 201 and owner.get_json()["role"] == "patient"
    assert db.users.count_documents({"email": "dana@example.org"}) == 1
    assert client.post("/api/v1/auth/login", json={"email": "dana@example.org",
                                                   "password": other["password"]}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"email": "dana@example.org",
                                                   "password": PASSWORD}).status_code == 200


def test_a_taken_email_cannot_be_claimed_through_a_pending_signup(client, world, mailbox):
    """An account is made for the email meanwhile (here by an admin): the code then makes nothing, and the answer
    is the one a wrong code gets."""
    asked = client.post("/api/v1/auth/signup", json={"email": "late@example.org", **ASK})
    assert asked.status_code == 202
    code = mailbox.last_code("late@example.org")
    client.application.extensions["companion"].accounts.sign_up(
        email="late@example.org", password="another password entirely", display_name="Late", role="caregiver",
        time_zone="UTC")
    taken = client.post("/api/v1/auth/signup/confirm", json={"email": "late@example.org", "code": code,
                                                             "password": PASSWORD})
    assert taken.status_code == 401


def test_emergency_access_answers_the_same_for_a_patient_and_for_no_one(client, world):
    clinician = world["clinician_other"]
    body = {"reason": "unconscious in A&E, no team reachable", "minutes": 15}
    real = client.post("/api/v1/emergency-access", headers=clinician.headers,
                       json={**body, "patient_id": world["patient_a"].id})
    made_up = client.post("/api/v1/emergency-access", headers=clinician.headers,
                          json={**body, "patient_id": "0123456789abcdef01234567"})
    assert real.status_code == made_up.status_code == 201
    assert set(real.get_json()) == set(made_up.get_json()) == {"id", "patient_id", "expires_at"}
    # The grant opens a real patient's record; for the made-up id there is nothing, as for any id.
    assert client.get(f"/api/v1/patients/{world['patient_a'].id}", headers=clinician.headers).status_code == 200
    assert client.get("/api/v1/patients/0123456789abcdef01234567", headers=clinician.headers).status_code == 404



def test_emergency_access_to_an_id_that_is_no_patients_opens_nothing_anywhere(client, world, services, db):
    clinician = world["clinician_other"]
    caregiver = world["caregiver_unlinked"]
    # A patient offers the caregiver access: the caregiver's own notice of it is about the caregiver.
    assert client.post(f"/api/v1/patients/{world['patient_b'].id}/caregivers", headers=world["patient_b"].headers,
                       json={"caregiver_email": caregiver.email, "current_password": PASSWORD,
                             "permissions": {"write": False, "alerts": [], "diary_notes": False}}).status_code == 201
    assert db.push_outbox.count_documents({"recipient_user_id": caregiver.id, "patient_id": caregiver.id}) == 1
    body = {"reason": "unconscious in A&E, no team reachable", "minutes": 15}
    for someone in ("0123456789abcdef01234567", caregiver.id, world["clinician_team"].id, world["admin"].id):
        assert client.post("/api/v1/emergency-access", headers=clinician.headers,
                           json={**body, "patient_id": someone}).status_code == 201
        # Reading answers 404 as for any id: no list of nothing, and nobody's notifications.
        for path in ("", "/sessions", "/notifications", "/alerts", "/pain-entries/changes", "/devices"):
            answer = client.get(f"/api/v1/patients/{someone}{path}", headers=clinician.headers)
            assert answer.status_code == 404, (someone, path, answer.status_code)
