"""Ingestion: session records through the API vs raw insert_many of the same documents.

The API side: G gateways (each paired to its own patient, one TENS unit each) post batches of 500
to POST /api/v1/gateway/session-records concurrently, against gunicorn (2 workers × 4 threads).
The floor: G threads insert_many the same documents, 500 at a time, into a collection with the same
indexes on the same server. Each size is cut into slices (whole batches) and the two sides alternate
slice by slice (API then raw, raw then API, ...), each side's time summed, so that load from other work
on the machine falls on both alike; the spread of the per-slice ratios shows how steady that was.
Usage: python -m bench.ingestion 10000 100000 1000000 [--gateways 4] [--slices 10]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from pymongo import IndexModel

from bench.common import app_env, database, gunicorn, mongo, write_result
from bench.world import paired_gateways

BATCH = 500
RECORDS_PATH = "/api/v1/gateway/session-records"
WINDOW = timedelta(days=25)


def item(serial: str, seq: int, count: int, base: datetime) -> dict:
    """One record as a gateway uploads it (device_gateway.capture.CapturedRecord.as_api_item)."""
    started = base + WINDOW * (seq / (count + 1))
    iso = started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "record_id": f"{serial}:{seq}", "device_serial": serial, "device_seq": seq,
        "device_started_at": iso, "started_at": iso, "clock_offset_s": 0.0, "clock_status": "ok",
        "gateway_received_at": iso, "duration_s": 1800, "programme": 1 + seq % 8, "frequency_hz": 80,
        "pulse_width_us": 200, "intensity_mean_ma": 18.5, "intensity_peak_ma": 24.0,
        "end_reason": "completed", "battery_pct": 80,
        "content_hash": hashlib.sha256(f"{serial}:{seq}".encode()).hexdigest(),
    }


def stored(record: dict, patient_id: str, gateway_id: str, now: datetime) -> dict:
    """The same record as the server stores it in session_records (see docs: data contract), with what the
    server derives for it (its placement in time, findings, owner and counting: companion.services.session_times),
    so that the floor writes documents of the same size."""
    doc = {k: v for k, v in record.items() if k != "record_id"}
    doc["_id"] = record["record_id"]
    for key in ("device_started_at", "started_at", "gateway_received_at"):
        doc[key] = datetime.fromisoformat(doc[key])
    started = doc["started_at"]
    return {**doc, "patient_id": patient_id, "gateway_id": gateway_id, "server_received_at": now,
            "delivered_for": patient_id, "reported_started_at": started, "sync_key": None, "gateway_offset_s": None,
            "resolution": None, "started_earliest": started - timedelta(minutes=1),
            "started_latest": started + timedelta(minutes=1), "time_quality": "exact", "time_basis": "gateway",
            "unit_offset_s": 0.0, "candidate_patient_ids": [patient_id], "local_date": started.date().isoformat(),
            "flags": [], "held": False, "counts": True, "counted_minutes": 30.0, "overlaps": None}


def batches(serial: str, count: int, base: datetime, first: int = 1, last: int | None = None):
    """Batches of `count` records spread over the window; only sequence numbers first..last if given."""
    last = count if last is None else last
    for start in range(first, last + 1, BATCH):
        yield [item(serial, seq, count, base) for seq in range(start, min(start + BATCH, last + 1))]


def slices(per_gateway: int, wanted: int) -> list[tuple[int, int]]:
    """Sequence ranges (first, last) cutting one gateway's records into at most `wanted` runs of whole batches."""
    batch_count = -(-per_gateway // BATCH)
    per_slice = -(-batch_count // min(wanted, batch_count)) * BATCH
    return [(first, min(first + per_slice - 1, per_gateway)) for first in range(1, per_gateway + 1, per_slice)]


def warm_up(url: str, gateway, base: datetime) -> None:
    """Every gunicorn worker thread serves a few small uploads first (connections, first-request paths),
    from a gateway of its own whose records are not counted."""
    warm = [b[:50] for b in batches(gateway.serial, 16 * BATCH, base)]

    def post(http, batch) -> None:
        # One unit's batches are placed one at a time (companion.store.sessions.UnitClaims): the others wait.
        while (response := http.post(RECORDS_PATH, json={"records": batch})).status_code == 503:
            time.sleep(float(response.headers.get("Retry-After", "1")))
        response.raise_for_status()

    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=url, timeout=120, headers=gateway.headers) as http:
        list(pool.map(lambda batch: post(http, batch), warm))


def through_api(url: str, gateways: list, per_gateway: int, base: datetime, seqs: tuple[int, int],
                tally: dict) -> float:
    lock = threading.Lock()
    retries, statuses = tally.setdefault("retries", [0]), tally.setdefault("statuses", {})

    def upload(gateway) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=gateway.headers) as http:
            for batch in batches(gateway.serial, per_gateway, base, *seqs):
                while True:
                    response = http.post(RECORDS_PATH, json={"records": batch})
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code in (429, 503):
                        retries[0] += 1
                        time.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    response.raise_for_status()
                    break

    started = time.perf_counter()
    with ThreadPoolExecutor(len(gateways)) as pool:
        list(pool.map(upload, gateways))
    return time.perf_counter() - started


