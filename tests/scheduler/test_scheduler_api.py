"""The API around the scheduler: phones and receipts, alerts and notification history in each
reader's scope, adherence days and summary."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from companion.clock import now

TOKEN = "fcm-token-Zq81-very-secret"


def _register(client, person, install="phone-1", token=TOKEN):
    return client.put(f"/api/v1/me/push-tokens/{install}", headers=person.headers,
                      json={"token": token, "platform": "android"})


def test_phone_registration_is_refreshed_in_place_and_never_shows_the_token(client, world, db, caplog):
    patient = world["patient_a"]
    with caplog.at_level(logging.DEBUG, logger="companion"):
        first = _register(client, patient)
        again = _register(client, patient, token=TOKEN + "-refreshed")
        listed = client.get("/api/v1/me/push-tokens", headers=patient.headers)
    assert (first.status_code, again.status_code, listed.status_code) == (200, 200, 200)
    assert [p["install_id"] for p in listed.json["items"]] == ["phone-1"]
    for response in (first, again, listed):
        assert TOKEN not in response.get_data(as_text=True)
    assert TOKEN not in caplog.text
    assert db.push_tokens.find_one({"user_id": patient.id})["token"] == TOKEN + "-refreshed"


def test_caregiver_registers_several_phones_and_deletes_one(client, world, db):
    caregiver = world["caregiver_linked"]
    _register(client, caregiver, "phone-1", "t-1")
    _register(client, caregiver, "phone-2", "t-2")
    assert client.delete("/api/v1/me/push-tokens/phone-1", headers=caregiver.headers).status_code == 204
    assert client.delete("/api/v1/me/push-tokens/phone-1", headers=caregiver.headers).status_code == 204  # a retry
    assert [t["install_id"] for t in db.push_tokens.find({"user_id": caregiver.id})] == ["phone-2"]


def test_bad_install_id_and_bad_platform_are_refused(client, world):
    patient = world["patient_a"]
    assert client.put("/api/v1/me/push-tokens/has%20space", headers=patient.headers,
                      json={"token": "t", "platform": "android"}).status_code == 422
    assert client.put("/api/v1/me/push-tokens/phone-1", headers=patient.headers,
                      json={"token": "t", "platform": "fax"}).status_code == 422


def _notification(services, recipient, patient, source="reminder:occ-1"):
    doc, _ = services.stores.outbox.schedule(source_key=source, recipient_user_id=recipient.id, patient_id=patient.id,
                                          kind="therapy_reminder", send_at=now())
    return doc["_id"]


def test_only_the_recipient_may_report_delivery_and_opening(client, world, services, db):
    patient = world["patient_a"]
    notification = _notification(services, patient, patient)
    url = f"/api/v1/me/notifications/{notification}/receipts"
    assert client.post(url, headers=world["caregiver_linked"].headers, json={"receipt": "delivered"}).status_code == 404
    assert client.post(url, headers=patient.headers, json={"receipt": "delivered"}).status_code == 204
    assert client.post(url, headers=patient.headers, json={"receipt": "opened"}).status_code == 204
    doc = db.push_outbox.find_one({"_id": notification})
    assert doc["delivered_at"] is not None and doc["opened_at"] is not None


def test_a_refused_receipt_names_the_notifications_patient_and_answers_as_for_no_notification(client, world,
                                                                                               services, db):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    not_theirs = _notification(services, patient, patient)
    access_ended = _notification(services, caregiver, patient, source="reminder:occ-2")
    services.stores.care_links.revoke_all(patient_id=patient.id, caregiver_id=caregiver.id)
    answers = [client.post(f"/api/v1/me/notifications/{n}/receipts", headers=caregiver.headers,
                           json={"receipt": "opened"}) for n in (not_theirs, access_ended, "0" * 24)]
    assert {(a.status_code, a.json["detail"]) for a in answers} == {(404, "no such notification for you")}
    refused = list(db.audit_events.find({"actor_id": caregiver.id, "route": "/api/v1/me/notifications/"
                                         "<notification_id>/receipts", "status": 404}).sort([("at", 1), ("seq", 1)]))
    assert [(e["patient_ids"], e["outcome"]) for e in refused] == [
        ([patient.id], "denied"), ([patient.id], "denied"), ([None], "denied")]


def test_the_app_learns_what_a_push_was_about_from_its_own_list(client, world, services):
    patient = world["patient_a"]
    notification = _notification(services, patient, patient, source="reminder:occ-7:repeat:2")
    response = client.get("/api/v1/me/notifications", headers=patient.headers)
    assert response.status_code == 200
    (item,) = response.json["items"]
    assert (item["id"], item["about"], item["about_id"]) == (notification, "reminder_occurrence", "occ-7")


def _alert(services, patient, share_kind, kind):
    alert, _ = services.stores.alerts.raise_once(patient_id=patient.id, kind=kind, severity="warning", text=f"{kind}.",
                                             dedup_key=f"{kind}:{patient.id}", shared_with_caregivers=True,
                                             urgent=False, share_kind=share_kind)
    return alert["_id"]


def test_caregiver_reads_only_the_alert_kinds_the_patient_shared(client, world, services):
    patient = world["patient_a"]
    missed = _alert(services, patient, "missed_session", "missed_tens_session")
    flare = _alert(services, patient, "pain_flare", "pain_flare")
    url = f"/api/v1/patients/{patient.id}/alerts"
    as_caregiver = client.get(url, headers=world["caregiver_linked"].headers)
    as_clinician = client.get(url, headers=world["clinician_team"].headers)
    as_patient = client.get(url, headers=patient.headers)
    assert [a["id"] for a in as_caregiver.json["items"]] == [missed]
    assert sorted(a["id"] for a in as_clinician.json["items"]) == sorted([missed, flare])
    assert sorted(a["id"] for a in as_patient.json["items"]) == sorted([missed, flare])


def test_the_alert_list_pages_past_its_500th_alert_and_an_alert_raised_between_pages_shifts_nothing(
        client, world, db, services):
    """A patient with years of daily alerts: the list paged by position read at most 500 and stopped there without
    a word (no `next`); alerts of one instant are split across pages without loss or repeat."""
    patient = world["patient_a"]
    at = now().replace(microsecond=0)
    db.alerts.insert_many([{"_id": f"old-{n:04d}", "patient_id": patient.id, "kind": "missed_tens_session",
                            "severity": "info", "text": "x", "dedup_key": f"old:{n}", "raised_at": at - timedelta(
                                hours=n // 2), "acknowledged_at": None, "resolved_at": None,
                            "shared_with_caregivers": False, "urgent": False, "share_kind": "missed_session"}
                           for n in range(1, 701)])  # two alerts at each instant
    url = f"/api/v1/patients/{patient.id}/alerts"
    first = client.get(url, headers=patient.headers, query_string={"limit": 333}).json
    newer = _alert(services, patient, "pain_flare", "pain_flare")  # raised between two pages
    seen, following = [a["id"] for a in first["items"]], first["next"]
    while following:
        page = client.get(following, headers=patient.headers).json
        seen, following = seen + [a["id"] for a in page["items"]], page["next"]
    assert newer not in seen
    assert sorted(seen) == sorted(f"old-{n:04d}" for n in range(1, 701)) and len(seen) == 700


def test_the_alert_list_at_its_largest_page_links_to_the_501st_alert(client, world, db):
    """The page of 500 asked the store for 501 to know whether more follow, and the store stopped at 500."""
    patient = world["patient_a"]
    at = now().replace(microsecond=0)
    db.alerts.insert_many([{"_id": f"a-{n:04d}", "patient_id": patient.id, "kind": "missed_tens_session",
                            "severity": "info", "text": "x", "dedup_key": f"a:{n}",
                            "raised_at": at - timedelta(minutes=n), "acknowledged_at": None, "resolved_at": None,
                            "shared_with_caregivers": False, "urgent": False, "share_kind": "missed_session"}
                           for n in range(1, 502)])
    page = client.get(f"/api/v1/patients/{patient.id}/alerts", headers=patient.headers,
                      query_string={"limit": 500}).json
    assert len(page["items"]) == 500 and page["next"] is not None
    assert [a["id"] for a in client.get(page["next"], headers=patient.headers).json["items"]] == ["a-0501"]


def test_caregiver_sees_only_the_notifications_sent_to_them(client, world, services):
    patient, caregiver = world["patient_a"], world["caregiver_linked"]
    to_patient = _notification(services, patient, patient)
    to_caregiver = _notification(services, caregiver, patient, source="alert:a1")
    url = f"/api/v1/patients/{patient.id}/notifications"
    assert [n["id"] for n in client.get(url, headers=caregiver.headers).json["items"]] == [to_caregiver]
    everyone = client.get(url, headers=world["clinician_team"].headers).json["items"]
    assert sorted(n["id"] for n in everyone) == sorted([to_patient, to_caregiver])
    assert {n["about"] for n in everyone} == {"reminder_occurrence", "alert"}


def test_adherence_days_and_summary_are_served_from_the_snapshots(client, world, services, db):
    patient = world["patient_a"]
    user = services.accounts.account(patient.id)
    today = now().date()
    for n in range(3):
        services.adherence.compute_day(user, today - timedelta(days=n))
    days = client.get(f"/api/v1/patients/{patient.id}/adherence", headers=world["caregiver_linked"].headers,
                      query_string={"from": (today - timedelta(days=2)).isoformat(), "to": today.isoformat()})
    assert days.status_code == 200
    assert [d["state"] for d in days.json["items"]] == ["no_tasks"] * 3
    summary = client.get(f"/api/v1/patients/{patient.id}/adherence/summary", headers=patient.headers)
    assert summary.status_code == 200
    assert summary.json["tens"]["30"] == {"days_with_plan": 0, "days_covered": 0, "pdc": None, "adherent": None}
    assert summary.json["responder"]["status"] == "no_plan"


def test_the_responder_check_reads_the_recent_weeks_after_a_long_diary(client, world, db):
    patient = world["patient_a"]
    at = now()
    started = datetime.combine(at.date() - timedelta(days=120), datetime.min.time(), UTC)
    db.therapy_plans.insert_one({
        "_id": "plan-long-diary", "patient_id": patient.id, "version": 1, "created_at": started,
        "created_by": "clinician", "active_from": started, "active_to": None,
        "tens": {"sessions_per_day": 1, "minutes_per_session": 30, "start_date": started.date().isoformat(),
                 "counts_towards_adherence": True}, "medications": [], "mindfulness": {}})
    # A rating every half hour from two weeks before the start until now: more than 5,000 of them, 6 at the
    # start and 4 since (a third less).
    first, step = started - timedelta(days=14), timedelta(minutes=30)
    count = int((at - first) / step)
    assert count > 5_000
    db.pain_entries.insert_many([
        {"_id": f"long-diary-{n}", "patient_id": patient.id, "client_entry_id": f"long-diary-{n}",
         "recorded_at": first + n * step, "nrs": 6 if first + n * step < started + timedelta(days=7) else 4,
         "deleted": False, "bpi": None} for n in range(count)])
    summary = client.get(f"/api/v1/patients/{patient.id}/adherence/summary", headers=patient.headers)
    assert summary.status_code == 200
    responder = summary.json["responder"]
    assert (responder["status"], responder["baseline_pain"], responder["recent_pain"]) == ("responder", 6, 4)


def test_adherence_range_longer_than_a_year_is_refused(client, world):
    patient = world["patient_a"]
    response = client.get(f"/api/v1/patients/{patient.id}/adherence", headers=patient.headers,
                          query_string={"from": date(2024, 1, 1).isoformat(), "to": date(2026, 1, 1).isoformat()})
    assert response.status_code == 422


def test_a_phone_registers_with_its_language_and_a_malformed_one_is_refused(client, world):
    patient = world["patient_a"]
    registered = client.put("/api/v1/me/push-tokens/phone-de", json={"token": "t-de", "platform": "ios",
                                                                     "locale": "de-AT"}, headers=patient.headers)
    assert registered.status_code == 200 and registered.json["locale"] == "de-AT"
    refused = client.put("/api/v1/me/push-tokens/phone-x", json={"token": "t-x", "platform": "ios",
                                                                 "locale": "../de"}, headers=patient.headers)
    assert refused.status_code == 422 and "locale" in refused.json["errors"]["json"]


def test_a_patient_chooses_the_language_of_their_notifications_and_can_clear_it(client, world):
    url = f"/api/v1/patients/{world['patient_a'].id}"
    headers = world["patient_a"].headers
    assert client.patch(url, json={"locale": "es-MX"}, headers=headers).json["locale"] == "es-MX"
    assert client.patch(url, json={"locale": None}, headers=headers).json["locale"] is None
    assert client.patch(url, json={"locale": "spanish please"}, headers=headers).status_code == 422


def test_an_alert_answers_its_structured_fields_beside_the_sentence(client, world, services):
    patient = world["patient_a"]
    at = datetime(2026, 3, 2, 9, 55, tzinfo=UTC)
    services.stores.alerts.raise_once(
        patient_id=patient.id, kind="battery_low", severity="info", text="TENS unit CTU-1 battery is at 9%.",
        dedup_key=f"battery_low:CTU-1:{patient.id}", shared_with_caregivers=True, urgent=False,
        share_kind="battery_low", occurred_at=at, device_serial="CTU-1", details={"battery_percent": 9})
    (alert,) = client.get(f"/api/v1/patients/{patient.id}/alerts", headers=patient.headers).json["items"]
    assert (alert["kind"], alert["occurred_at"], alert["device_serial"], alert["details"]) == (
        "battery_low", "2026-03-02T09:55:00+00:00", "CTU-1", {"battery_percent": 9})
    assert alert["patient_id"] == patient.id and alert["text"].startswith("TENS unit CTU-1")


def _resolved_silence(services, patient) -> str:
    last_seen = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    alert, _ = services.stores.alerts.raise_once(
        patient_id=patient.id, kind="unit_silent", severity="warning",
        text="TENS unit CTU-2 has not been heard from since 2026-03-01 08:00 (UTC) (over 24 hours).",
        dedup_key=f"unit_silent:CTU-2:{patient.id}", shared_with_caregivers=True, urgent=False,
        share_kind="device_silent", occurred_at=last_seen, device_serial="CTU-2")
    services.stores.alerts.resolve(alert["_id"], "the unit was heard from again at 2026-03-02 09:30 UTC",
                                   datetime(2026, 3, 2, 9, 31, tzinfo=UTC),
                                   {"code": "unit_heard_again", "at": datetime(2026, 3, 2, 9, 30, tzinfo=UTC)})
    return alert["_id"]


def test_a_patient_reads_an_alert_and_why_it_was_resolved_in_their_language(client, world, services):
    patient = world["patient_a"]
    _resolved_silence(services, patient)
    url = f"/api/v1/patients/{patient.id}"
    assert client.patch(url, json={"locale": "de-DE"}, headers=patient.headers).status_code == 200
    (alert,) = client.get(f"{url}/alerts", headers=patient.headers).json["items"]
    assert alert["text"].startswith("Vom TENS-Gerät CTU-2 kam seit ") and "UTC" not in alert["text"]
    assert alert["resolved_reason"].startswith("Erledigt: Das Gerät hat sich um ")
    assert alert["resolution"] == {"code": "unit_heard_again", "at": "2026-03-02T09:30:00+00:00"}


def test_without_a_chosen_language_the_request_language_is_used_and_the_care_team_keeps_its_sentence(
        client, world, services):
    patient = world["patient_a"]
    _resolved_silence(services, patient)
    url = f"/api/v1/patients/{patient.id}/alerts"
    (spanish,) = client.get(url, headers={**patient.headers, "Accept-Language": "fr-FR, es;q=0.8"}).json["items"]
    assert spanish["text"].startswith("No se sabe nada de la unidad TENS CTU-2 desde ")
    assert spanish["resolved_reason"].startswith("Resuelto: la unidad volvió a dar señales")
    (english,) = client.get(url, headers=patient.headers).json["items"]
    assert english["text"].startswith("TENS unit CTU-2 has not been heard from since ")
    (team,) = client.get(url, headers={**world["clinician_team"].headers, "Accept-Language": "es"}).json["items"]
    assert team["text"].endswith("(over 24 hours).") and team["resolved_reason"].endswith("09:30 UTC")
