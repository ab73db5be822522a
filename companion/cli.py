"""The `companion` command: database migrations, users, demo data, audit verification, the worker's state, the
read models' rebuild.

Each subcommand is a function registered in :func:`_parser`; the run script, the release step and operators
use these. Settings come from the environment as for every process; with none, the command finds the
database that `make run` starts (127.0.0.1:27117). What stops a command is said in one line on stderr:

======  ==========================================================================================
 0      done (``audit-verify``: the trail is intact; ``worker-status``: a leader beat recently)
 1      the command could not do its work, or found a problem (a broken chain, a stale worker)
 2      a usage error or a malformed setting (``audit-verify``: COMPANION_AUDIT_KEY is not the writers' key)
 69     the database is not reachable (``EX_UNAVAILABLE``)
 130    interrupted (Ctrl-C)
======  ==========================================================================================

``-v`` (before or after the subcommand) logs at DEBUG and adds the traceback to an unexpected error.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from datetime import datetime

from companion.domain.errors import DomainError, Invalid
from companion.logs import configure_logging
from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings

EXIT_FAILED = 1
EXIT_USAGE = 2  # as argparse's own
EXIT_UNAVAILABLE = 69
EXIT_INTERRUPTED = 130


class CommandFailed(Exception):
    """What stops a command, in one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED):
        super().__init__(message)
        self.status = status


def _services(*, indexes: bool = True):
    """The service container, once the database answers (and, with ``indexes``, its indexes are as declared:
    the commands other than ``migrate`` need them)."""
    from companion.services.container import Services
    from companion.store.db import DatabaseNotFound

    try:
        services = Services(load_settings())
    except DatabaseNotFound as exc:
        raise CommandFailed(f"{exc}; correct MONGODB_URI", EXIT_UNAVAILABLE) from None
    problem = services.health.problem() if indexes else services.health.unreachable()
    if problem is not None:
        services.close()
        unreachable = problem.startswith("the database is not reachable")
        hint = "; start it (`make run`) or set MONGODB_URI" if unreachable else ""
        raise CommandFailed(problem + hint, EXIT_UNAVAILABLE if unreachable else EXIT_FAILED)
    return services


def migrate(args) -> int:
    """Bring the database to what the code declares: create missing indexes, and drop and create again those
    whose definition changed; give documents written before change feeds their change numbers; set units' last
    contacts stored in the future (from gateways' clocks ahead) to now; compute again the adherence days stored
    under an earlier version of the adherence rules (not those of records past their retention), once per version;
    compute the panel rows of the patients whose days changed and of those missing from the panel (run it before
    starting new web and worker processes; safe to run again, and a run stopped half-way is finished by the
    next)."""
    services = _services(indexes=False)
    changes = services.health.migrate_indexes(progress=lambda c: print(c.describe(), flush=True))
    print(f"indexes as declared ({len(changes)} change(s) applied)")
    numbered = services.housekeeping.number_unsynced()
    if numbered:
        print(f"{numbered} document(s) written before change feeds given change numbers")
    ahead = services.housekeeping.bring_back_future_contacts()
    if ahead:
        print(f"{ahead} unit(s)' last contact, stored in the future from a gateway's clock ahead, set to now")
    upgraded = _upgrade_adherence(services)
    missing = services.panel_rows.missing()
    if missing:
        print(f"building the panel's read model for {len(missing)} patient(s) without a row or a panel line",
              flush=True)
    if missing or upgraded.changed:
        _rebuild(services, sorted(set(missing) | set(upgraded.changed)))
    if upgraded.failed:
        named = ", ".join(upgraded.failed[:5]) + (", ..." if len(upgraded.failed) > 5 else "")
        raise CommandFailed(f"the adherence days of {len(upgraded.failed)} patient(s) could not be computed again "
                            f"({named}; the log says why): run the command again")
    return 0


def _upgrade_adherence(services):
    """Compute again the adherence days stored under an earlier version of the rules, with a progress line while
    the patients are gone through (none once a run has found nothing left: then one document is read)."""
    report, shown = _progress("adherence days under earlier rules"), []

    def progress(done: int, total: int) -> None:
        shown.append(done)
        report(done, total)

    try:
        upgraded = services.adherence_upgrade.run(progress)
    finally:
        if shown:
            print(file=sys.stderr)  # ends the progress line, before any message saying what stopped it
    if upgraded.written:
        print(f"{upgraded.written} adherence day(s) stored under earlier rules computed again "
              f"({len(upgraded.changed)} patient(s)' figures changed), {upgraded.same} of them with the same figures "
              "(their version alone written)")
    return upgraded