def raw_insert_many(collection, gateways: list, per_gateway: int, base: datetime, seqs: tuple[int, int]) -> float:
    now = datetime.now(UTC)

    def insert(gateway) -> None:
        for batch in batches(gateway.serial, per_gateway, base, *seqs):
            collection.insert_many([stored(r, gateway.patient_id, gateway.id, now) for r in batch], ordered=False)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(gateways)) as pool:
        list(pool.map(insert, gateways))
    return time.perf_counter() - started


def copy_indexes(source, target) -> None:
    for name, spec in source.index_information().items():
        if name != "_id_":
            target.create_indexes([IndexModel(spec["key"], name=name, unique=spec.get("unique", False))])


def run_size(uri: str, total: int, gateway_count: int, slice_count: int) -> dict:
    per_gateway = total // gateway_count
    total = per_gateway * gateway_count
    base = datetime.now(UTC) - WINDOW - timedelta(hours=1)
    db_name = f"bench_ingest_{total}"
    client = mongo(uri)
    client.drop_database(db_name)
    client.drop_database(db_name + "_raw")
    try:
        *gateways, warm_gateway = paired_gateways(uri, db_name, gateway_count + 1)
        with gunicorn("companion.wsgi:app", app_env(uri, db_name)) as server:
            probe = httpx.post(server.url + RECORDS_PATH, json={"records": []}, headers=gateways[0].headers)
            if probe.status_code in (404, 405):
                return {"records": total, "available": False,
                        "reason": f"POST {RECORDS_PATH} is not on this branch yet"}
            records = client[db_name].session_records
            raw = client[db_name + "_raw"].session_records
            copy_indexes(records, raw)
            warm_up(server.url, warm_gateway, base)
            raw.insert_many([stored(r, warm_gateway.patient_id, warm_gateway.id, datetime.now(UTC))
                             for r in batches(warm_gateway.serial, 500, base).__next__()])
            tally: dict = {}
            times: dict[str, list[float]] = {"api": [], "raw": []}
            for index, seqs in enumerate(slices(per_gateway, slice_count)):
                for side in ("api", "raw") if index % 2 == 0 else ("raw", "api"):
                    times[side].append(through_api(server.url, gateways, per_gateway, base, seqs, tally)
                                       if side == "api" else raw_insert_many(raw, gateways, per_gateway, base, seqs))
        stored_count = records.count_documents({"device_serial": {"$in": [g.serial for g in gateways]}})
        api_s, raw_s = sum(times["api"]), sum(times["raw"])
        in_order = [r / a for a, r in zip(times["api"], times["raw"], strict=True)]
        per_slice = sorted(in_order)
        return {"records": total, "available": True, "gateways": gateway_count, "batch": BATCH,
                "slices": len(per_slice), "api_seconds": round(api_s, 2), "api_records_per_s": round(total / api_s),
                "raw_seconds": round(raw_s, 2), "raw_records_per_s": round(total / raw_s),
                "ratio_api_to_raw": round(raw_s / api_s, 3),
                "slice_ratio_min": round(per_slice[0], 3), "slice_ratio_median": round(statistics.median(per_slice), 3),
                "slice_ratio_max": round(per_slice[-1], 3), "slice_ratios": [round(x, 3) for x in in_order],
                "stored": stored_count,
                "api_retries": tally["retries"][0], "api_statuses": tally["statuses"]}
    finally:
        client.drop_database(db_name)
        client.drop_database(db_name + "_raw")
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--slices", type=int, default=10)
    args = parser.parse_args(argv)
    with database() as uri:
        runs = [run_size(uri, size, args.gateways, args.slices) for size in args.sizes]
    write_result("ingestion", {"runs": runs})


if __name__ == "__main__":
    main()
