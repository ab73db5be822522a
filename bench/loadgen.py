"""A small closed-loop HTTP load generator, run as its own process so it does not share the server's GIL.

python -m bench.loadgen URL [--header 'Name: value'] [--concurrency 16] [--seconds 10]
prints one JSON line: requests, requests per second (all, and answered 200), p50/p95/p99 latency, error count
(with --raw, every latency too, for a caller that adds runs together).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import httpx

from bench.common import percentiles


def run(url: str, headers: dict, concurrency: int, seconds: float, raw: bool = False) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        mine, failed = [], 0
        with httpx.Client(headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = http.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - started)
                failed += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {**summary(latencies, errors[0], elapsed, concurrency),
            **({"elapsed_s": elapsed, "latencies_s": latencies} if raw else {})}


def summary(latencies: list[float], errors: int, elapsed: float, concurrency: int) -> dict:
    """The figures of a closed loop's requests (their latencies in seconds, how many failed) over ``elapsed``."""
    return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1),
            "ok_rps": round((len(latencies) - errors) / elapsed, 1), "errors": errors,
            "concurrency": concurrency, "seconds": round(elapsed, 1), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--raw", action="store_true", help="also print every latency (s) and the exact elapsed time")
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    print(json.dumps(run(args.url, headers, args.concurrency, args.seconds, args.raw)))


if __name__ == "__main__":
    main()
