"""Run a WSGI app (by default the real Companion app) under gunicorn with several worker processes:
for tests that need shared state across workers, and for the benchmarks (app and floor alike)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ferretdb import ROOT, free_port


class Gunicorn:
    def __init__(self, env: dict, workers: int = 2, log_dir: Path | None = None, *,
                 app: str = "companion.wsgi:app", threads: int = 4, log_level: str | None = None):
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.workers, self.threads, self.app, self.log_level = workers, threads, app, log_level
        self.log_path = (log_dir or Path("/tmp")) / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_s: float = 30) -> None:
        """Start gunicorn and wait until the app answers /readyz."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        level = ["--log-level", self.log_level] if self.log_level else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(self.workers), "--threads", str(self.threads),
             "--worker-class", "gthread", "--bind", f"127.0.0.1:{self.port}", *level, self.app],
            cwd=ROOT, env=self.env, stdout=log, stderr=log,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
