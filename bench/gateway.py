"""Gateway: frames parsed and records buffered per second, and memory with a 1,000,000-record backlog.

Parse: decode_record + capture for each frame, vs struct-unpacking the same frames (floor).
Buffer: RecordBuffer.store in runs of 50 records (what one burst of notifications brings), on an
empty buffer and on top of the backlog, vs plain executemany of the same rows into a table with the
same pragmas (WAL, synchronous=FULL) in the same transactions (floor).
Memory: RSS and tracemalloc peak of filling the backlog, then of reading one upload batch from it.
Usage: python -m bench.gateway [--backlog 1000000] [--sample 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import write_result

RUN = 50
SERIAL = "CTU-BENCH1"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def frames(count: int, start_seq: int = 1) -> list[bytes]:
    from device_gateway.profiles.companion_tens import EndReason, SessionRecord, encode_record

    base = int((datetime.now(UTC) - timedelta(days=20)).timestamp())
    return [encode_record(SessionRecord(seq=seq, device_started_at=base + seq * 60, duration_s=1800, programme=1,
                                        frequency_hz=80, pulse_width_us=200, intensity_mean_dma=185,
                                        intensity_peak_dma=240, end_reason=EndReason(0), battery_pct=80))
            for seq in range(start_seq, start_seq + count)]


def parse(sample: list[bytes]):
    from device_gateway.capture import capture
    from device_gateway.profiles.companion_tens import _RECORD, decode_record

    now = datetime.now(UTC)
    started = time.perf_counter()
    for frame in sample:
        _RECORD.unpack_from(frame)
    floor_s = time.perf_counter() - started
    started = time.perf_counter()
    captured = [capture(SERIAL, decode_record(frame), frame, 0.0, now) for frame in sample]
    return captured, time.perf_counter() - started, floor_s


def store_rate(buffer, captured: list) -> float:
    started = time.perf_counter()
    for index in range(0, len(captured), RUN):
        buffer.store(SERIAL, captured[index:index + RUN])
    return len(captured) / (time.perf_counter() - started)


def floor_rate(path: Path, captured: list) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE records (position INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT UNIQUE, "
               "payload TEXT, size_bytes INTEGER)")
    started = time.perf_counter()
    for index in range(0, len(captured), RUN):
        rows = []
        for record in captured[index:index + RUN]:
            payload = json.dumps(record.as_api_item(), separators=(",", ":"))
            rows.append((record.record_id, payload, len(payload)))
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO records(record_id, payload, size_bytes) VALUES (?,?,?)", rows)
        db.execute("COMMIT")
    rate = len(captured) / (time.perf_counter() - started)
    db.close()
    return rate


def fill_backlog(buffer, total: int, chunk: int = 20_000) -> dict:
    """Capture and store `total` records the way the link does, measuring memory as the backlog grows."""
    from device_gateway.capture import capture
    from device_gateway.profiles.companion_tens import decode_record

    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(1, total + 1, chunk):
        run = [capture(SERIAL, decode_record(f), f, 0.0, now) for f in frames(min(chunk, total - start + 1), start)]
        for index in range(0, len(run), RUN * 20):
            buffer.store(SERIAL, run[index:index + RUN * 20])
    seconds = time.perf_counter() - started
    return {"fill_seconds": round(seconds, 1), "fill_records_per_s": round(total / seconds)}


def main(argv: list[str] | None = None) -> None:
    from device_gateway.buffer import RecordBuffer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    args = parser.parse_args(argv)
    sample = frames(args.sample)
    captured, parse_s, unpack_s = parse(sample)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        tmp = Path(tmp)
        floor = floor_rate(tmp / "floor.sqlite", captured)
        empty = RecordBuffer(tmp / "empty.sqlite")
        empty_rate = store_rate(empty, captured)
        empty.close()
        rss_before = rss_mib()
        backlog = RecordBuffer(tmp / "backlog.sqlite")
        fill = fill_backlog(backlog, args.backlog)
        rss_filled = rss_mib()
        more = parse(frames(args.sample, args.backlog + 1))[0]
        tracemalloc.start()
        backlog.store(SERIAL, more[:RUN])
        _, store_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        backlog_rate = store_rate(backlog, more[RUN:])
        tracemalloc.start()
        started = time.perf_counter()
        batch = backlog.pending(500)
        pending_s = time.perf_counter() - started
        _, batch_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        count = backlog.pending_count()
        file_mib = sum(p.stat().st_size for p in tmp.glob("backlog.sqlite*")) / 2**20
        backlog.close()
    write_result("gateway", {
        "parse_records_per_s": round(args.sample / parse_s), "parse_floor_unpack_per_s": round(args.sample / unpack_s),
        "parse_ratio_to_floor": round(unpack_s / parse_s, 3),
        "buffer_records_per_s_empty": round(empty_rate), "buffer_records_per_s_at_backlog": round(backlog_rate),
        "buffer_floor_executemany_per_s": round(floor),
        "buffer_ratio_to_floor_empty": round(empty_rate / floor, 3),
        "buffer_ratio_to_floor_at_backlog": round(backlog_rate / floor, 3),
        "backlog_records": count, "backlog_file_mib": round(file_mib, 1), **fill,
        "rss_mib_before_backlog": rss_before, "rss_mib_with_backlog": rss_filled,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "read_upload_batch_ms": round(pending_s * 1000, 1), "read_upload_batch_items": len(batch),
        "read_upload_batch_tracemalloc_peak_mib": round(batch_peak / 2**20, 2),
        "store_run_at_backlog_tracemalloc_peak_mib": round(store_peak / 2**20, 2),
    })


if __name__ == "__main__":
    main()
