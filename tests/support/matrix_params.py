"""Path parameters for the authorization matrix (tests/api/test_authorization_matrix.py).

For every path parameter a route uses, PROVIDERS names a function `(client, world, services) -> str`
that returns the id of an object of that kind belonging to patient A (creating it through the API or
the services if needed). `patient_id` is always patient A. The matrix refuses routes with a parameter
that has no provider here, so a new route cannot slip past the authorization checks.
"""

from __future__ import annotations

from companion.store.relationships import CareLinks


def _care_link(client, world, services) -> str:
    return CareLinks(services.db).active(world["patient_a"].id, world["caregiver_linked"].id)["_id"]


def _pain_entry(client, world, services) -> str:
    from datetime import UTC, datetime

    from companion.services.diary import record_entry

    entry, _ = record_entry(services.db, world["patient_a"].id, {
        "client_entry_id": "matrix-entry-1", "recorded_at": datetime.now(UTC), "nrs": 4, "context": None,
        "bpi": None, "session_record_id": None, "phase": None})
    return entry["_id"]


def _library_item(client, world, services) -> str:
    from companion.services.library import load_library

    load_library(services.db)
    return services.db.content_items.find_one({}, sort=[("_id", 1)])["_id"]


def _practice(client, world, services) -> str:
    from companion.services.library import start_practice

    return start_practice(services.db, world["patient_a"].id, _library_item(client, world, services), None)["_id"]


PROVIDERS = {
    "link_id": _care_link,
    "serial": lambda client, world, services: world.a_device,
    "team_id": lambda client, world, services: world.team_id,
    "entry_id": _pain_entry,
    "slug": _library_item,
    "practice_id": _practice,
}
