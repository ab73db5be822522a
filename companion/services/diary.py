"""Pain diary use cases: record (once, even when the app uploads again), edit, delete, sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from companion.clock import Clock, now, to_millis
from companion.domain.access import Grant, sees_free_text, without_free_text
from companion.domain.errors import Invalid, NotFound
from companion.domain.pain import BriefPainInventory, bpi_interference, bpi_severity
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores


def _utc_ms(value: datetime) -> datetime:
    return to_millis(value.astimezone(UTC))


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


class Diary:
    def __init__(self, stores: Stores, touched: TouchedDays, clock: Clock = now):
        self.entries = stores.pain_entries
        self.touched = touched
        self.clock = clock

    def _now_ms(self) -> datetime:
        return to_millis(self.clock())

    def record_entry(self, patient_id: str, entry: dict) -> tuple[dict, bool]:
        """Store one entry; (entry, created). The same client_entry_id again returns the original entry."""
        stored, created = self.entries.add(patient_id, _for_storage(entry), self._now_ms())
        self.touched.instants(patient_id, [stored["recorded_at"]], "diary")
        return stored, created

    def record_batch(self, patient_id: str, entries: list[dict]) -> list[tuple[dict, bool]]:
        """Store an offline batch; each entry is stored once however often (or concurrently) it arrives."""
        stored = self.entries.add_many(patient_id, [_for_storage(e) for e in entries], self._now_ms())
        self.touched.instants(patient_id, [entry["recorded_at"] for entry, _ in stored], "diary")
        return stored

    def edit_entry(self, patient_id: str, entry_id: str, changes: dict) -> dict:
        """Change an entry the patient recorded; deleted entries cannot be edited."""
        current = self.entries.get(patient_id, entry_id)
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
        updated = self.entries.update(patient_id, entry_id, update, self._now_ms())
        if not updated:
            raise NotFound("no such diary entry")
        self.touched.instants(patient_id, [current["recorded_at"], updated["recorded_at"]], "diary")
        return updated

    def delete_entry(self, patient_id: str, entry_id: str) -> dict:
        """Soft-delete: the entry stays as a tombstone so other devices learn of the deletion when they sync."""
        deleted = self.entries.soft_delete(patient_id, entry_id, self._now_ms())
        if not deleted:
            raise NotFound("no such diary entry")
        self.touched.instants(patient_id, [deleted["recorded_at"]], "diary")
        return deleted

    def entries_between(self, grant: Grant, start: datetime, end: datetime, limit: int) -> list[dict]:
        """Live entries recorded in a range, oldest first, as the caller may see them."""
        return _visible(grant, self.entries.recorded_between(grant.patient_id, start, end, limit))

    def entry(self, grant: Grant, entry_id: str) -> dict:
        """One entry (a deleted one is shown as deleted), as the caller may see it."""
        found = self.entries.get(grant.patient_id, entry_id)
        if not found:
            raise NotFound("no such diary entry")
        return _visible(grant, [found])[0]

    def changes_since(self, grant: Grant, cursor: str | None, limit: int) -> dict:
        """Entries created, edited or deleted after the cursor, oldest first, and the cursor to continue from."""
        rows = self.entries.changes_since(grant.patient_id, decode_cursor(cursor) if cursor else None, limit + 1)
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]) if rows else cursor
        return {"items": _visible(grant, rows), "next_cursor": next_cursor, "has_more": has_more}


def _visible(grant: Grant, entries: list[dict]) -> list[dict]:
    """A caregiver the patient has not allowed to read notes sees entries without their free text."""
    if sees_free_text(grant):
        return entries
    return [without_free_text(e, ("context.note",)) for e in entries]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def encode_cursor(entry: dict) -> str:
    return f"{(entry['updated_at'] - EPOCH) // MILLISECOND}.{entry['_id']}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    millis, _, last_id = cursor.partition(".")
    return EPOCH + int(millis) * MILLISECOND, last_id
