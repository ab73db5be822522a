"""The scheduler's peak minute: N reminders due at once, queued and pushed through the real firebase-admin.

For each size N the bench builds N patients with one phone and one reminder occurrence due now, then
measures, against the same FerretDB (or MONGODB_URI) and the loopback FCM emulator (a subprocess):

- floor: the emulator's raw throughput, ``messaging.send_each`` of N minimal messages in chunks of 500;
- peak: ``dispatch_due_reminders`` (N outbox inserts) then ``send_push`` (claim, send, settle) until done;
- also the database floor: ``insert_many`` of N outbox-sized documents.

It reports peak time / send_each time and how that grows with N, and writes the figures into
bench/RESULTS.md under "Scheduler peak minute". Sizes: ``--sizes 2000,20000,100000`` (default 2000).
Sending a size starts no new dispatch pass after ``--budget-s`` (default 900 s); the table then says how far it got.
Run: ``FERRETDB_BIN=... python -m bench.peak_minute --sizes 2000,20000``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firebase_admin import messaging
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from bench.common import machine
from companion.notify.push import PushSender
from companion.services.container import Services
from companion.services.push_delivery import PER_PASS, OutboxDispatcher
from companion.settings import load_settings
from companion.store.db import ensure_indexes, make_client
from tests.support.due_reminders import CHUNK, seed_due_reminders
from tests.support.ferretdb import FerretServer, free_port

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Scheduler peak minute"


@dataclass
class Figures:
    size: int
    send_each_s: float
    insert_many_s: float
    dispatch_s: float
    send_s: float
    delivered: int
    delivered_first_minute: int
    complete: bool
    stopped_by: str = ""
    senders: int = 1
    cpu_s: dict[str, float] | None = None  # CPU seconds spent while sending, by process (when known)

    @property
    def peak_s(self) -> float:
        return self.dispatch_s + self.send_s


class Emulator:
    """The FCM emulator in its own process, so it does not share the bench's GIL."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.account = workdir / "service-account.json"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "companion.notify.fcm_emulator", "--port", str(self.port),
             "--write-service-account", str(self.account)], stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            if line.startswith("FCM_URL="):
                break
        self.fcm_url = f"http://127.0.0.1:{self.port}/v1/projects/{{0}}/messages:send"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _time_send_each(sender: PushSender, tokens: list[str]) -> float:
    messages = [messaging.Message(notification=messaging.Notification(title="t", body="b")) for _ in tokens]
    for message, token in zip(messages, tokens, strict=True):
        message.token = token
    started = time.perf_counter()
    for start in range(0, len(messages), 500):
        batch = messaging.send_each(messages[start:start + 500], app=sender._app)
        assert batch.failure_count == 0, batch.responses[0].exception
    return time.perf_counter() - started


def _time_insert_many(db, size: int) -> float:
    docs = [{"_id": f"o{n}", "source_key": f"floor:{n}", "recipient_user_id": f"p{n}", "patient_id": f"p{n}",
             "kind": "therapy_reminder", "state": "scheduled", "attempts": 0, "round": 0} for n in range(size)]
    started = time.perf_counter()
    for start in range(0, size, CHUNK):
        db.insert_floor.insert_many(docs[start:start + CHUNK], ordered=False)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc), children not included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(client: MongoClient, emulator: Emulator, size: int, budget_s: float, uri: str = "",
            senders: int = 1, server_pid: int | None = None) -> Figures:
    """One size: a fresh database, seeded, then the floors and the peak minute measured, the sending done
    by this process (``senders`` 1) or by that many sender processes on the same outbox."""
    name = f"bench_peak_{uuid.uuid4().hex[:8]}"
    db = client[name]
    ensure_indexes(db)
    due = datetime.now(UTC) - timedelta(seconds=5)
    tokens = seed_due_reminders(db, size, due)
    sender = PushSender(emulator.account, fcm_url=emulator.fcm_url, app_name=f"bench-{uuid.uuid4()}")
    try:
        send_each_s = _time_send_each(sender, [f"floor-{t}" for t in tokens])
        insert_many_s = _time_insert_many(db, size)
        started = time.perf_counter()
        result = Services(load_settings({"mongodb_db": name}, environ={}), client=client).reminder_dispatch.dispatch_due()
        dispatched = time.perf_counter()
        pids = {"sender": os.getpid(), "emulator": emulator.process.pid,
                **({"database": server_pid} if server_pid else {})}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        stopped_by = ""
        try:
            if senders == 1:
                delivered, first_minute, complete = _send_all(db, sender, started, budget_s)
            else:
                delivered, first_minute, complete = _send_in_processes(db, uri, name, emulator, senders, started,
                                                                       budget_s)
        except PyMongoError as exc:  # e.g. one settling update outlasting the client's timeout
            delivered, first_minute, complete = db.push_outbox.count_documents({"state": "sent"}), 0, False
            stopped_by = f"{type(exc).__name__} while sending"
        finished = time.perf_counter()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    finally:
        sender.close()
        client.drop_database(name)
    assert result.scheduled == size, result
    return Figures(size, send_each_s, insert_many_s, dispatched - started, finished - dispatched, delivered,
                   first_minute, complete, stopped_by, senders, cpu)


