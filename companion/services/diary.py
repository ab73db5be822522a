"""Pain diary use cases: record (once, even when the app uploads again), edit, delete, sync.

Retries and conflicts:

- An entry is keyed by the app's ``client_entry_id``. Sending it again with the content it was created
  with answers the entry as stored now (a retry after a lost answer); sending it with other content is a
  :class:`~companion.domain.errors.Conflict` carrying the stored entry: the id is the app's, and it names
  one entry.
- Every change carries the patient's next change number (companion.services.sync), which is also the
  entry's version. An edit or deletion naming a version (If-Match) applies only to that version, in the
  same conditional update that writes it; without one it applies to whatever version is current (an edit
  changes only the fields it names, and of the context and the pain form only the items it names). An edit that changes nothing writes nothing (so a retried edit is
  answered with the entry even though its version moved on); deleting a deleted entry answers as the
  first deletion did.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from companion.clock import Clock, now, to_millis
from companion.domain.access import DIARY_FREE_TEXT, Grant, sees_free_text, without_free_text
from companion.domain.errors import Conflict, Contended, Invalid, NotFound, PreconditionFailed
from companion.domain.pain import BriefPainInventory, bpi_interference, bpi_severity, bpi_severity_problems
from companion.services.sync import Changes, feed_view
from companion.services.touched_days import TouchedDays
from companion.store.stores import Stores

ATTEMPTS = 20  # conditional writes retried when another writer changed the entry in between (no If-Match)


def _utc_ms(value: datetime) -> datetime:
    return to_millis(value.astimezone(UTC))


# The BPI short form's interference items, in the order of the form.
CONTEXT_ITEMS = ("location", "activity", "sleep_quality", "mood", "note")
SEVERITY_ITEMS = ("worst", "least", "average", "now")
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


def _normalised(fields: dict) -> dict:
    """Fields as they are stored: instants in UTC to the millisecond, a BPI with its scores."""
    stored = dict(fields)
    if "recorded_at" in stored:
        stored["recorded_at"] = _utc_ms(stored["recorded_at"])
    if "bpi" in stored:
        stored["bpi"] = _scored(stored["bpi"])
    return stored


def _content_hash(entry: dict) -> str:
    """What the app sent to create an entry, as a digest: a re-send is the same request when it matches."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()


def _for_storage(entry: dict) -> dict:
    stored = _normalised(entry)
    # Two digests: of everything sent, and of what a caregiver not allowed the patient's own words sees of it,
    # so that a re-send from such a caregiver is judged only on what they can see (see _same_creation).
    stored["created_hash"], stored["created_hash_shared"] = (
        _content_hash(stored), _content_hash(without_free_text(stored, DIARY_FREE_TEXT)))
    return stored


def _version(entry: dict) -> int:
    return entry.get("seq") or 0


def _unchanged(entry: dict, changes: dict) -> bool:
    return all(entry.get(key) == value for key, value in changes.items())


