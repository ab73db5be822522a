"""The `companion` command: database set-up, users, demo data, audit verification.

Each subcommand is a function registered in COMMANDS; the run script and operators use these.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from companion.logs import configure_logging
from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings


def _services():
    from companion.services.container import Services

    services = Services(load_settings())
    services.health.ensure_indexes()
    return services


def init_db(args) -> int:
    """Create every collection's indexes (idempotent)."""
    _services()
    print("indexes ensured")
    return 0


def create_user(args) -> int:
    """Create an account (admins and clinicians are created this way or by an admin through the API)."""
    password = os.environ.get("COMPANION_NEW_PASSWORD") or getpass.getpass("password: ")
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


def audit_verify(args) -> int:
    """Walk every audit chain (keyed hashes) and check each against its latest anchor; exit 1 and list the
    breaks (events changed, removed or re-linked; chains cut short or deleted; anchors altered) and the writes
    whose outcome was never recorded."""
    from pathlib import Path

    services = _services()
    lines = None
    if args.anchors:
        lines = []
        for path in args.anchors:
            lines += Path(path).read_text(errors="replace").splitlines()
    result = services.audit.verify(anchor_lines=lines)
    anchors = result["anchors"]
    print(f"{result['events']} events in {result['chains']} chains; {anchors['read']} anchors for "
          f"{anchors['chains_anchored']} chains")
    if not anchors["read"]:
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
        print(exc, file=sys.stderr)
        return 1
    print(f"{result['items']} library items: {result['created']} new, {result['updated']} updated")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="companion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init-db", help=init_db.__doc__).set_defaults(func=init_db)
    p = sub.add_parser("create-user", help=create_user.__doc__)
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=["patient", "caregiver", "clinician", "admin"])
    p.add_argument("--time-zone", default="UTC")
    p.set_defaults(func=create_user)
    p = sub.add_parser("seed-demo", help=seed_demo.__doc__)
    p.add_argument("--days", type=int, default=28)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=seed_demo)
    p = sub.add_parser("audit-verify", help=audit_verify.__doc__)
    p.add_argument("--anchors", action="append", metavar="FILE",
                   help="an anchor file or a log holding the anchor lines (repeatable; default: "
                        "COMPANION_AUDIT_ANCHOR_FILE)")
    p.set_defaults(func=audit_verify)
    p = sub.add_parser("load-content", help=load_content.__doc__)
    p.add_argument("--file", help="a library file in the format of companion/content/mindfulness.json")
    p.set_defaults(func=load_content)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingError as exc:
        print(f"companion: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    configure_logging(settings.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