def _send_all(db, sender: PushSender, started: float, budget_s: float) -> tuple[int, int, bool]:
    """What ``send_push`` does (dispatch passes until one finds nothing), noting how many went out in
    the first minute and starting no new pass after ``budget_s``; returns (delivered, delivered in the
    first minute, finished)."""
    dispatcher = _worker_dispatcher(db, sender, "bench")
    delivered, first_minute = 0, None

    def progress(report) -> None:
        nonlocal first_minute
        if first_minute is None and time.perf_counter() - started > 60:
            first_minute = delivered + report.states.get("sent", 0)

    while True:
        report = dispatcher.run_pass(PER_PASS, progress)
        delivered += report.states.get("sent", 0)
        if report.claimed == 0:
            return delivered, delivered if first_minute is None else first_minute, True
        if time.perf_counter() - started > budget_s:
            return delivered, delivered if first_minute is None else first_minute, False


def _worker_dispatcher(db, sender: PushSender, owner: str) -> OutboxDispatcher:
    """The dispatcher the worker's ``push-send`` runs: default settings, consent checked before each batch
    goes out, each recipient's language and zones read."""
    services = Services(load_settings({"mongodb_db": db.name}, environ={}), client=db.client, sender=sender)
    return services.push.dispatcher(owner)


def _send_in_processes(db, uri: str, name: str, emulator: Emulator, senders: int, started: float,
                       budget_s: float) -> tuple[int, int, bool]:
    """The sending done by ``senders`` OS processes (``--send-only``), each running dispatch passes on the
    one outbox until a pass claims nothing; this process only watches the count of sent notifications."""
    children = [subprocess.Popen([sys.executable, "-m", "bench.peak_minute", "--send-only", uri, name,
                                  str(emulator.account), emulator.fcm_url, f"bench-sender-{n}", str(budget_s)])
                for n in range(senders)]
    first_minute = None
    while any(child.poll() is None for child in children):
        if first_minute is None and time.perf_counter() - started > 60:
            first_minute = db.push_outbox.count_documents({"state": "sent"})
        time.sleep(0.2)
    delivered = db.push_outbox.count_documents({"state": "sent"})
    complete = all(child.returncode == 0 for child in children) and delivered == db.push_outbox.count_documents({})
    return delivered, delivered if first_minute is None else first_minute, complete


def _send_only(uri: str, name: str, account: str, fcm_url: str, owner: str, budget_s: float) -> None:
    """A child of ``_send_in_processes``: send until a pass claims nothing (exit 0) or the budget ends (3)."""
    client = make_client(uri, timeout_ms=120_000)
    sender = PushSender(account, fcm_url=fcm_url, app_name=owner)
    try:
        db = client[name]
        dispatcher = _worker_dispatcher(db, sender, owner)
        started = time.perf_counter()
        while dispatcher.run_pass(PER_PASS).claimed:
            if time.perf_counter() - started > budget_s:
                sys.exit(3)
    finally:
        sender.close()
        client.close()