class Diary:
    def __init__(self, stores: Stores, changes: Changes, clock: Clock = now, *, touched: TouchedDays | None = None):
        self.entries = stores.pain_entries
        self.changes = changes
        self.touched = touched
        self.clock = clock

    def _touch(self, patient_id: str, *entries: dict | None) -> None:
        """The local days of these entries' ratings changed (flares, pain figures): mark them."""
        if self.touched is not None:
            self.touched.instants(patient_id, [e["recorded_at"] for e in entries if e], "diary")

    def _now_ms(self) -> datetime:
        return to_millis(self.clock())

    def record_entry(self, grant: Grant, entry: dict) -> tuple[dict, bool]:
        """Store one entry; (entry, created). The same client_entry_id again returns the stored entry when
        it was created with the same content, and is a Conflict (with the stored entry) otherwise."""
        stored = _for_storage(entry)
        with self.changes.reservation(grant.patient_id, self.entries) as held:
            found, created = self.entries.add(grant.patient_id, stored, self._now_ms(), held.first)
        found = held.as_stored(found)
        if not created and found.get("purged"):
            raise _deleted_long_ago()
        if not created and not _same_creation(grant, found, stored):
            raise _reused(grant, found)
        self._touch(grant.patient_id, found)
        return _shown(grant, found), created

    def record_batch(self, grant: Grant, entries: list[dict]) -> list[tuple[dict, str]]:
        """Store an offline batch; each entry is stored once however often (or concurrently) it arrives.
        Returns (entry, "created" | "duplicate" | "conflict" | "deleted") in order; a conflict writes nothing,
        and "deleted" answers an entry deleted (on this phone or another; its tombstone, or only its ids when it
        was deleted longer ago than the sync window): an app that reads the status alone must not take it for
        live."""
        stored = [_for_storage(e) for e in entries]
        with self.changes.reservation(grant.patient_id, self.entries, len(stored)) as held:
            results = self.entries.add_many(grant.patient_id, stored, self._now_ms(), held.first)
        results = [(held.as_stored(found), created) for found, created in results]
        outcome = []
        for sent, (found, created) in zip(stored, results, strict=True):
            status = ("created" if created else "deleted" if found.get("purged") or found.get("deleted")
                      else "duplicate" if _same_creation(grant, found, sent) else "conflict")
            outcome.append((_shown(grant, found), status))
        self._touch(grant.patient_id, *(found for found, _ in results if not found.get("purged")))
        return outcome

    def edit_entry(self, grant: Grant, entry_id: str, changes: dict, *,
                   if_versions: frozenset[int] | None = None) -> dict:
        """Change the fields given, on the version named (PreconditionFailed if it is no longer current) or
        on the current one; deleted entries cannot be edited. An edit naming a version the entry has left by
        being deleted (on another phone) is PreconditionFailed with the tombstone, as GET shows it, so the app
        learns of the deletion; one naming no version, or the tombstone's own, is NotFound."""
        patient_id = grant.patient_id
        for _ in range(ATTEMPTS):
            current = self.entries.get(patient_id, entry_id)
            if current and current["deleted"] and if_versions is not None and _version(current) not in if_versions:
                raise _stale(grant, current)
            if not current or current["deleted"]:
                raise NotFound("no such diary entry")
            try:
                update = _normalised(_keeping_unseen_text(grant, current, _merged(current, changes)))
            except Invalid:
                if if_versions is not None and _version(current) not in if_versions:
                    raise _stale(grant, current) from None  # merged with another version: the app merges again
                raise
            if _unchanged(current, update):
                # Perhaps a retry of an edit whose marks were never written (the process stopped between):
                # mark again the days it touched, the one it may have moved the entry from included.
                self._touch(patient_id, current, {"recorded_at": current["moved_from"]}
                            if current.get("moved_from") else None)
                return _shown(grant, current)
            if if_versions is not None and _version(current) not in if_versions:
                raise _stale(grant, current)
            merged = {**current, **update}
            if bool(merged.get("phase")) != bool(merged.get("session_record_id")):
                raise Invalid("a before/after rating needs both phase and session_record_id",
                              errors={"phase": ["give phase and session_record_id together"]})
            moved = {"moved_from": current["recorded_at"]} if update.get("recorded_at", current["recorded_at"]) \
                != current["recorded_at"] else {}
            with self.changes.reservation(patient_id, self.entries) as held:
                updated = self.entries.update(patient_id, entry_id, {**update, **moved}, self._now_ms(),
                                              seq=held.first, version=_version(current))
            updated = held.as_stored(updated)
            if updated:
                self._touch(patient_id, current, updated)
                return _shown(grant, updated)
        raise Contended("the entry is being changed by someone else right now; try again")

    def delete_entry(self, grant: Grant, entry_id: str, *, if_versions: frozenset[int] | None = None) -> dict:
        """Soft-delete: the entry stays as a tombstone so other devices learn of the deletion when they sync.
        Deleting it again answers the tombstone (a retried deletion succeeds as the first did)."""
        patient_id = grant.patient_id
        for _ in range(ATTEMPTS):
            current = self.entries.get(patient_id, entry_id)
            if not current:
                raise NotFound("no such diary entry")
            if current["deleted"]:
                self._touch(patient_id, current)  # a retry finishes a deletion whose marks were never written
                return _shown(grant, current)
            if if_versions is not None and _version(current) not in if_versions:
                raise _stale(grant, current)
            with self.changes.reservation(patient_id, self.entries) as held:
                deleted = self.entries.soft_delete(patient_id, entry_id, self._now_ms(), seq=held.first,
                                                   version=_version(current))
            deleted = held.as_stored(deleted)
            if deleted:
                self._touch(patient_id, deleted)
                return _shown(grant, deleted)
        raise Contended("the entry is being changed by someone else right now; try again")

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
        """Entries created, edited or deleted after the cursor, oldest change first, and the cursor to
        continue from (companion.services.sync): the notes withheld from a caregiver not allowed them, whose
        cursor issued before the notes were granted or withdrawn is answered ResyncRequired."""
        page = self.changes.page(grant.patient_id, self.entries, cursor, limit, view=feed_view(grant))
        return page.with_items(_visible(grant, page.items))


