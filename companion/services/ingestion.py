"""Receiving TENS session records from a gateway: each record checked, stored once, acknowledged alone."""

from __future__ import annotations

from pymongo.database import Database

from companion.domain.errors import Forbidden, TooManyRequests
from companion.domain.sessions import check_record, device_events_for
from companion.store.accounts import now
from companion.store.devices import Devices
from companion.store.relationships import Gateways
from companion.store.sessions import SessionRecords
from companion.store.throttle import Counters


class Ingestion:
    def __init__(self, db: Database):
        self.db = db
        self.records = SessionRecords(db)
        self.devices = Devices(db)
        self.gateways = Gateways(db)

    def throttle(self, gateway_id: str, per_minute: int) -> None:
        """At most per_minute uploads a minute per gateway (shared by every web worker)."""
        count, wait = Counters(self.db).hit(f"upload:{gateway_id}", 60)
        if count > per_minute:
            raise TooManyRequests("too many uploads from this gateway; retry later", retry_after_s=wait)

    def patient_of(self, gateway_id: str) -> str:
        return self.gateways.get(gateway_id)["patient_id"]

    def require_bound(self, patient_id: str, serials: set[str]) -> None:
        """Every unit named must be bound to the gateway's patient, or nothing is taken."""
        bound = {d["_id"] for d in self.devices.col.find({"_id": {"$in": sorted(serials)}, "patient_id": patient_id},
                                                         {"_id": 1})}
        if serials - bound:
            raise Forbidden("this gateway may not write for one or more of these units")

    def receive(self, gateway_id: str, patient_id: str, records: list[dict]) -> list[dict]:
        """Store the valid new records; answer created / duplicate / rejected (with a reason) for each."""
        received_at = now()
        results: dict[str, dict] = {}
        docs = []
        for record in records:
            verdict = check_record(record, received_at=received_at)
            if not verdict.ok:
                results[record["record_id"]] = {"status": "rejected", "reason": verdict.reason}
                continue
            docs.append({**record, "_id": record.pop("record_id"), "patient_id": patient_id,
                         "gateway_id": gateway_id, "server_received_at": received_at})
        created, duplicates = self.records.insert_new(docs)
        stored = self.records.existing(sorted(duplicates)) if duplicates else {}
        for doc in docs:
            rid = doc["_id"]
            if rid in created:
                results[rid] = {"status": "created", "reason": None}
            elif stored.get(rid, {}).get("patient_id") != patient_id:
                results[rid] = {"status": "rejected", "reason": "conflicts with a record stored for another patient"}
            elif stored[rid].get("content_hash") != doc["content_hash"]:
                results[rid] = {"status": "duplicate", "reason": "already stored with different content; kept the first"}
            else:
                results[rid] = {"status": "duplicate", "reason": None}
        new_docs = [d for d in docs if d["_id"] in created]
        self.records.record_events([
            {"_id": f"{d['_id']}:{kind}", "patient_id": patient_id, "device_serial": d["device_serial"],
             "kind": kind, "at": d["started_at"], "record_id": d["_id"], "created_at": received_at}
            for d in new_docs for kind in device_events_for(d)
        ])
        self._touch_devices(new_docs, received_at)
        return [{"record_id": rid, **res} for rid, res in results.items()]

    def _touch_devices(self, docs: list[dict], received_at) -> None:
        latest: dict[str, dict] = {}
        for d in docs:
            if d["device_serial"] not in latest or d["device_seq"] > latest[d["device_serial"]]["device_seq"]:
                latest[d["device_serial"]] = d
        for serial, d in latest.items():
            self.devices.col.update_one({"_id": serial}, {"$set": {
                "status.last_sync_at": received_at, "status.last_seen_at": received_at,
                "status.battery_pct": d["battery_pct"], "status.last_record_seq": d["device_seq"]}})

    def device_status(self, patient_id: str, reports: list[dict]) -> None:
        self.require_bound(patient_id, {r["serial"] for r in reports})
        for r in reports:
            self.devices.col.update_one({"_id": r["serial"], "patient_id": patient_id}, {"$set": {
                "status.battery_pct": r["battery_pct"], "status.firmware": r["firmware"],
                "status.last_seen_at": r["last_seen_at"], "status.last_error": r.get("last_error")}})
