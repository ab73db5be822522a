"""Cost of sealing the gateway buffer: records/s stored and read back, plaintext buffer vs sealed buffer.

The plaintext buffer is the last version before sealing (commit b9c4b9e), loaded from git, so both
run in the same process on the same records. Stores go in runs of 40, as the link commits them.

    python -m bench.gateway_buffer_sealing [RECORDS] [ROUNDS]
"""

import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session

PLAINTEXT_COMMIT = "b9c4b9e"
ROOT = Path(__file__).resolve().parents[1]
RUN = 40


def plaintext_buffer_class(workdir: Path) -> type:
    """RecordBuffer as it was before sealing."""
    source = subprocess.run(["git", "show", f"{PLAINTEXT_COMMIT}:device_gateway/buffer.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = workdir / "plaintext_buffer.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("plaintext_buffer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RecordBuffer


def records(count: int) -> list:
    received = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for seq in range(1, count + 1):
        session = simulated_session(seq, 1_760_000_000 + seq * 600)
        out.append(capture("CT-000001", session, encode_record(session), 0.0, received))
    return out


def measure(buffer_class: type, path: Path, items: list) -> tuple[float, float]:
    buffer = buffer_class(path)
    started = time.perf_counter()
    for start in range(0, len(items), RUN):
        buffer.store("CT-000001", items[start : start + RUN])
    stored = time.perf_counter() - started
    started = time.perf_counter()
    while batch := buffer.pending(500):
        buffer.mark_sent([p.record_id for p in batch])
    drained = time.perf_counter() - started
    buffer.close()
    return len(items) / stored, len(items) / drained


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    items = records(count)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        plaintext = plaintext_buffer_class(workdir)
        results: dict[str, list[tuple[float, float]]] = {"plaintext": [], "sealed": []}
        for n in range(rounds):
            results["plaintext"].append(measure(plaintext, workdir / f"plain-{n}.db", items))
            results["sealed"].append(measure(RecordBuffer, workdir / f"sealed-{n}.db", items))
    print(f"{count} records, runs of {RUN}, {rounds} rounds, best of each (records/s):")
    for name, rows in results.items():
        print(f"  {name:9}  store {max(r[0] for r in rows):8.0f}   read+ack {max(r[1] for r in rows):8.0f}")


if __name__ == "__main__":
    main()
