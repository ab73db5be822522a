"""Start and stop a real FerretDB (MongoDB wire protocol, SQLite storage) for the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pymongo

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferretdb_binary() -> str:
    explicit = os.environ.get("FERRETDB_BIN")
    if explicit and Path(explicit).exists():
        return explicit
    built = ROOT / "var" / "bin" / "ferretdb"
    if built.exists():
        return str(built)
    out = subprocess.run([str(ROOT / "scripts" / "ensure-ferretdb.sh")], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip().splitlines()[-1]


class FerretServer:
    """One FerretDB process with its own data directory; can be killed and restarted on the same port."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = open(self.data_dir / "ferretdb.log", "ab")  # noqa: SIM115 - closed in stop()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, wait_s: float = 30) -> None:
        self.proc = subprocess.Popen(
            [ferretdb_binary(), "--handler=sqlite", f"--sqlite-url=file:{self.data_dir}/",
             f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.data_dir}",
             "--telemetry=disable", "--debug-addr=-", "--log-level=warn"],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"FerretDB exited early; see {self.data_dir / 'ferretdb.log'}")
            try:
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=300) as c:
                    c.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.1)
        raise RuntimeError("FerretDB did not become ready")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
