"""The ``device-gateway`` command: scan, pair, run, status, simulate."""

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from datetime import UTC, datetime

import httpx

from device_gateway.api import pair
from device_gateway.buffer import RecordBuffer
from device_gateway.config import GatewayConfig, load_config
from device_gateway.link import GatewayLink
from device_gateway.runner import GatewayRunner
from device_gateway.uploader import UploadProgress

logger = logging.getLogger("device_gateway")


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
    if args.api:
        config.api_url = args.api
    name = args.name or socket.gethostname()
    try:
        pairing = pair(config.api_url, args.code, name, ca_file=config.ca_file)
    except httpx.HTTPStatusError as exc:
        print(f"pairing refused: HTTP {exc.response.status_code}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"cannot reach {config.api_url}: {exc}", file=sys.stderr)
        return 1
    config.gateway_id = pairing.gateway_id
    config.gateway_secret = pairing.gateway_secret
    config.patient_ref = pairing.patient_ref
    config.device_serials = pairing.device_serials
    config.paired_at = datetime.now(UTC).isoformat()
    config.name = name
    config.save()
    print(f"paired as gateway {pairing.gateway_id}; units: {', '.join(pairing.device_serials) or 'none yet'}")
    return 0


def cmd_status(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Show pairing and buffer state (never the secret)."""
    buffer = config.open_buffer()
    try:
        status = buffer.status()
    finally:
        buffer.close()
    print(f"state dir:      {config.state_dir}")
    print(f"api:            {config.api_url}")
    print(f"gateway:        {config.gateway_id or 'not paired'}")
    print(f"units:          {', '.join(config.device_serials) or 'none'}")
    print(f"pending:        {status.pending} record(s), {status.pending_bytes} bytes (cap {config.max_buffer_bytes})")
    print(f"uploaded:       {status.sent}")
    print(f"dead letters:   {status.dead_letters}")
    print(f"refused at cap: {status.refused_at_cap}")
    for serial, seq in status.units.items():
        print(f"  {serial}: last stored sequence {seq}")
    return 0


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
    buffer = config.open_buffer()
    api = config.api_client()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = GatewayRunner(config, buffer, api, progress=_progress_line, interval_s=args.interval)
        await runner.run(stop)

    try:
        asyncio.run(main())
    finally:
        if api:
            api.close()
        buffer.close()
        logger.info("gateway stopped; buffer closed")
    return 0


def cmd_simulate(args: argparse.Namespace, config: GatewayConfig) -> int:
    """Start a private bus with simulated units and pull (and, if paired, upload) their records."""
    from device_gateway.simulator.demo import simulate

    return simulate(config, units=args.units, records=args.records, drop_after=args.drop_after, progress=_progress_line)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``device-gateway``."""
    parser = argparse.ArgumentParser(prog="device-gateway", description="Companion BLE gateway for TENS units")
    parser.add_argument("--state-dir", help="config and buffer directory (default ~/.companion-gateway)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    scan = commands.add_parser("scan", help="list Companion TENS units in range")
    scan.add_argument("--timeout", type=float, default=5.0)
    scan.set_defaults(handler=cmd_scan)

    pair_cmd = commands.add_parser("pair", help="pair this gateway with a patient using a pairing code")
    pair_cmd.add_argument("code")
    pair_cmd.add_argument("--api", help="API base URL (default: config, COMPANION_API_URL)")
    pair_cmd.add_argument("--name", help="a name for this gateway (default: host name)")
    pair_cmd.set_defaults(handler=cmd_pair)

    run = commands.add_parser("run", help="pull units and upload until stopped")
    run.add_argument("--interval", type=float, default=30.0, help="seconds between BLE cycles")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="pairing and buffer state")
    status.set_defaults(handler=cmd_status)

    simulate = commands.add_parser("simulate", help="demo: simulated units on a private D-Bus bus")
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
    config = load_config(args.state_dir)
    with contextlib.suppress(KeyboardInterrupt):
        return args.handler(args, config)
    return 130


if __name__ == "__main__":
    sys.exit(main())
