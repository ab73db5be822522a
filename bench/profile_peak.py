"""Where the peak minute's sending spends its time: cProfile over the worker's dispatcher on N due reminders.

Seeds N patients with one phone and one reminder due now, creates their notifications (the reminder
dispatch), then profiles ``PushDelivery.send_due`` (the worker's ``push-send``: consent checked, each
recipient's language and zones read, claim, push through real firebase-admin to the loopback FCM emulator,
settle). Prints the top functions by cumulative and by own time, and the share of the time spent waiting on
FCM (``send_each``) versus the database (pymongo) versus the rest.
Usage: FERRETDB_BIN=... python -m bench.profile_peak [--size 2000] [--top 40]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import database
from bench.peak_minute import Emulator
from bench.profile_ingestion import cumulative
from companion.notify.push import PushSender
from companion.services.container import Services
from companion.settings import load_settings
from companion.store.db import ensure_indexes, make_client
from tests.support.due_reminders import seed_due_reminders

PARTS = {
    "FCM (firebase-admin send_each)": ("firebase_admin/messaging.py", "send_each"),
    "database (pymongo commands)": ("pymongo/synchronous/pool.py", "command"),
    "claim": ("companion/store/outbox.py", "claim"),
    "settle (outbox)": ("companion/store/outbox.py", "settle"),
    "due + open_among reads": ("companion/store/outbox.py", "open_among"),
    "phones": ("companion/store/push_tokens.py", "for_users"),
    "consent": ("companion/services/notifications.py", "refusals"),
    "readers": ("companion/services/push_delivery.py", "_readers"),
    "prepare": ("companion/services/push_delivery.py", "_prepare"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", help="also dump the raw profile here")
    args = parser.parse_args(argv)
    with database() as uri, tempfile.TemporaryDirectory() as tmp:
        emulator = Emulator(Path(tmp))
        client = make_client(uri, timeout_ms=120_000)
        name = f"bench_profile_peak_{uuid.uuid4().hex[:8]}"
        try:
            db = client[name]
            ensure_indexes(db)
            seed_due_reminders(db, args.size, datetime.now(UTC) - timedelta(seconds=5))
            services = Services(load_settings({"mongodb_db": name}, environ={}), client=client)
            services.reminder_dispatch.dispatch_due()
            sender = PushSender(emulator.account, fcm_url=emulator.fcm_url, app_name=f"profile-{uuid.uuid4()}")
            services.sender = sender
            delivery = services.push
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            report = delivery.send_due("profile")
            profile.disable()
            wall = time.perf_counter() - started
            sender.close()
        finally:
            client.drop_database(name)
            client.close()
            emulator.stop()
    print(f"size {args.size}: sent {report.states} in {wall:.2f} s (under cProfile)")
    stats = pstats.Stats(profile)
    total = stats.total_tt
    for part, where in PARTS.items():
        print(f"  {part:40s} {cumulative(stats, *where):7.2f} s  {cumulative(stats, *where) / wall:5.1%} of wall")
    if args.out:
        stats.dump_stats(args.out)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"profiled total {total:.2f} s")


if __name__ == "__main__":
    main()
