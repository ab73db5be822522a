"""Pain diary use cases: record (once, even when the app uploads again), edit, delete, sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo.database import Database

from companion.domain.errors import Invalid, NotFound
from companion.domain.pain import BriefPainInventory, bpi_interference, bpi_severity
from companion.store.accounts import now
from companion.store.diary import PainEntries


def _now_ms() -> datetime:
    current = now()
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def _utc_ms(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# The BPI short form's interference items, in the order of the form.
INTERFERENCE_ITEMS = ("general_activity", "mood", "walking_ability", "normal_work", "relations", "sleep",
                      "enjoyment_of_life")


def _scored(bpi: dict | None) -> dict | None:
    """The form as answered, with its severity and interference scores."""
    if bpi is None:
        return None
    answers = bpi.get("interference") or {}
    form = BriefPainInventory(worst=bpi["worst"], least=bpi["least"], average=bpi["average"], now=bpi["now"],
                              interference=tuple(answers.get(item) for item in INTERFERENCE_ITEMS))
    return {**bpi, "interference": {item: answers.get(item) for item in INTERFERENCE_ITEMS},
            "severity": bpi_severity(form), "interference_score": bpi_interference(form)}


def _for_storage(entry: dict) -> dict:
    stored = dict(entry)
    stored["recorded_at"] = _utc_ms(entry["recorded_at"])
    stored["bpi"] = _scored(entry.get("bpi"))
    return stored


def record_entry(db: Database, patient_id: str, entry: dict) -> tuple[dict, bool]:
    """Store one entry; (entry, created). The same client_entry_id again returns the original entry."""
    return PainEntries(db).add(patient_id, _for_storage(entry), _now_ms())


def record_batch(db: Database, patient_id: str, entries: list[dict]) -> list[tuple[dict, bool]]:
    """Store an offline batch; each entry is stored once however often (or concurrently) it arrives."""
    return PainEntries(db).add_many(patient_id, [_for_storage(e) for e in entries], _now_ms())


def edit_entry(db: Database, patient_id: str, entry_id: str, changes: dict) -> dict:
    """Change an entry the patient recorded; deleted entries cannot be edited."""
    entries = PainEntries(db)
    current = entries.get(patient_id, entry_id)
    if not current or current["deleted"]:
        raise NotFound("no such diary entry")
    merged = {**current, **changes}
    if bool(merged.get("phase")) != bool(merged.get("session_record_id")):
        raise Invalid("a before/after rating needs both phase and session_record_id",
                      errors={"phase": ["give phase and session_record_id together"]})
    update = dict(changes)
    if "recorded_at" in update:
        update["recorded_at"] = _utc_ms(update["recorded_at"])
    if "bpi" in update:
        update["bpi"] = _scored(update["bpi"])
    updated = entries.update(patient_id, entry_id, update, _now_ms())
    if not updated:
        raise NotFound("no such diary entry")
    return updated


def delete_entry(db: Database, patient_id: str, entry_id: str) -> dict:
    """Soft-delete: the entry stays as a tombstone so other devices learn of the deletion when they sync."""
    deleted = PainEntries(db).soft_delete(patient_id, entry_id, _now_ms())
    if not deleted:
        raise NotFound("no such diary entry")
    return deleted


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def encode_cursor(entry: dict) -> str:
    return f"{(entry['updated_at'] - EPOCH) // MILLISECOND}.{entry['_id']}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    millis, _, last_id = cursor.partition(".")
    return EPOCH + int(millis) * MILLISECOND, last_id


def changes_since(db: Database, patient_id: str, cursor: str | None, limit: int) -> dict:
    """Entries created, edited or deleted after the cursor, oldest first, and the cursor to continue from."""
    rows = PainEntries(db).changes_since(patient_id, decode_cursor(cursor) if cursor else None, limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]) if rows else cursor
    return {"items": rows, "next_cursor": next_cursor, "has_more": has_more}
