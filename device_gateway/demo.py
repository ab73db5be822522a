"""The local demo's gateway: ``python -m device_gateway.demo --api URL --state-dir DIR`` (see scripts/run-local.sh).

It signs in as a demo patient, gets a pairing code and pairs (once; the state dir remembers), then runs
the real gateway against simulated units on a private D-Bus bus. Each bound unit lives like a real one: it
arrives holding the sessions the patient did since the last one on the server (at their usual times, 08:00,
13:00 and 19:00 on their own clock, give or take), then finishes a new one at each usual time as the day goes
on, 30 to 45 minutes long, its battery draining a little with each and charged when low (a charge lasts
days). ``--session-every S`` speeds that up for tests (a short session every S seconds). Demo only: it uses
the demo patient's password.
"""

import argparse
import asyncio
import dataclasses
import logging
import random
import signal
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx

from device_gateway.api import checked_api_url, pair, tls_verification
from device_gateway.config import GatewayConfig, load_config
from device_gateway.health import GatewayHealth
from device_gateway.runner import GatewayRunner
from device_gateway.simulator.bus import PrivateSystemBus
from device_gateway.simulator.demo import unit_address
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.unit import FakeTensUnit

logger = logging.getLogger("device_gateway.demo")

DEMO_PATIENT = "maria@demo.companion.example"
DEMO_PASSWORD = "companion-demo"  # noqa: S105 - the seeded demo account (companion/demo.py), local runs only
USUAL_TIMES = (time(8, 0), time(13, 0), time(19, 0))  # when the demo patient usually has a session, local
BACKLOG_DAYS = 2  # at most this much of the patient's life since the last upload is on the unit at start


def _patient_session(config: GatewayConfig, email: str, password: str) -> tuple[httpx.Client, dict]:
    http = httpx.Client(base_url=checked_api_url(config.api_url), timeout=15,
                        verify=tls_verification(config.ca_file))
    tokens = http.post("/api/v1/auth/login", json={"email": email, "password": password})
    tokens.raise_for_status()
    http.headers["Authorization"] = f"Bearer {tokens.json()['access_token']}"
    me = http.get("/api/v1/auth/me")
    me.raise_for_status()
    return http, me.json()


def pair_as_demo_patient(config: GatewayConfig, email: str, password: str) -> None:
    """Get a pairing code as the demo patient and pair this gateway with it."""
    http, me = _patient_session(config, email, password)
    try:
        response = http.post(f"/api/v1/patients/{me['id']}/pairing-codes")
        response.raise_for_status()
    finally:
        http.close()
    pairing = pair(config.api_url, response.json()["code"], f"demo gateway on {socket.gethostname()}",
                   ca_file=config.ca_file)
    config.gateway_id, config.gateway_secret = pairing.gateway_id, pairing.gateway_secret
    config.patient_ref, config.device_serials = pairing.patient_ref, pairing.device_serials
    config.name = "demo gateway"
    config.save()
    logger.info("paired with %d unit(s)", len(pairing.device_serials))


@dataclass
class KnownUnit:
    """What the server already holds from a unit: its highest sequence and when its last session started."""

    highest_seq: int = 0
    last_start: datetime | None = None


def known_units(config: GatewayConfig, email: str, password: str) -> tuple[dict[str, KnownUnit], str]:
    """Per unit, what is already on the server (the seeded history), so new records follow it; and the
    patient's time zone."""
    http, me = _patient_session(config, email, password)
    try:
        response = http.get(f"/api/v1/patients/{me['id']}/sessions", params={"limit": 500})
        response.raise_for_status()
    finally:
        http.close()
    known: dict[str, KnownUnit] = {}
    for item in response.json()["items"]:
        unit = known.setdefault(item["device_serial"], KnownUnit())
        if item["device_seq"] > unit.highest_seq:
            unit.highest_seq = item["device_seq"]
            unit.last_start = datetime.fromisoformat(item["started_at"])
    return known, me.get("time_zone") or "UTC"


def usual_sessions(zone: str, after: datetime, until: datetime, rng: random.Random) -> list[tuple[datetime, int]]:
    """The sessions a patient who keeps to the usual times has between two instants: (start, minutes)."""
    tz = ZoneInfo(zone)
    day = after.astimezone(tz).date()
    found = []
    while day <= until.astimezone(tz).date():
        for usual in USUAL_TIMES:
            start = datetime.combine(day, usual, tz).astimezone(UTC) + timedelta(minutes=rng.randint(-15, 20))
            minutes = rng.choice([30, 30, 35, 45])
            if after < start and start + timedelta(minutes=minutes) <= until and rng.random() < 0.9:
                found.append((start, minutes))
        day += timedelta(days=1)
    return found


