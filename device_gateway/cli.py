"""The ``device-gateway`` command: scan, pair, run, status, dead-letters, buffer-recover, simulate.

Options may come before or after the command (``device-gateway status --state-dir X``). What the gateway
cannot get past on its own ends the command with one line on stderr and an exit status of its own, from
``sysexits.h``, so that a supervisor can tell "restart me" from "a person must act" (with systemd:
``RestartPreventExitStatus=65 77 78``):

======  ====================================================================================
 65     the buffer is damaged or lost, or its recovery stopped midway (the line names the file and
        ``buffer-recover``)
 69     no Bluetooth: no D-Bus system bus, BlueZ not running, or no adapter (``scan``, ``run``)
 77     the API refuses the gateway's credentials at every renewal: pair it again
 78     the buffer's key is missing, unreadable, too open or not the buffer's; or the config file or an
        environment setting cannot be used (e.g. an API URL that is plain ``http://`` to another host, refused
        by the commands that talk to the API: ``pair``, ``run``, ``simulate`` when paired); or ``pair`` cannot
        write its state directory (before it asks: nothing sent; after: run it again with the same code)
 66     ``status``: no state directory there (a mistyped ``--state-dir``, or a gateway not set up yet)
======  ====================================================================================

``status`` also ends with 3 when what it shows needs attention: a loop failing now, a unit the last pull did
not collect (the output says which, and for how long), a state directory with less than ``DISK_FULL_BELOW`` free
(the buffer cannot store records there, whatever health.json last said), or a health.json it cannot parse, so that
a monitoring check can run it as it is; 0 when nothing is failing.
"""

import argparse
import asyncio
import contextlib
import logging
import shlex
import shutil
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

from device_gateway.api import CredentialsRevoked, checked_api_url, pair
from device_gateway.buffer import RecordBuffer
from device_gateway.buffer_integrity import BufferDamaged
from device_gateway.buffer_recovery import recover_buffer
from device_gateway.buffer_status import inspect_buffer
from device_gateway.config import GatewayConfig, load_config
from device_gateway.dead_letters import replay
from device_gateway.errors import ConfigError
from device_gateway.health import (
    LOOPS,
    GatewayHealth,
    LoopHealth,
    UnitHealth,
    health_file_unreadable,
    read_health,
    read_unit_health,
)
from device_gateway.link import BluetoothUnavailable, GatewayLink
from device_gateway.runner import GatewayRunner
from device_gateway.sealing import SealingError
from device_gateway.uploader import UploadProgress, problem_detail

logger = logging.getLogger("device_gateway")

EXIT_BUFFER_DAMAGED = 65  # EX_DATAERR
EXIT_BLUETOOTH_UNAVAILABLE = 69  # EX_UNAVAILABLE
EXIT_CREDENTIALS_REVOKED = 77  # EX_NOPERM
EXIT_BUFFER_KEY = 78  # EX_CONFIG
EXIT_CONFIG = 78  # EX_CONFIG: the config file or an environment setting
EXIT_NO_STATE = 66  # EX_NOINPUT
EXIT_NEEDS_ATTENTION = 3  # status: a loop failing now or a unit not collected (not a sysexits error: it did its job)
# Less free than this in the state directory is a full disk to `status`: SQLite cannot count on a page for the buffer
# (nor its WAL), and no file can be replaced there; a gateway that still has this much stores for days.
DISK_FULL_BELOW = 1024 * 1024


