"""Shared pieces of the benchmarks: the database server, gunicorn, the machine, timing and results.

Every benchmark writes its figures as JSON to var/bench/<name>.json; bench/report.py turns them all
into bench/RESULTS.md. Each figure is paired with a floor measured in the same run on the same
machine (raw insert_many, a bare Flask endpoint, ...), so the ratio means something elsewhere too.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pymongo

from tests.support.ferretdb import ROOT, FerretServer, ferretdb_binary
from tests.support.gunicorn import Gunicorn

OUT = ROOT / "var" / "bench"
SECRET = "b" * 48


def write_result(name: str, figures: dict) -> Path:
    """Store one benchmark's figures for the report."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"name": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                # Other work on the machine skews every figure: keep the load with them.
                                "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
                                **figures}, indent=1))
    print(json.dumps({name: figures}, indent=1), flush=True)
    return path


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 of latencies in seconds, reported in milliseconds."""
    if not samples:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p95_ms": round(cuts[94] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2)}


def machine() -> dict:
    """What the figures were measured on."""
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([ferretdb_binary(), "--version"], capture_output=True, text=True).stdout
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "ferretdb": version.splitlines()[0].replace("version:", "").strip() if version else "?",
            "database": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "FerretDB (SQLite) on loopback"}


@contextmanager
def database():
    """A MongoDB-wire server for one benchmark: MONGODB_URI if set, else a fresh FerretDB."""
    explicit = os.environ.get("MONGODB_URI")
    if explicit:
        yield explicit
        return
    with tempfile.TemporaryDirectory(prefix="bench-ferretdb-") as data:
        server = FerretServer(Path(data))
        server.start()
        try:
            yield server.uri
        finally:
            server.stop()


@contextmanager
def gunicorn(app: str, env: dict, workers: int = 2, threads: int = 4):
    """gunicorn serving one WSGI app, with the same worker setup for the app and for the floors."""
    server = Gunicorn(env, workers, OUT, app=app, threads=threads, log_level="warning")
    server.start(wait_s=60)
    try:
        yield server
    finally:
        server.stop()


def app_env(uri: str, db_name: str) -> dict:
    """Environment for the real app under gunicorn in a benchmark."""
    return {"MONGODB_URI": uri, "MONGODB_DB": db_name, "COMPANION_SECRET_KEY": SECRET,
            "COMPANION_PASSWORD_MEMORY_KIB": "1024", "COMPANION_LOG_LEVEL": "WARNING",
            # The per-gateway upload limit (60 batches/min) would measure the limiter, not the ingestion.
            "COMPANION_GATEWAY_UPLOADS_PER_MIN": "100000",
            # Every thread of the server (2 processes x 4) may take a gateway upload: the ingestion figures measure
            # ingestion, not the budget (bench/flood.py measures the budget).
            "COMPANION_GATEWAY_UPLOAD_CONCURRENCY": "8"}


def mongo(uri: str) -> pymongo.MongoClient:
    return pymongo.MongoClient(uri, tz_aware=True)