def live_a_session(unit: FakeTensUnit, start: datetime, minutes: int) -> None:
    """Record a session the unit ran from ``start`` (in the past) for ``minutes``, on its own clock."""
    record = unit.finish_session(duration_s=minutes * 60)
    unit.records[-1] = dataclasses.replace(record, device_started_at=int(start.timestamp() + unit.clock_offset_s))


async def _run(config: GatewayConfig, units: list[FakeTensUnit], zone: str, session_every_s: float | None,
               interval_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fake = await FakeBluez().start()
    buffer = config.open_buffer()
    api = config.api_client()
    assert api is not None
    try:
        for unit in units:
            fake.add_unit(unit)
        runner = GatewayRunner(config, buffer, api, interval_s=interval_s, health=GatewayHealth(config.health_path))
        gateway = asyncio.create_task(runner.run(stop))
        rng = random.Random()
        if session_every_s is not None:
            await _sessions_every(stop, units, session_every_s, rng)
        else:
            await _sessions_at_usual_times(stop, units, zone, rng)
        await gateway
    finally:
        await fake.stop()
        api.close()
        buffer.close()


async def _sessions_every(stop: asyncio.Event, units: list[FakeTensUnit], every_s: float, rng: random.Random) -> None:
    """Fast mode (tests): a short session every ``every_s`` seconds."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            unit = rng.choice(units)
            unit.finish_session(duration_s=max(1, int(every_s * 0.8)))
            logger.info("simulated unit %s finished session %d", unit.serial, unit.highest_seq)


async def _sessions_at_usual_times(stop: asyncio.Event, units: list[FakeTensUnit], zone: str,
                                   rng: random.Random) -> None:
    """Real time: each unit finishes a session at the patient's usual times as the day goes on."""
    while not stop.is_set():
        now = datetime.now(UTC)
        upcoming = usual_sessions(zone, now, now + timedelta(days=1), rng)
        if not upcoming:
            upcoming = [(now + timedelta(hours=6), 30)]
        start, minutes = upcoming[0]
        end = start + timedelta(minutes=minutes)
        logger.info("next simulated session ends at %s", end.isoformat(timespec="minutes"))
        try:
            await asyncio.wait_for(stop.wait(), max(1.0, (end - datetime.now(UTC)).total_seconds()))
        except TimeoutError:
            for unit in units:
                live_a_session(unit, start, minutes)
                logger.info("simulated unit %s finished session %d", unit.serial, unit.highest_seq)


def main(argv: list[str] | None = None) -> None:
    """Pair if needed, then run the gateway with simulated units until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True, help="API base URL")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--patient-email", default=DEMO_PATIENT)
    parser.add_argument("--patient-password", default=DEMO_PASSWORD)
    parser.add_argument("--backlog", type=int, default=None,
                        help="sessions each unit holds at start (default: those since the last one on the server, "
                             f"at most {BACKLOG_DAYS} days of them)")
    parser.add_argument("--session-every", type=float, default=None,
                        help="seconds between new (short) simulated sessions; default: at the patient's usual times")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between BLE cycles")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "bleak"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)

    config = load_config(args.state_dir)
    config.api_url = checked_api_url(args.api)
    if not config.is_paired:
        pair_as_demo_patient(config, args.patient_email, args.patient_password)
    known, zone = known_units(config, args.patient_email, args.patient_password)
    rng = random.Random()
    now = datetime.now(UTC)
    units = []
    for n, serial in enumerate(config.device_serials, start=1):
        seen = known.get(serial, KnownUnit())
        unit = FakeTensUnit(serial=serial, address=unit_address(n), highest_seq=seen.highest_seq)
        if args.backlog is not None:
            for _ in range(args.backlog):
                unit.finish_session()
        else:
            since = max(seen.last_start or now - timedelta(days=1), now - timedelta(days=BACKLOG_DAYS))
            for start, minutes in usual_sessions(zone, since + timedelta(minutes=1), now, rng):
                live_a_session(unit, start, minutes)
        logger.info("unit %s holds %d session(s) not yet uploaded", serial, len(unit.records))
        units.append(unit)
    with PrivateSystemBus() as bus:
        bus.export_to_environment()
        asyncio.run(_run(config, units, zone, args.session_every, args.interval))


if __name__ == "__main__":
    main()
