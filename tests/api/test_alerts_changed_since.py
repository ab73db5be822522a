"""An app that lists a patient's alerts `since` its last look sees every alert that changed since, not only those
raised since: an alert raised before and made urgent, acknowledged or resolved after is in the answer (it listed
only alerts raised since, so a phone polling that way never heard that an old warning had become urgent)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from companion.store.alerts import Alerts

MARCH_1 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _alerts_at(services, moment: datetime) -> Alerts:
    return Alerts(services.db, clock=lambda: moment)


def _raise(services, patient, key: str, at: datetime) -> dict:
    alert, _ = _alerts_at(services, at).raise_once(
        patient_id=patient.id, kind="overload", severity="warning", text="Overload", dedup_key=key,
        shared_with_caregivers=True, urgent=False, share_kind="device_fault")
    return alert


def _listed(client, patient, since: datetime, **more) -> list[str]:
    query = "&".join([f"since={quote(since.isoformat())}", *(f"{k}={v}" for k, v in more.items())])
    answer = client.get(f"/api/v1/patients/{patient.id}/alerts?{query}", headers=patient.headers)
    assert answer.status_code == 200, answer.json
    return answer.json


def test_since_lists_the_alerts_changed_since_not_only_those_raised(client, world, services):
    patient = world["patient_a"]
    escalated = _raise(services, patient, "overload:t:1", MARCH_1)
    acknowledged = _raise(services, patient, "overload:t:2", MARCH_1)
    resolved = _raise(services, patient, "overload:t:3", MARCH_1)
    untouched = _raise(services, patient, "overload:t:4", MARCH_1)
    march_3 = datetime(2026, 3, 3, 6, 2, tzinfo=UTC)
    _alerts_at(services, march_3).escalate(escalated, severity="urgent", text="Overload", occurred_at=march_3,
                                          details={}, at=march_3)
    _alerts_at(services, datetime(2026, 3, 4, 9, 0, tzinfo=UTC)).acknowledge(
        patient.id, acknowledged["_id"], world["clinician_team"].id, at=datetime(2026, 3, 4, 9, 0, tzinfo=UTC))
    # Resolved by a pass that began the day before it wrote: the write's own time is what counts.
    _alerts_at(services, datetime(2026, 3, 5, 10, 0, tzinfo=UTC)).resolve(
        resolved["_id"], "no longer holds", at=datetime(2026, 3, 4, 23, 0, tzinfo=UTC))

    after_raising = datetime(2026, 3, 2, tzinfo=UTC)
    listed = _listed(client, patient, after_raising)
    assert [a["id"] for a in listed["items"]] != []
    assert {a["id"] for a in listed["items"]} == {escalated["_id"], acknowledged["_id"], resolved["_id"]}
    said = {a["id"]: a["changed_at"] for a in listed["items"]}
    assert said == {escalated["_id"]: "2026-03-03T06:02:00+00:00", acknowledged["_id"]: "2026-03-04T09:00:00+00:00",
                    resolved["_id"]: "2026-03-05T10:00:00+00:00"}
    assert {a["id"] for a in _listed(client, patient, datetime(2026, 3, 5, tzinfo=UTC))["items"]} == {resolved["_id"]}
    everything = _listed(client, patient, MARCH_1)
    assert {a["id"] for a in everything["items"]} == {escalated["_id"], acknowledged["_id"], resolved["_id"],
                                                      untouched["_id"]}
    assert {a["changed_at"] for a in everything["items"] if a["id"] == untouched["_id"]} == {
        "2026-03-01T08:00:00+00:00"}


def test_since_pages_through_the_changed_alerts_and_counts_an_old_alert_by_when_it_was_raised(client, world,
                                                                                              services):
    """Pages of one (``limit``, then ``next``) go through every changed alert once; an alert stored before alerts
    said when they changed counts from when it was raised."""
    patient = world["patient_a"]
    keys = [f"overload:t:{n}" for n in range(4)]
    raised = [_raise(services, patient, key, MARCH_1.replace(hour=8 + n)) for n, key in enumerate(keys)]
    for alert in raised[:3]:
        _alerts_at(services, datetime(2026, 3, 6, tzinfo=UTC)).acknowledge(
            patient.id, alert["_id"], world["clinician_team"].id, at=datetime(2026, 3, 6, tzinfo=UTC))
    older = _raise(services, patient, "overload:old", datetime(2026, 3, 7, tzinfo=UTC))
    services.db.alerts.update_one({"_id": older["_id"]}, {"$unset": {"changed_at": ""}})

    seen: list[str] = []
    page = _listed(client, patient, datetime(2026, 3, 5, tzinfo=UTC), limit=1)
    while True:
        seen += [a["id"] for a in page["items"]]
        if not page["next"]:
            break
        answer = client.get(page["next"], headers=patient.headers)
        assert answer.status_code == 200, answer.json
        page = answer.json
        assert len(seen) < 10, seen
    assert seen == [older["_id"], raised[2]["_id"], raised[1]["_id"], raised[0]["_id"]]
    listed = _listed(client, patient, datetime(2026, 3, 5, tzinfo=UTC))["items"]
    assert [a["changed_at"] for a in listed if a["id"] == older["_id"]] == ["2026-03-07T00:00:00+00:00"]