def _progress_line(progress: UploadProgress) -> None:
    total = progress.sent + progress.dead_lettered + progress.remaining
    sys.stderr.write(
        f"\ruploaded {progress.sent}/{total}"
        f" (dead-lettered {progress.dead_lettered}, remaining {progress.remaining}, retries {progress.retries})"
    )
    if progress.remaining == 0:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_pair(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Exchange a pairing code for credentials and store them."""
    # https://, or http:// to this host only (ConfigError otherwise: exit 78, nothing sent)
    config.api_url = checked_api_url(args.api or config.api_url)
    name = args.name or socket.gethostname()
    code = args.code.replace("-", "").replace(" ", "").upper()  # as the app shows it, or typed in any case
    # Kept before anything is sent: the answer may be lost, and a retry with the same code must send the same one.
    try:
        nonce = config.pairing_nonce()
    except OSError as exc:
        raise ConfigError(f"cannot keep the pairing's nonce in {config.state_dir}: {exc.strerror or exc}; nothing "
                          f"was sent: give a directory this user can write (--state-dir or "
                          f"COMPANION_GATEWAY_STATE_DIR)") from exc
    try:
        pairing = pair(config.api_url, code, name, ca_file=config.ca_file, nonce=nonce)
    except httpx.HTTPStatusError as exc:
        answer = exc.response
        wait = answer.headers.get("Retry-After")
        print(f"pairing refused: HTTP {answer.status_code}: {problem_detail(answer)}"
              + (f" (try again in {wait} s)" if wait else ""), file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"cannot reach {config.api_url}: {exc}; run the same `pair` again (with the same code, within its "
              f"10 minutes): a pairing whose answer was lost is answered again", file=sys.stderr)
        return 1
    held = _held_for_another_patient(config, pairing.patient_ref, pairing.device_serials)
    if held:
        # Sent under the new pairing, the previous patient's records would be refused one by one and reported
        # back as dead letters, their content filed with the new patient's record.
        print(f"paired as gateway {pairing.gateway_id}, but for another patient than the one this gateway served, "
              f"and it still holds {held} of theirs: they must not go out under the new pairing. Nothing was "
              f"saved. Upload them first (`device-gateway run` with the current pairing), or move "
              f"{config.state_dir} aside to keep them and pair again with a fresh code; gateway "
              f"{pairing.gateway_id} stays unused: revoke it in the app (the server revokes it a day on if nothing "
              f"does).", file=sys.stderr)
        return 1
    config.gateway_id = pairing.gateway_id
    config.gateway_secret = pairing.gateway_secret
    config.patient_ref = pairing.patient_ref
    config.device_serials = pairing.device_serials
    config.paired_at = datetime.now(UTC).isoformat()
    config.name = name
    try:
        config.save()
    except OSError as exc:
        raise ConfigError(f"paired as gateway {pairing.gateway_id}, but its credentials could not be saved in "
                          f"{config.state_dir}: {exc.strerror or exc}. Make the directory writable and run the same "
                          f"`pair` again with the same code within its 10 minutes: it is answered again, with a "
                          f"new secret") from exc
    config.forget_pairing_nonce()
    print(f"paired as gateway {pairing.gateway_id}; units: {', '.join(pairing.device_serials) or 'none yet'}")
    return 0


def _held_for_another_patient(config: GatewayConfig, patient_ref: str, units: list[str]) -> str:
    """What the buffer still holds for the patient this gateway was paired for, when a new pairing is for another
    ("" when it is for the same patient, the first pairing, or nothing waits). The previous patient is the one
    the configuration names, else (a configuration lost or cut short) the one the buffer noted; named nowhere (a
    buffer from before it noted one), the new pairing may take what waits only if it is all from its units."""
    if config.patient_ref == patient_ref:
        return ""
    status = inspect_buffer(config.buffer_path)
    if status is None:
        return ""
    previous = config.patient_ref or status.patient_ref
    if previous == patient_ref or previous is None and set(status.waiting_units) <= set(units):
        return ""
    waiting = {"record(s)": status.pending, "sync(s)": status.syncs_pending,
               "dead letter(s) not yet reported": status.dead_letters_unreported}
    return ", ".join(f"{count} {what}" for what, count in waiting.items() if count)


def _loop_line(health: LoopHealth | None) -> str:
    if health is None or not health.last_error:
        return "no error reported"
    if health.failing:
        return f"FAILING since {health.failing_since} ({health.failures} attempt(s)): {health.last_error}"
    return f"ok since {health.recovered_at}; last error at {health.last_error_at}: {health.last_error}"


def cmd_status(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Show pairing, disk, loop, buffer and unit state (never the secret); reads files only, creates none. Exit 3
    when a loop is failing now, a unit was not collected at its last pull, the disk is full or health.json does not
    parse."""
    if not Path(config.state_dir).is_dir():
        return _fail(f"no state directory at {config.state_dir}: check --state-dir (or "
                     "COMPANION_GATEWAY_STATE_DIR); a new gateway has one once it is paired", EXIT_NO_STATE)
    print(f"state dir:      {config.state_dir}")
    try:
        checked_api_url(config.api_url)
        print(f"api:            {config.api_url}")
    except ConfigError as refused:  # shown, not fatal: status sends nothing
        print(f"api:            {config.api_url} (NOT USABLE: {refused})")
    print(f"gateway:        {config.gateway_id or 'not paired'}")
    print(f"units:          {', '.join(config.device_serials) or 'none'}")
    free = shutil.disk_usage(config.state_dir).free
    disk_full = free < DISK_FULL_BELOW
    print(f"disk:           {_disk_line(free, disk_full)}")
    unreadable = health_file_unreadable(config.health_path)
    if unreadable:
        print(f"health:         UNREADABLE: {config.health_path} does not parse (a power cut while it was rewritten "
              "on a full disk?): failing loops and units cannot be shown")
    health = read_health(config.health_path)
    failing = any(loop.failing for loop in health.values())
    for loop in LOOPS:
        print(f"{loop + ' loop:':16}{_loop_line(health.get(loop))}")
    not_collected = read_unit_health(config.health_path)
    status = inspect_buffer(config.buffer_path)
    if status is None:
        print(f"buffer:         none yet ({config.buffer_path} is created by the first run or simulate)")
    else:
        print(f"pending:        {status.pending} record(s), {status.pending_bytes} bytes (cap {config.max_buffer_bytes})")
        print(f"uploaded:       {status.sent}")
        print(f"syncs waiting:  {status.syncs_pending}")
        print(f"dead letters:   {status.dead_letters} ({status.dead_letters_unreported} not yet reported to the "
              "server; `device-gateway dead-letters` lists them)")
        print(f"refused at cap: {status.refused_at_cap}")
    stored = status.units if status is not None else {}
    now = datetime.now(UTC)
    for serial in [*stored, *sorted(set(not_collected) - set(stored))]:
        print(_unit_line(serial, stored.get(serial), not_collected.get(serial), now))
    return EXIT_NEEDS_ATTENTION if failing or not_collected or disk_full or unreadable else 0


def _disk_line(free: int, full: bool) -> str:
    if full:
        return (f"FULL: {free // 1024} KiB free in the state directory: new records cannot be stored, so units are "
                "not collected")
    return f"{free // (1024 * 1024)} MiB free"


def _unit_line(serial: str, seq: int | None, health: UnitHealth | None, now: datetime) -> str:
    stored = f"last stored sequence {seq}" if seq is not None else "nothing stored yet"
    if health is None:
        return f"  {serial}: {stored}"
    # The gateway writes a unit refused again with the same error at most hourly: the count and time it last wrote.
    return (f"  {serial}: {stored}; NOT COLLECTED for {_lasted(health.failing_since, now)} (since "
            f"{health.failing_since}, at least {health.failures} pull(s), the last noted at {health.last_error_at}): "
            f"{health.last_error}")


def _lasted(since: str, now: datetime) -> str:
    """How long from ``since`` (a time health.json holds) to ``now``: "2 d 3 h", "3 h 12 min", "4 min"."""
    try:
        seconds = max(0, int((now - datetime.fromisoformat(since)).total_seconds()))
    except (TypeError, ValueError):  # a file edited by hand
        return "an unknown time"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "less than a minute"


def cmd_scan(args: argparse.Namespace, config: GatewayConfig) -> int:
    """List Companion TENS units in range and whether they are bound to this gateway."""

    async def scan() -> list:
        link = GatewayLink(RecordBuffer(":memory:"), config.device_serials)
        return await link.scan(args.timeout, only_bound=False)

    for unit in asyncio.run(scan()):
        bound = "bound" if unit.serial in config.device_serials else "not bound"
        print(f"{unit.serial}  {unit.device.address}  rssi {unit.rssi}  {bound}")
    return 0


def cmd_run(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Run until SIGTERM/SIGINT: pull units, upload, report status; finish the current write, close the DB."""
    if not config.is_paired:
        print("not paired: run `device-gateway pair CODE` first", file=sys.stderr)
        return 1
    api = config.api_client()  # first: an API URL it may not use (exit 78) leaves no buffer open
    buffer = config.open_buffer()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = GatewayRunner(config, buffer, api, progress=_progress_line, interval_s=args.interval,
                               health=GatewayHealth(config.health_path))
        await runner.run(stop)

    try:
        asyncio.run(main())
    finally:
        if api:
            api.close()
        buffer.close()
        logger.info("gateway stopped; buffer closed")
    return 0


def cmd_dead_letters(args: argparse.Namespace, config: GatewayConfig) -> int:
    """List the buffer's dead letters, or put some back in the upload queue (``--replay ID...``/``--replay-all``)."""
    if inspect_buffer(config.buffer_path) is None:
        print(f"no buffer yet at {config.buffer_path}")
        return 0
    buffer = config.open_buffer()
    try:
        if args.replay or args.replay_all:
            outcomes = replay(buffer, None if args.replay_all else set(args.replay))
            for outcome in outcomes:
                print(f"#{outcome.dead_letter_id}: {outcome.outcome}")
            if not outcomes:
                print("no such dead letter")
            print(f"{sum(o.queued for o in outcomes)} queued for upload; `run` sends them")
            return 0
        dead = buffer.dead_letters()
        for d in dead:
            reported = f"reported {d['reported_at']}" if d["reported_at"] else "not yet reported"
            what = d["record_id"] or "(no record)"
            print(f"#{d['id']}  {d['device_serial']}  {what}  {d['source']}  {d['dead_at']}  {reported}\n"
                  f"      {d['reason']}")
        print(f"{len(dead)} dead letter(s)")
        return 0
    finally:
        buffer.close()


def cmd_buffer_recover(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Set a damaged or lost buffer aside and start a new one where each unit left off."""
    recovery = recover_buffer(config)
    if recovery.intact:
        print(f"buffer {config.buffer_path} is intact; nothing to recover")
        return 0
    if recovery.resumed:
        print("finished the recovery that had stopped before it was done")
    for moved in recovery.moved:
        print(f"moved aside: {moved}")
    print(f"new buffer:  {config.buffer_path}")
    if recovery.resumes_after:
        positions = ", ".join(f"{serial} after {seq}" for serial, seq in recovery.resumes_after.items())
        print(f"units resume: {positions}")
    else:
        print("units resume: no positions were recorded; each unit is read from the oldest record it holds")
    print(f"carried over: {recovery.carried_over} record(s) still waiting for upload that the old buffer still "
          "held readable; any others are lost (the units no longer hold them), and the server is told so")
    if recovery.lost or recovery.unreadable_positions:
        print(f"lost:         {recovery.lost} queued record(s) whose rows no longer read or open, each named in a "
              f"dead letter; {recovery.unreadable_positions} unreadable row(s) of the queue that nothing names")
    return 0


def cmd_simulate(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Start a private bus with simulated units and pull (and, if paired, upload) their records."""
    from device_gateway.simulator.demo import simulate

    return simulate(config, units=args.units, records=args.records, drop_after=args.drop_after, progress=_progress_line)


def _add_common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--state-dir", default=default, help="config and buffer directory (default ~/.companion-gateway)")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``device-gateway``."""
    parser = argparse.ArgumentParser(prog="device-gateway", description="Companion BLE gateway for TENS units")
    _add_common_options(parser, default=None)
    # The same options after the command; SUPPRESS keeps a value given before the command when they are absent.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", parents=[common], help="list Companion TENS units in range")
    scan.add_argument("--timeout", type=float, default=5.0)
    scan.set_defaults(handler=cmd_scan)

    pair_cmd = commands.add_parser("pair", parents=[common], help="pair this gateway with a patient using a pairing code")
    pair_cmd.add_argument("code")
    pair_cmd.add_argument("--api", help="API base URL (default: config, COMPANION_API_URL)")
    pair_cmd.add_argument("--name", help="a name for this gateway (default: host name)")
    pair_cmd.set_defaults(handler=cmd_pair)

    run = commands.add_parser("run", parents=[common], help="pull units and upload until stopped")
    run.add_argument("--interval", type=float, default=30.0, help="seconds between BLE cycles")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", parents=[common], help="pairing, loop and buffer state")
    status.set_defaults(handler=cmd_status)

    dead = commands.add_parser("dead-letters", parents=[common],
                               help="list the buffer's dead letters, or put some back in the upload queue")
    dead.add_argument("--replay", type=int, nargs="+", metavar="ID", default=[], help="dead letters to queue again")
    dead.add_argument("--replay-all", action="store_true", help="queue every dead letter that has a record again")
    dead.set_defaults(handler=cmd_dead_letters)

    recover = commands.add_parser(
        "buffer-recover", parents=[common],
        help="set a damaged or lost buffer aside and start a new one where each unit left off",
    )
    recover.set_defaults(handler=cmd_buffer_recover)

    simulate = commands.add_parser("simulate", parents=[common], help="demo: simulated units on a private D-Bus bus")
    simulate.add_argument("--units", type=int, default=2)
    simulate.add_argument("--records", type=int, default=20)
    simulate.add_argument("--drop-after", type=int, default=None, help="drop each link once after N records")
    simulate.set_defaults(handler=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``device-gateway``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("bleak", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            config = load_config(args.state_dir, replacing=args.handler is cmd_pair)
        except ConfigError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        try:
            return args.handler(args, config)
        except ConfigError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        except BufferDamaged as exc:
            recover = f"device-gateway buffer-recover --state-dir {shlex.quote(config.state_dir)}"
            return _fail(f"{exc}. To recover: {recover}", EXIT_BUFFER_DAMAGED)
        except SealingError as exc:
            return _fail(f"buffer key: {exc}", EXIT_BUFFER_KEY)
        except BluetoothUnavailable as exc:
            return _fail(str(exc), EXIT_BLUETOOTH_UNAVAILABLE)
        except CredentialsRevoked as exc:
            return _fail(
                f"{exc}: this gateway was unpaired or revoked. "
                "Pair it again with `device-gateway pair CODE`; buffered records are kept",
                EXIT_CREDENTIALS_REVOKED,
            )
    return 130


def _fail(message: str, status: int) -> int:
    print(f"device-gateway: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
