"""Consent under two requests at once: a revocation, a caregiver leaving or an account closing while an offer is
being accepted or a link changed. Whatever the interleaving, nobody keeps access the patient (or the caregiver)
ended. Each test makes its interleaving certain: one store call runs the competing real request on a second
thread at the point where the race bites."""

import threading

from tests.support.world import PASSWORD


def _in_another_thread(call):
    """Run one HTTP call on its own thread (its own Flask contexts), as a second request arriving meanwhile."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join()
    return out[0]


def _offer(client, patient, email, **permissions):
    return client.post(f"/api/v1/patients/{patient.id}/caregivers", headers=patient.headers, json={
        "caregiver_email": email, "current_password": PASSWORD, "permissions": permissions or {"alerts": []}})


def _meanwhile(monkeypatch, store, method: str, request) -> list[int]:
    """``store.method`` runs ``request`` (another caller's real request, on its own thread) first: the statuses
    that request was answered are collected in the list returned."""
    real, answered = getattr(store, method), []

    def first_the_other_request(*args, **kwargs):
        answered.append(_in_another_thread(request).status_code)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, first_the_other_request)
    return answered


def test_patient_taking_back_an_offer_while_it_is_being_accepted_leaves_no_link(client, world, services, monkeypatch):
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offer_id = _offer(client, patient, caregiver.email).json["id"]
    # The caregiver's acceptance has marked the offer accepted; the link is not written yet. The patient's "take
    # back this offer" arrives now.
    revoked = _meanwhile(monkeypatch, services.stores.care_links, "grant", lambda: client.delete(
        f"/api/v1/patients/{patient.id}/caregivers/{offer_id}", headers=patient.headers))
    accepted = client.post(f"/api/v1/caregiver/invitations/{offer_id}/acceptance", headers=caregiver.headers,
                           json={"current_password": PASSWORD})
    monkeypatch.undo()
    assert revoked == [204]  # the patient was told the offer is taken back / the access ended
    # ... so the caregiver must not see the patient.
    seen = client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers)
    assert (accepted.status_code, seen.status_code) == (404, 404)


def test_a_link_the_caregiver_ended_is_not_revived_by_the_patient_changing_permissions(
        client, world, services, monkeypatch):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    # The patient's change of permissions is on its way; the caregiver's "stop sharing with me" arrives now.
    left = _meanwhile(monkeypatch, services.stores.care_links, "change_permissions", lambda: client.delete(
        f"/api/v1/caregiver/patients/{patient.id}", headers=caregiver.headers))
    changed = _offer(client, patient, caregiver.email, alerts=["missed_session"], diary_notes=True)
    monkeypatch.undo()
    assert (changed.status_code, left) == (201, [204])
    assert changed.json["status"] == "pending"  # an offer the caregiver may accept again, or not
    # The caregiver ended the link; nobody is linked to a patient without saying yes.
    assert client.get(f"/api/v1/patients/{patient.id}", headers=caregiver.headers).status_code == 404


def test_closing_the_account_while_an_offer_is_being_accepted_leaves_no_link(client, world, services, monkeypatch):
    """Closure: "caregivers' access (every link is revoked: they see nothing from their next request)". The
    acceptance re-checks the patient after making the link, but the closure revokes links before it marks the
    account closed: an acceptance that makes its link, and checks, in between is missed by both."""
    patient, caregiver = world["patient_a"], world["caregiver_unlinked"]
    offer_id = _offer(client, patient, caregiver.email).json["id"]
    stores = services.stores
    real_grant, real_close = stores.care_links.grant, stores.users.close
    links_revoked, go_on = threading.Event(), threading.Event()
    closing = {}

    def close_after_the_acceptance(*args, **kwargs):
        links_revoked.set()  # the closure has revoked every link (none was there yet) and ends grants ...
        go_on.wait(10)       # ... and is about to mark the account closed
        return real_close(*args, **kwargs)

    def grant_while_closing(*args, **kwargs):
        def close():
            closing["answer"] = client.post(f"/api/v1/patients/{patient.id}/closure", headers=patient.headers,
                                            json={"current_password": PASSWORD, "confirm": True})
        closing["thread"] = threading.Thread(target=close)
        closing["thread"].start()
        links_revoked.wait(10)
        return real_grant(*args, **kwargs)

    monkeypatch.setattr(stores.users, "close", close_after_the_acceptance)
    monkeypatch.setattr(stores.care_links, "grant", grant_while_closing)
    accepted = client.post(f"/api/v1/caregiver/invitations/{offer_id}/acceptance", headers=caregiver.headers,
                           json={"current_password": PASSWORD})
    go_on.set()
    closing["thread"].join()
    monkeypatch.undo()
    assert closing["answer"].status_code == 200
    assert services.stores.users.by_id(patient.id).status == "closed"
    # The account is closed: no caregiver may read the record (the acceptance made its link before the closure
    # was done; the closure, once the account is closed, revokes every link again).
    assert accepted.status_code in (200, 404)
    seen = client.get(f"/api/v1/patients/{patient.id}/alerts", headers=caregiver.headers)
    assert seen.status_code == 404
    assert services.stores.care_links.active(patient.id, caregiver.id) is None


class _AfterWriting:
    """A collection that runs another request once, right after its first ``replace_one``: a second request
    arriving between two writes of the first."""

    def __init__(self, collection, request):
        self.collection, self.request, self.answered = collection, request, []

    def __getattr__(self, name):
        return getattr(self.collection, name)

    def replace_one(self, *args, **kwargs):
        result = self.collection.replace_one(*args, **kwargs)
        if not self.answered:
            self.answered.append(_in_another_thread(self.request).status_code)
        return result


def test_a_change_of_permissions_the_caregivers_leaving_overtook_leaves_no_change_in_the_history(
        client, world, services, monkeypatch, db):
    """The change keeps the permissions it replaces in the history before it writes the new ones; the caregiver
    leaves in between. The link is not revived (an offer instead), and the history says the caregiver ended that
    period, not that the patient changed it."""
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    links = services.stores.care_links
    history = _AfterWriting(links.history, lambda: client.delete(f"/api/v1/caregiver/patients/{patient.id}",
                                                                   headers=caregiver.headers))
    monkeypatch.setattr(links, "history", history)
    changed = _offer(client, patient, caregiver.email, alerts=["missed_session"], diary_notes=True)
    monkeypatch.undo()
    assert (changed.status_code, changed.json["status"], history.answered) == (201, "pending", [204])
    assert db.care_link_history.count_documents({"patient_id": patient.id, "status": "changed"}) == 0
    assert db.care_links.find_one({"patient_id": patient.id, "caregiver_id": caregiver.id})["ended_by"] == "caregiver"
