"""Run the real app under gunicorn (several worker processes) for tests that need shared state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.ferretdb import ROOT, free_port


class Gunicorn:
    def __init__(self, env: dict, workers: int = 2, log_dir: Path | None = None):
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.workers = workers
        self.log_path = (log_dir or Path("/tmp")) / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_s: float = 30) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(self.workers), "--threads", "4",
             "--worker-class", "gthread", "--bind", f"127.0.0.1:{self.port}", "companion.wsgi:app"],
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
