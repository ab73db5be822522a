"""Scheduler: the peak minute (bench/peak_minute.py) and the nightly adherence computation for
10,000 patients × 90 days (bench/nightly.py), each at growing sizes to show how it scales.

Runs what exists: a part whose code has not landed is reported as not available, with the reason.
Usage: python -m bench.scheduler [--patients 1000 10000] [--days 90]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT, write_result


def peak_minute() -> dict:
    script = ROOT / "bench" / "peak_minute.py"
    if not script.exists():
        return {"available": False, "reason": "bench/peak_minute.py (scheduler area) is not on this branch yet"}
    done = subprocess.run([sys.executable, "-m", "bench.peak_minute"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    return {"available": done.returncode == 0, "output": done.stdout.strip()[-4000:],
            **({} if done.returncode == 0 else {"reason": done.stderr.strip()[-2000:]})}


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
