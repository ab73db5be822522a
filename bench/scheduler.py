"""Scheduler: the peak minute (bench/peak_minute.py) and the nightly adherence computation for
10,000 patients × 90 days (bench/nightly.py), each at growing sizes to show how it scales.

Runs what exists: a part whose code has not landed is reported as not available, with the reason.
Usage: python -m bench.scheduler [--patients 1000 10000] [--days 90]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench.common import ROOT, write_result
from bench.peak_minute import SECTION as PEAK_SECTION


def peak_minute() -> dict:
    """Run bench/peak_minute.py at PEAK_SIZES (default 2,000, 20,000 and 100,000 due reminders)."""
    sizes = os.environ.get("PEAK_SIZES", "2000,20000,100000")
    done = subprocess.run([sys.executable, "-m", "bench.peak_minute", "--sizes", sizes, "--no-write"], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        return {"available": False, "reason": done.stderr.strip()[-2000:]}
    table = done.stdout[done.stdout.index(PEAK_SECTION) + len(PEAK_SECTION):].strip()
    return {"available": True, "table": table}


def nightly(patients: list[int], days: int) -> dict:
    from bench.nightly import bench_nightly

    return {"available": True, "runs": [bench_nightly(count, days) for count in patients]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args(argv)
    write_result("scheduler", {"peak_minute": peak_minute(), "nightly_adherence": nightly(args.patients, args.days)})


if __name__ == "__main__":
    main()
