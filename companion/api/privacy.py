"""What a caregiver may read of the patient's own words (free-text notes and reasons)."""

from __future__ import annotations

from companion.api import services
from companion.api.security import current_actor
from companion.domain.access import Relationship
from companion.store.relationships import CareLinks


def sees_free_text(patient_id: str, relationship: Relationship) -> bool:
    """Everyone related to the patient sees their free text, except a caregiver the patient has not
    allowed to read diary notes."""
    if relationship is not Relationship.CAREGIVER:
        return True
    link = CareLinks(services().db).active(patient_id, current_actor().id) or {}
    return bool(link.get("permissions", {}).get("diary_notes"))
