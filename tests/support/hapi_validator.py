"""HAPI FHIR's R4 validator for the export tests: a ten-line Java program (tests/support/hapi/) built by
Maven from Maven Central on first use and cached under var/hapi-validator/ (its own local repository, so
nothing lands in ~/.m2). The first build downloads about 160 MB (the test took 70 s that first time here);
later runs only start the JVM (15-25 s to load the R4 definitions and validate).

No Java, no Maven or no network makes the test fail with a one-line reason, never skip.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).resolve().parent / "hapi"
CACHE = ROOT / "var" / "hapi-validator"
BUILD_TIMEOUT_S = 900
RUN_TIMEOUT_S = 600


def _stamp() -> str:
    digest = hashlib.sha256()
    for name in ("pom.xml", "ValidateFhir.java"):
        digest.update((SOURCE / name).read_bytes())
    return digest.hexdigest()[:16]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is needed to build HAPI FHIR's validator (Java 17 and Maven 3.8: "
                           f"apt-get install openjdk-17-jdk-headless maven)")
    return found


def validator_command() -> list[str]:
    """The java command line that runs the validator, building it first when the sources changed."""
    ready = CACHE / f"classpath-{_stamp()}.txt"
    if not ready.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes build it once
            if not ready.exists():
                target, classpath = CACHE / "target", CACHE / "classpath.part"
                result = subprocess.run(
                    [_tool("mvn"), "-B", "-q", "-f", str(SOURCE / "pom.xml"), f"-Dmaven.repo.local={CACHE / 'm2'}",
                     f"-Dvalidator.build={target}", "compile", "dependency:build-classpath",
                     f"-Dmdep.outputFile={classpath}"],
                    capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
                if result.returncode != 0:
                    raise RuntimeError("building HAPI FHIR's validator with Maven failed:\n"
                                       + (result.stdout + result.stderr)[-3000:])
                ready.write_text(f"{target / 'classes'}:{classpath.read_text().strip()}")
    return [_tool("java"), "-cp", ready.read_text(), "ValidateFhir"]


def validate(paths: list[Path]) -> list[list[dict]]:
    """The issues HAPI's validator finds in each file (severity, code, diagnostics, location), in order."""
    result = subprocess.run([*validator_command(), *map(str, paths)], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError("HAPI FHIR's validator did not run:\n" + result.stderr[-3000:])
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(paths), result.stdout[-2000:]
    return [outcome.get("issue", []) for outcome in outcomes]
