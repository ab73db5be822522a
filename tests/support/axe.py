"""axe-core for the browser tests, fetched from the npm registry on first use and cached under var/.

The script is not committed: it is 550 kB of generated JavaScript, released under MPL-2.0, and a pinned
version with its registry checksum gives the same bytes on every machine. `npm pack` downloads the
published tarball (or takes it from npm's own cache); its SHA-512 must match the registry's integrity
string below before anything is unpacked. No network and no npm make the test fail, never skip.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

AXE_VERSION = "4.14.1"
# `npm view axe-core@4.14.1 dist.integrity`
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
CACHE = Path(__file__).resolve().parents[2] / "var" / "cache" / f"axe-core-{AXE_VERSION}"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def axe_source() -> str:
    """The text of axe.min.js, downloading and checking the pinned package the first time."""
    script = CACHE / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed once to fetch axe-core for the accessibility test (apt-get install npm)")
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE.parent) as work:
            subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--silent", "--pack-destination", work],
                           check=True, capture_output=True, timeout=300)
            tarball = Path(work) / f"axe-core-{AXE_VERSION}.tgz"
            if _integrity(tarball) != AXE_INTEGRITY:
                raise RuntimeError(f"axe-core {AXE_VERSION} from the registry does not match its pinned checksum")
            with tarfile.open(tarball) as archive:
                for name in ("axe.min.js", "LICENSE"):
                    member = archive.extractfile(f"package/{name}")
                    assert member is not None
                    (Path(work) / name).write_bytes(member.read())
            shutil.move(Path(work) / "LICENSE", CACHE / "LICENSE")
            shutil.move(Path(work) / "axe.min.js", script)  # last, so a complete file means a complete cache
    return script.read_text(encoding="utf-8")


def serious_violations(page) -> tuple[list[dict], list[dict]]:
    """Run axe on the page as it is; (critical or serious violations, every violation)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    violations = result["violations"]
    return [v for v in violations if v["impact"] in ("critical", "serious")], violations


def describe(violations: list[dict]) -> str:
    """One line per violation and node, for an assertion message."""
    lines = []
    for v in violations:
        for node in v["nodes"][:5]:
            lines.append(f"{v['impact']} {v['id']}: {node['target']} {node.get('failureSummary', '')!r:.200}")
    return "\n".join(lines)