def _progress(what: str):
    """A progress line on stderr for a command that goes through every patient: ``what: done/total (pct)``."""
    def progress(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} patients ({done * 100 // max(total, 1)}%)", end="", flush=True,
              file=sys.stderr)

    return progress


def _rebuild(services, patient_ids: list[str] | None = None) -> None:
    """Compute these patients' panel rows (every patient's by default) with a progress line; a patient whose row
    failed makes the command fail, once every other row is computed."""
    try:
        built = services.panel_rows.rebuild(_progress("panel rows"), patient_ids=patient_ids)
    finally:
        print(file=sys.stderr)  # ends the progress line, before any message saying what stopped it
    print(f"{built.written} panel row(s) computed")
    if built.failed:
        named = ", ".join(built.failed[:5]) + (", ..." if len(built.failed) > 5 else "")
        raise CommandFailed(f"the panel rows of {len(built.failed)} patient(s) could not be computed ({named}; "
                            "the log says why): run the command again")


def rebuild_read_models(args) -> int:
    """Compute every patient's panel row again from the stored data (a repair, or after a change of how rows
    are computed). Safe to run while the service runs: each row is computed whole and written in one go."""
    _rebuild(_services())
    return 0


def after_restore(args) -> int:
    """Run once after restoring the database from a backup, before the API serves phones again: every sync
    cursor issued before is answered 410, so each app reads its feeds again in full instead of skipping the
    changes whose numbers the restored database hands out again."""
    moved = _services().changes.after_restore(_progress("change sequences"))
    print(file=sys.stderr)
    print(f"{moved} patient(s)' change sequences moved on: their apps will resync in full")
    return 0


def create_user(args) -> int:
    """Create an account (admins and clinicians are created this way or by an admin through the API). The
    password (10 to 200 characters) is asked for at the terminal, read from standard input when that is not a
    terminal, or taken from COMPANION_NEW_PASSWORD."""
    password = os.environ.get("COMPANION_NEW_PASSWORD") or (
        getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n"))
    user = _services().accounts.sign_up(email=args.email, password=password, display_name=args.name,
                                        role=args.role, time_zone=args.time_zone)
    print(f"created {user.role.value} {user.id}")
    return 0


def seed_demo(args) -> int:
    """Load demo people and weeks of history (idempotent: does nothing if the demo is there)."""
    from companion.demo import seed

    summary = seed(_services(), days=args.days, progress=not args.quiet)
    for line in summary:
        print(line)
    return 0


def _days_of_history(value: str) -> int:
    days = int(value) if value.strip().lstrip("-").isdigit() else None
    if days is None or not 1 <= days <= 365:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days from 1 to 365")
    return days


def audit_verify(args) -> int:
    """Walk every audit chain (keyed hashes) and check each against its latest anchor; exit 1 and list the
    breaks (events changed, removed or re-linked; chains cut short or deleted; anchors altered) and the writes
    whose outcome was never recorded. When nothing verifies under COMPANION_AUDIT_KEY, say so in one line (the key
    is not the writers', or the trail and its anchors were rewritten), with the number of breaks, and exit 1."""
    from pathlib import Path

    lines = None
    if args.anchors:  # read first: a wrong path is the operator's to fix, before any database work
        lines = []
        for path in args.anchors:
            try:
                lines += Path(path).read_text(errors="replace").splitlines()
            except OSError as exc:
                raise CommandFailed(f"cannot read the anchors in {path}: {exc.strerror or type(exc).__name__}",
                                    EXIT_USAGE) from None
    services = _services()
    print("reading every audit event and checking each chain's hashes...", file=sys.stderr, flush=True)
    result = services.audit.verify(anchor_lines=lines)
    anchors, key = result["anchors"], result["key"]
    print(f"{result['events']} events in {result['chains']} chains; {anchors['read']} anchors for "
          f"{anchors['chains_anchored']} chains; audit key fingerprint {key['fingerprint']}")
    nothing = key["nothing_verifies"]
    if nothing is not None:
        # What a wrong key looks like, and what a trail rewritten without the key looks like: the anchors' key
        # fingerprints (outside their MAC, anyone rewriting them writes any) cannot tell the two apart, so this is
        # never a verdict on the key, and always a failure.
        print(f"NOTHING VERIFIES {nothing.message}")
        if not (nothing.names_this_key or args.all_breaks):  # one line, not thousands, for a mistyped key
            print("(--all-breaks lists every break)")
            return EXIT_FAILED
    if not anchors["read"] and not anchors["problems"]:
        print("WARNING no anchors read: a chain cut short or deleted cannot be detected "
              "(set COMPANION_AUDIT_ANCHOR_FILE, or pass --anchors with the file or the logs holding them)")
    for problem in anchors["problems"]:
        print(f"BREAK anchor {problem}")
    for b in result["breaks"]:
        print(f"BREAK chain {b.chain_id} seq {b.seq}: {b.problem}")
    for u in result["unfinished"]:
        print(f"UNFINISHED write {u['request_id']} at {u['at']:%Y-%m-%dT%H:%M:%SZ}: {u['method']} {u['route']} "
              f"by {u['actor_id']} (its intent was recorded, its outcome never was)")
    return 1 if result["breaks"] or result["unfinished"] or anchors["problems"] else 0


def load_content(args) -> int:
    """Load the mindfulness library into the database (an upsert by slug: safe to run again)."""
    from pathlib import Path

    from companion.domain.content_library import LibraryError

    try:
        result = _services().library.load(Path(args.file) if args.file else None)
    except LibraryError as exc:
        raise CommandFailed(str(exc)) from exc
    print(f"{result['items']} library items: {result['created']} new, {result['updated']} updated")
    return 0


def _ago(at: datetime | None, now: datetime) -> str:
    return f"{(now - at).total_seconds():.0f} s ago" if at else "never"


def worker_status(args) -> int:
    """The scheduler workers by their heartbeats: exit 0 while a leader beat recently (with --local: while a
    worker of this host did, for a container's health check), 1 otherwise."""
    services = _services()
    status, now = services.heartbeats.status(), services.clock()
    workers = status.workers
    if args.local:
        host = socket.gethostname()
        workers = [w for w in workers if w.holder.rsplit(":", 1)[0] == host]
    if not workers:
        print("scheduler worker: no heartbeat" + (" from this host" if args.local else "") + " (is it running?)")
        return EXIT_FAILED
    print(f"scheduler worker: {status.state}" + (f", leader {status.leader.holder}" if status.leader else ", no leader"))
    silent_after = services.heartbeats.stale_after.total_seconds()
    for worker in workers:
        role = "leader" if worker.leader else "passive"
        if (now - worker.beat_at).total_seconds() > silent_after:  # a worker stopped (or hung): what it last was
            role = f"silent (last beat as {role})"
        print(f"  {worker.holder}: {role}, beat {_ago(worker.beat_at, now)}, started {_ago(worker.started_at, now)}")
        if args.jobs:
            for job_id, runs in sorted(worker.jobs.items()):
                error = f", last error {runs['last_error']} {_ago(runs.get('last_error_at'), now)}" \
                    if runs.get("last_error") else ""
                print(f"    {job_id:<22} last ok {_ago(runs.get('last_ok_at'), now)}, {runs.get('runs', 0)} run(s), "
                      f"{runs.get('failures', 0)} failure(s){error}")
    if args.local:
        fresh = min((now - w.beat_at).total_seconds() for w in workers) <= services.heartbeats.stale_after.total_seconds()
        return 0 if fresh else EXIT_FAILED
    return 0 if status.state == "ok" else EXIT_FAILED


# Which of the image's processes a command line runs (the Procfile's names), by what it starts: a module run with
# python -m, or a console script (the kernel shows `/opt/venv/bin/python /opt/venv/bin/companion migrate` for
# `companion migrate`; any command of the companion script, like the release step, runs once: nothing to probe).
_PROCESS_MARKERS = (("companion.jobs.worker", "worker"), ("companion.jobs.sender", "sender"),
                    ("companion.cli", "release"), ("gunicorn", "web"))
_PROCESS_SCRIPTS = {"companion": "release", "gunicorn": "web"}


def process_of(argv: list[str]) -> str | None:
    """The Procfile name of the process ``argv`` starts (web, worker, sender or release), None for another."""
    joined = " ".join(argv)
    by_module = next((name for marker, name in _PROCESS_MARKERS if marker in joined), None)
    return by_module or next((_PROCESS_SCRIPTS[script] for word in joined.split()
                              if (script := os.path.basename(word)) in _PROCESS_SCRIPTS), None)


def _main_process() -> list[str]:
    """The command line of this container's main process (PID 1; behind `docker run --init`, its child)."""
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def healthcheck(args) -> int:
    """The image's health check, right for whichever process the container runs (the Procfile's name, given with
    --process or read from the container's main process): web answers /healthz on its port; a worker of this host
    beat recently (as worker-status --local); a sender reaches the database with its indexes as declared; the
    release step (migrate) runs once and has nothing to probe. Exit 0 healthy, 1 (or 69) not."""
    import urllib.error
    import urllib.request

    process = args.process or process_of(_main_process())
    if process is None:
        raise CommandFailed(f"cannot tell which process this container runs ({' '.join(_main_process()) or 'no PID 1'}"
                            "): pass --process web, worker, sender or release", EXIT_USAGE)
    if process == "worker":
        return worker_status(argparse.Namespace(local=True, jobs=False))
    if process == "sender":
        _services().close()  # a sender needs nothing but the database (and FCM, which answers for itself)
        print("sender: the database answers, with its indexes as declared")
        return 0
    if process == "release":
        print("release: the migration runs once and exits; nothing to probe")
        return 0
    bind = load_settings().listen_host or "0.0.0.0"  # noqa: S104 - the Procfile's default, only compared here
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(bind, f"[{bind}]" if ":" in bind else bind)  # noqa: S104
    url = f"http://{host}:{os.environ.get('PORT', '5000')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 - our own loopback URL
            print(f"web: {url} answered {answer.status}")
            return 0
    except (urllib.error.URLError, OSError) as exc:
        raise CommandFailed(f"web: {url} did not answer: {getattr(exc, 'reason', exc)}") from None


def _add_common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging, and the traceback of an unexpected error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="companion", description=" ".join(__doc__.split("\n\n")[0].split()))
    _add_common_options(parser, default=False)
    # The same options after the subcommand; SUPPRESS keeps a value given before it when they are absent.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help_text: str | None = None) -> argparse.ArgumentParser:
        about = " ".join(func.__doc__.split("\n\n")[0].split())
        p = sub.add_parser(name, parents=[common], help=help_text or about.split(". ")[0].rstrip(".") + ".",
                           description=about)
        p.set_defaults(func=func)
        return p

    command("migrate", migrate)
    command("init-db", migrate, "the same as migrate (its former name)")
    p = command("create-user", create_user)
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=["patient", "caregiver", "clinician", "admin"])
    p.add_argument("--time-zone", default="UTC")
    p = command("seed-demo", seed_demo)
    p.add_argument("--days", type=_days_of_history, default=28, help="days of history (1-365; default 28)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = command("audit-verify", audit_verify)
    p.add_argument("--anchors", action="append", metavar="FILE",
                   help="an anchor file or a log holding the anchor lines (repeatable; default: "
                        "COMPANION_AUDIT_ANCHOR_FILE)")
    p.add_argument("--all-breaks", action="store_true",
                   help="list every break even when nothing verifies under the key (by default that is said in one "
                        "line, with the number of breaks, unless the anchors name this key's fingerprint)")
    p = command("healthcheck", healthcheck)
    p.add_argument("--process", choices=["web", "worker", "sender", "release"],
                   help="the process to probe (default: the container's main process, PID 1)")
    p = command("load-content", load_content)
    p.add_argument("--file", help="a library file in the format of companion/content/mindfulness.json")
    command("rebuild-read-models", rebuild_read_models)
    command("after-restore", after_restore)
    p = command("worker-status", worker_status)
    p.add_argument("--local", action="store_true", help="only this host's workers (a container's health check)")
    p.add_argument("--jobs", action="store_true", help="each job's last runs too")
    return parser


def _development_defaults(environ=os.environ, root: str = "var") -> None:
    """In development, the secrets `make run` keeps under ``var/`` (scripts/run-local.sh), unless set: the
    command finds that run's audit key and anchor file as it finds its database, so that ``audit-verify`` checks
    the trail that run wrote (with another key every event would read as changed)."""
    if environ.get("COMPANION_ENV", "development") != "development":
        return
    if environ.get("COMPANION_SECRET_KEY") or environ.get("COMPANION_AUDIT_KEY"):
        return  # the environment says which keys (the audit key set, or derived from the secret key set)
    for name, file in (("COMPANION_SECRET_KEY", "dev-secret"), ("COMPANION_AUDIT_KEY", "audit-key")):
        path = os.path.join(root, file)
        if os.path.isfile(path):
            with open(path) as f:
                environ[name] = f.read().strip()
    anchors = os.path.join(root, "audit-anchors.log")
    if not environ.get("COMPANION_AUDIT_ANCHOR_FILE") and os.path.isfile(anchors):
        environ["COMPANION_AUDIT_ANCHOR_FILE"] = os.path.abspath(anchors)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    before = dict(os.environ)
    _development_defaults()
    try:
        return _run(args)
    finally:  # (called in a process that goes on, a test's, the environment is left as it was)
        for name in set(os.environ) - set(before):
            del os.environ[name]


def _run(args) -> int:
    try:
        settings = load_settings()
    except SettingError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    configure_logging("DEBUG" if args.verbose else settings.log_level)
    try:
        return args.func(args)
    except CommandFailed as exc:
        print(f"companion {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except DomainError as exc:
        print(f"companion {args.command}: {exc.detail or type(exc).__name__}", file=sys.stderr)
        return EXIT_BAD_SETTING if isinstance(exc, Invalid) else EXIT_FAILED  # Invalid: an argument at fault
    except KeyboardInterrupt:
        print(f"companion {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless asked for
        if args.verbose:
            logging.getLogger("companion.cli").exception("unexpected error")
        first_line = (str(exc).splitlines() or [""])[0][:300]
        print(f"companion {args.command}: unexpected error: {type(exc).__name__}: {first_line}"
              + ("" if args.verbose else " (-v shows the traceback)"), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
