"""Path parameters for the authorization matrix (tests/api/test_authorization_matrix.py).

For every path parameter a route uses, PROVIDERS names a function `(client, world, services) -> str`
that returns the id of an object of that kind belonging to patient A (creating it through the API or
the services if needed). `patient_id` is always patient A. The matrix refuses routes with a parameter
that has no provider here, so a new route cannot slip past the authorization checks.
"""

from __future__ import annotations

from companion.store.accounts import now
from companion.store.alerts import Alerts
from companion.store.outbox import Outbox
from companion.store.relationships import CareLinks


def _care_link(client, world, services) -> str:
    return CareLinks(services.db).active(world["patient_a"].id, world["caregiver_linked"].id)["_id"]


def _alert(client, world, services) -> str:
    alert, _ = Alerts(services.db).raise_once(
        patient_id=world["patient_a"].id, kind="unit_silent", severity="warning", text="Unit silent.",
        dedup_key=f"matrix:{world['patient_a'].id}", shared_with_caregivers=True, urgent=False,
        share_kind="device_silent")
    return alert["_id"]


def _notification(client, world, services) -> str:
    doc, _ = Outbox(services.db).schedule(source_key="matrix:notification", recipient_user_id=world["patient_a"].id,
                                          patient_id=world["patient_a"].id, kind="generic_update", send_at=now())
    return doc["_id"]


PROVIDERS = {
    "alert_id": _alert,
    "install_id": lambda client, world, services: "matrix-phone-a",
    "notification_id": _notification,
    "link_id": _care_link,
    "serial": lambda client, world, services: world.a_device,
    "team_id": lambda client, world, services: world.team_id,
}
