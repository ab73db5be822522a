"""Receiving TENS session records and unit status from a gateway: each record checked, stored once,
acknowledged alone.

Receiving a batch is three writes: the records, the device events they raise (battery low, electrode
off, overload) and the units' status. The last two are derived from the records on every attempt,
from every record that is stored with the same content (new now, or stored by an earlier attempt), so a
gateway's retry after a crash between the writes finishes what the first attempt left undone: the
events have ids derived from their record, the status update only moves forward, and nothing is doubled.

Each batch's records take the patient's next change numbers (companion.services.sync), so the app's
session feed hands them out however late they arrive.
"""

from __future__ import annotations

from datetime import datetime

from companion.clock import Clock, now
from companion.domain.errors import Forbidden, TooManyRequests
from companion.domain.sessions import check_record, device_events_for
from companion.services.sync import Changes
from companion.services.telemetry import NoTelemetry, Telemetry
from companion.settings import Settings
from companion.store.stores import Stores


class Ingestion:
    def __init__(self, settings: Settings, stores: Stores, clock: Clock = now, *,
                 telemetry: Telemetry | None = None, changes: Changes | None = None):
        self.settings = settings
        self.telemetry = telemetry or NoTelemetry()
        self.changes = changes or Changes(stores, clock)
        self.records = stores.session_records
        self.events = stores.device_events
        self.devices = stores.devices
        self.counters = stores.counters
        self.clock = clock

    def _throttle(self, gateway_id: str) -> None:
        """At most ``gateway_uploads_per_min`` uploads a minute per gateway (shared by every web worker)."""
        count, wait = self.counters.hit(f"upload:{gateway_id}", 60)
        if count > self.settings.gateway_uploads_per_min:
            raise TooManyRequests("too many uploads from this gateway; retry later", retry_after_s=wait)

    def _require_bound(self, patient_id: str, serials: set[str]) -> None:
        """Every unit named must be bound to the gateway's patient, or nothing is taken."""
        if serials - self.devices.bound_among(serials, patient_id):
            raise Forbidden("this gateway may not write for one or more of these units")

    def receive(self, gateway_id: str | None, patient_id: str, records: list[dict],
                named_serials: set[str], *, refused_by_schema: int = 0) -> list[dict]:
        """Store the valid new records of a batch; answer created / duplicate / rejected (with a reason) for
        each. ``named_serials`` are every unit the batch names, valid records or not: all must be bound.
        ``gateway_id`` is None for history imported without a gateway (the demo's), which is not throttled.
        ``refused_by_schema`` counts the batch's records the HTTP layer already rejected (for the metrics)."""
        if gateway_id is not None:
            self._throttle(gateway_id)
        self._require_bound(patient_id, named_serials)
        received_at = self.clock()
        results: dict[str, dict] = {}
        docs = []
        for record in records:
            verdict = check_record(record, received_at=received_at)
            if not verdict.ok:
                results[record["record_id"]] = {"status": "rejected", "reason": verdict.reason}
                continue
            docs.append({**{k: v for k, v in record.items() if k != "record_id"}, "_id": record["record_id"],
                         "patient_id": patient_id, "gateway_id": gateway_id, "server_received_at": received_at})
        if docs:
            with self.changes.stamp(patient_id, self.records, len(docs)) as first:
                created, duplicates = self.records.insert_new([{**d, "seq": first + n} for n, d in enumerate(docs)])
        else:
            created, duplicates = set(), set()
        stored = self.records.by_ids(duplicates, {"patient_id": 1, "content_hash": 1}) if duplicates else {}
        kept = []
        for doc in docs:
            rid = doc["_id"]
            if rid in created:
                results[rid] = {"status": "created", "reason": None}
                kept.append(doc)
            elif stored.get(rid, {}).get("patient_id") != patient_id:
                results[rid] = {"status": "rejected", "reason": "conflicts with a record stored for another patient"}
            elif stored[rid].get("content_hash") != doc["content_hash"]:
                results[rid] = {"status": "duplicate", "reason": "already stored with different content; kept the first"}
            else:
                results[rid] = {"status": "duplicate", "reason": None}
                kept.append(doc)
        self._derive(patient_id, kept, received_at)
        for result in ("created", "duplicate", "rejected"):
            count = sum(1 for r in results.values() if r["status"] == result)
            self.telemetry.records_received(result, count + (refused_by_schema if result == "rejected" else 0))
        return [{"record_id": rid, **res} for rid, res in results.items()]

    def _derive(self, patient_id: str, docs: list[dict], received_at: datetime) -> None:
        """The secondary writes of stored records: their device events and their units' status."""
        self.events.record([
            {"_id": f"{d['_id']}:{kind}", "patient_id": patient_id, "device_serial": d["device_serial"],
             "kind": kind, "at": d["started_at"], "record_id": d["_id"], "created_at": received_at}
            for d in docs for kind in device_events_for(d)
        ])
        latest: dict[str, dict] = {}
        for d in docs:
            if d["device_serial"] not in latest or d["device_seq"] > latest[d["device_serial"]]["device_seq"]:
                latest[d["device_serial"]] = d
        for serial, d in latest.items():
            self.devices.note_upload(serial, received_at=received_at, battery_pct=d["battery_pct"],
                                     last_record_seq=d["device_seq"])

    def device_status(self, patient_id: str, reports: list[dict]) -> None:
        """A gateway's report on its units: battery, firmware, last contact and last error."""
        self._require_bound(patient_id, {r["serial"] for r in reports})
        for r in reports:
            self.devices.note_status(r["serial"], patient_id, {
                "battery_pct": r["battery_pct"], "firmware": r["firmware"], "last_seen_at": r["last_seen_at"],
                "last_error": r.get("last_error")})