def _merged(current: dict, changes: dict) -> dict:
    """An edit of the context or the pain form names the items it changes; the others stay as stored (an item
    sent as null is cleared; the context or form sent as null is removed). The form, so merged, must be whole
    and agree with itself (Invalid, naming the items at fault, if not)."""
    merged = dict(changes)
    if changes.get("context") is not None:
        stored = current.get("context") or {}
        merged["context"] = {item: stored.get(item) for item in CONTEXT_ITEMS} | changes["context"]
    if changes.get("bpi") is not None:
        stored = current.get("bpi") or {}
        sent = changes["bpi"]
        form = {item: sent.get(item, stored.get(item)) for item in SEVERITY_ITEMS}
        problems = {item: "Missing data for required field." for item, value in form.items() if value is None}
        problems = problems or bpi_severity_problems(**form)
        if problems:
            raise Invalid("the pain form is incomplete or contradicts itself",
                          errors={"bpi": {item: [reason] for item, reason in problems.items()}})
        merged["bpi"] = {**form, "interference": {**(stored.get("interference") or {}),
                                                  **(sent.get("interference") or {})}}
    return merged


def _keeping_unseen_text(grant: Grant, current: dict, changes: dict) -> dict:
    """A caller who may not read the patient's own words (the note, where the pain is, what they were doing:
    shown to them blank) changes the context around them, never the words themselves: otherwise editing the
    mood would erase what the patient wrote, and an edit would tell them whether a guess at it was right."""
    if "context" not in changes or sees_free_text(grant):
        return changes
    stored = current.get("context") or {}
    unseen = {path.split(".", 1)[1] for path in DIARY_FREE_TEXT if path.startswith("context.")}
    kept = {field: stored.get(field) for field in unseen}
    if changes["context"] is None and not any(kept.values()):
        return changes
    return {**changes, "context": {**(changes["context"] or {}), **kept}}


def _same_creation(grant: Grant, stored: dict, sent: dict) -> bool:
    """Whether ``sent`` is a re-send of what created ``stored``: judged on everything for a caller who reads
    the patient's own words, and on what they can see for one who does not (so that duplicate against conflict
    never tells them whether a guess at hidden words was right). Entries stored before creation digests were
    kept count as the same request; one stored before the second digest, for such a caller, as another."""
    if stored.get("created_hash") is None:
        return True
    if sees_free_text(grant):
        return stored["created_hash"] == sent["created_hash"]
    return stored.get("created_hash_shared") == sent["created_hash_shared"]


def _reused(grant: Grant, stored: dict) -> Conflict:
    return Conflict("this client_entry_id was already used for an entry with other content; see current",
                    errors={"client_entry_id": ["already used for other content"]},
                    current=_shown(grant, stored), version=_version(stored))


def _deleted_long_ago() -> Conflict:
    return Conflict("this client_entry_id belonged to an entry that was deleted longer ago than the sync window: "
                    "nothing was written", errors={"client_entry_id": ["belongs to a deleted entry"]})


def _stale(grant: Grant, current: dict) -> PreconditionFailed:
    return PreconditionFailed("the entry changed since that version; see current", current=_shown(grant, current),
                              version=_version(current))


def _visible(grant: Grant, entries: list[dict]) -> list[dict]:
    """A caregiver the patient has not allowed to read notes sees entries without their free text."""
    if sees_free_text(grant):
        return entries
    return [without_free_text(e, DIARY_FREE_TEXT) for e in entries]


def _shown(grant: Grant, entry: dict) -> dict:
    return _visible(grant, [entry])[0]
