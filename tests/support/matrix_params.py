"""Path parameters for the authorization matrix (tests/api/test_authorization_matrix.py).

For every path parameter a route uses, PROVIDERS names a function `(client, world, services) -> str`
that returns the id of an object of that kind belonging to patient A (creating it through the API or
the services if needed). `patient_id` is always patient A. The matrix refuses routes with a parameter
that has no provider here, so a new route cannot slip past the authorization checks.
"""

from __future__ import annotations

from companion.store.accounts import now
from companion.store.relationships import CareLinks
from tests.clinician.seed import Seed


def _care_link(client, world, services) -> str:
    return CareLinks(services.db).active(world["patient_a"].id, world["caregiver_linked"].id)["_id"]


def _alert(client, world, services) -> str:
    return Seed(services.db).alert(world["patient_a"].id, now())["_id"]


PROVIDERS = {
    "link_id": _care_link,
    "serial": lambda client, world, services: world.a_device,
    "team_id": lambda client, world, services: world.team_id,
    "alert_id": _alert,
    # The clinician pages' static files (a public route, which the matrix does not call).
    "filename": lambda client, world, services: "dashboard.css",
}
