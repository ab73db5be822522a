"""The local demo's gateway: ``python -m device_gateway.demo --api URL --state-dir DIR`` (see scripts/run-local.sh).

It signs in as a demo patient, gets a pairing code and pairs (once; the state dir remembers), then runs
the real gateway against simulated units on a private D-Bus bus: each bound unit arrives with a small
backlog after the sessions already on the server, and finishes a new session every so often, so data
keeps flowing to the dashboard. Demo only: it uses the demo patient's password.
"""

import argparse
import asyncio
import logging
import random
import signal
import socket

import httpx

from device_gateway.api import pair, tls_verification
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


def _patient_session(config: GatewayConfig, email: str, password: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=config.api_url, timeout=15, verify=tls_verification(config.ca_file))
    tokens = http.post("/api/v1/auth/login", json={"email": email, "password": password})
    tokens.raise_for_status()
    http.headers["Authorization"] = f"Bearer {tokens.json()['access_token']}"
    me = http.get("/api/v1/auth/me")
    me.raise_for_status()
    return http, me.json()["id"]


def pair_as_demo_patient(config: GatewayConfig, email: str, password: str) -> None:
    """Get a pairing code as the demo patient and pair this gateway with it."""
    http, patient_id = _patient_session(config, email, password)
    try:
        response = http.post(f"/api/v1/patients/{patient_id}/pairing-codes")
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


def highest_known_seqs(config: GatewayConfig, email: str, password: str) -> dict[str, int]:
    """The highest sequence per unit already on the server (the seeded history), so new records follow it."""
    http, patient_id = _patient_session(config, email, password)
    try:
        response = http.get(f"/api/v1/patients/{patient_id}/sessions", params={"limit": 500})
        response.raise_for_status()
    finally:
        http.close()
    highest: dict[str, int] = {}
    for item in response.json()["items"]:
        highest[item["device_serial"]] = max(highest.get(item["device_serial"], 0), item["device_seq"])
    return highest


async def _run(config: GatewayConfig, units: list[FakeTensUnit], session_every_s: float, interval_s: float) -> None:
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
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), session_every_s)
            except TimeoutError:
                unit = rng.choice(units)
                unit.finish_session()
                logger.info("simulated unit %s finished session %d", unit.serial, unit.highest_seq)
        await gateway
    finally:
        await fake.stop()
        api.close()
        buffer.close()


def main(argv: list[str] | None = None) -> None:
    """Pair if needed, then run the gateway with simulated units until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True, help="API base URL")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--patient-email", default=DEMO_PATIENT)
    parser.add_argument("--patient-password", default=DEMO_PASSWORD)
    parser.add_argument("--backlog", type=int, default=6, help="sessions each unit holds at start")
    parser.add_argument("--session-every", type=float, default=20.0, help="seconds between new simulated sessions")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between BLE cycles")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "bleak"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)

    config = load_config(args.state_dir)
    config.api_url = args.api
    if not config.is_paired:
        pair_as_demo_patient(config, args.patient_email, args.patient_password)
    highest = highest_known_seqs(config, args.patient_email, args.patient_password)
    units = []
    for n, serial in enumerate(config.device_serials, start=1):
        unit = FakeTensUnit(serial=serial, address=unit_address(n), highest_seq=highest.get(serial, 0))
        for _ in range(args.backlog):
            unit.finish_session()
        units.append(unit)
    with PrivateSystemBus() as bus:
        bus.export_to_environment()
        asyncio.run(_run(config, units, args.session_every, args.interval))


if __name__ == "__main__":
    main()
