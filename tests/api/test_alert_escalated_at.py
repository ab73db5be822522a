"""An alert a fresh overload made urgent says when (``escalated_at``), to the care team and to whoever reads it, so a
clinician sees it was escalated; one never escalated says null."""

from __future__ import annotations

from datetime import UTC, datetime


def test_the_alert_lists_say_when_an_alert_was_escalated(client, world, services):
    patient, clinician = world["patient_a"], world["clinician_team"]
    common = dict(patient_id=patient.id, kind="overload", severity="warning", text="Overload",
                  shared_with_caregivers=True, urgent=False, share_kind="device_fault")
    escalated, _ = services.stores.alerts.raise_once(dedup_key="overload:t:1", **common)
    other, _ = services.stores.alerts.raise_once(dedup_key="overload:t:2", **common)
    at = datetime(2026, 3, 3, 6, 2, tzinfo=UTC)
    services.stores.alerts.escalate(escalated, severity="urgent", text="Overload", occurred_at=at, details={}, at=at)
    for path, headers in ((f"/api/v1/patients/{patient.id}/review/alerts", clinician.headers),
                          (f"/api/v1/patients/{patient.id}/alerts", patient.headers)):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, answer.json
        said = {a["id"]: a["escalated_at"] for a in answer.json["items"]}
        assert said == {escalated["_id"]: "2026-03-03T06:02:00+00:00", other["_id"]: None}, (path, said)