def render(figures: list[Figures], server: str, budget_s: float) -> str:
    """The RESULTS.md section for these figures."""

    def row(f: Figures) -> str:
        peak = f"{f.peak_s:.1f}" if f.complete else f"> {f.peak_s:.0f} (stopped{': ' + f.stopped_by if f.stopped_by else ''})"
        ratio = f"{f.peak_s / f.send_each_s:.2f}" if f.complete else f"> {f.peak_s / f.send_each_s:.0f}"
        base = next(b for b in figures if b.senders == f.senders)
        growth = f"{(f.peak_s / base.peak_s) / (f.size / base.size):.2f}" if f.complete and base.complete else "–"
        cpu = " / ".join(f"{f.cpu_s[k]:.1f}" if k in (f.cpu_s or {}) else "–" for k in ("sender", "database"))
        return (f"| {f.size:,} | {f.senders} | {f.send_each_s:.1f} | {f.insert_many_s:.1f} | {f.dispatch_s:.1f} | {peak} | {ratio} "
                f"| {growth} | {f.delivered_first_minute:,} | {f.delivered:,} | {cpu} |")

    return "\n".join([
        SECTION, "",
        f"`python -m bench.peak_minute --sizes {','.join(str(n) for n in dict.fromkeys(f.size for f in figures))} "
        f"--senders {','.join(sorted({str(f.senders) for f in figures}))} --budget-s {budget_s:g}` on "
        f"{server}, {os.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}. "
        "N patients with one phone each and one reminder due now. *send_each* is the floor: firebase-admin's "
        "`messaging.send_each` of N minimal messages to the loopback FCM emulator (a separate process), 500 per "
        "call; *insert_many* is the database floor (N outbox-sized documents). *dispatch* creates the N outbox "
        "notifications (what already exists looked up by _id, the rest in one unordered insert under the unique "
        "key); *peak* is dispatch plus sending them all the way "
        "the worker does (the worker's `OutboxDispatcher`, consent and readers' accounts included, `run_pass` until a pass finds nothing: the due notifications read once per pass, "
        "then claim, read the phones of recipients not read yet in the pass, check, push, settle 500 at a time, the next batch claimed and built while one is sent and settled), by this process or by *sender processes* OS processes on the one outbox, no new pass after the budget. *growth* is peak time per reminder relative to the smallest size (1.00 = linear). *CPU while sending* is the CPU time the sending process (both its threads) and the database server used from the end of dispatch to the last settle: unlike the wall times it does not grow with other work on the machine.", "",
        "| due reminders | sender processes | send_each s | insert_many s | dispatch s | peak s | peak / send_each "
        "| growth | delivered in the first minute | delivered | CPU while sending s (sender / database) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[row(f) for f in figures], "",
    ])


def write_results(section: str) -> None:
    """Replace (or append) the "Scheduler peak minute" section of bench/RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000", help="comma-separated numbers of due reminders")
    parser.add_argument("--budget-s", type=float, default=900, help="stop sending a size after this long")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--senders", default="1", help="comma-separated numbers of sender processes to compare")
    parser.add_argument("--send-only", nargs=6, metavar=("URI", "DB", "ACCOUNT", "FCM_URL", "OWNER", "BUDGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send_only:
        uri, name, account, fcm_url, owner, budget = args.send_only
        _send_only(uri, name, account, fcm_url, owner, float(budget))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    sender_counts = [int(n) for n in args.senders.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = None
        uri = os.environ.get("MONGODB_URI")
        if uri is None:
            server = FerretServer(workdir / "ferretdb")
            server.start()
            uri = server.uri
        emulator = Emulator(workdir)
        client = make_client(uri, timeout_ms=120_000)
        try:
            figures = []
            for size in sizes:
                for senders in sender_counts:
                    figures.append(measure(client, emulator, size, args.budget_s, uri, senders,
                                           server.proc.pid if server is not None and server.proc else None))
                    print(f"{size} x{senders}: {figures[-1]}", flush=True)
        finally:
            client.close()
            emulator.stop()
            if server is not None:
                server.stop()
    server_name = "MongoDB at MONGODB_URI" if os.environ.get("MONGODB_URI") else \
        f"FerretDB {machine()['ferretdb']} (SQLite, patched: see README)"
    section = render(figures, server_name, args.budget_s)
    print(section)
    if not args.no_write:
        write_results(section)


if __name__ == "__main__":
    main()
