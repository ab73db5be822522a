"""``device-gateway simulate``: simulated units on a private bus, pulled by the real gateway code.

If the gateway is paired, the simulated units take the serials bound to it (so the API accepts their
records) and the buffer is uploaded; units asked for beyond those are in range but bound to nobody, so the
gateway leaves them alone, as it would a neighbour's. Otherwise every simulated unit is pulled and the records
stay in the local buffer.
"""

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Callable

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.config import GatewayConfig
from device_gateway.runner import GatewayRunner
from device_gateway.simulator.bus import PrivateSystemBus
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.unit import FakeTensUnit
from device_gateway.uploader import UploadProgress


def simulated_serials(config: GatewayConfig, units: int) -> list[str]:
    """The paired units' serials first, then made-up ones."""
    serials = list(config.device_serials[:units])
    serials += [f"CT-SIM-{n:04d}" for n in range(len(serials) + 1, units + 1)]
    return serials


def unit_address(n: int) -> str:
    """A stable fake Bluetooth address for the n-th simulated unit."""
    return f"C0:FF:EE:00:{n // 256:02X}:{n % 256:02X}"


def simulate(
    config: GatewayConfig,
    units: int,
    records: int,
    drop_after: int | None = None,
    progress: Callable[[UploadProgress], None] | None = None,
) -> int:
    """Run the demo; returns the process exit status."""
    # There is no bluetoothctl with the fake radio; bleak's warning about it would only confuse a demo.
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)
    serials = simulated_serials(config, units)
    pulled = list(config.device_serials[:units]) if config.is_paired else serials
    sim_config = dataclasses.replace(config, device_serials=pulled)
    api = config.api_client()  # first: an API URL it may not use (exit 78) leaves no buffer open
    buffer = config.open_buffer()
    for stranger in sorted(set(serials) - set(pulled)):
        print(f"{stranger}: in range but not bound to this gateway's patient; not pulled", file=sys.stderr)
    try:
        with PrivateSystemBus() as bus:
            bus.export_to_environment()
            runner = asyncio.run(_pull(sim_config, buffer, api, serials, pulled, records, drop_after, progress))
        if api is None:
            print(
                f"not paired: {buffer.pending_count()} record(s) wait in {config.buffer_path}; "
                "run `device-gateway pair CODE` to upload them",
                file=sys.stderr,
            )
            return 0
        print(f"uploading {buffer.pending_count()} record(s) to {config.api_url}", file=sys.stderr)
        outcome = runner.upload_all()
        remaining = buffer.pending_count()
        if outcome is not None:
            print(f"uploaded {outcome.sent}, dead-lettered {outcome.dead_lettered}, still queued {remaining}")
        return 0 if remaining == 0 else 2
    finally:
        if api:
            api.close()
        buffer.close()


async def _pull(
    config: GatewayConfig,
    buffer: RecordBuffer,
    api: ApiClient | None,
    serials: list[str],
    pulled: list[str],
    records: int,
    drop_after: int | None,
    progress: Callable[[UploadProgress], None] | None,
) -> GatewayRunner:
    fake = await FakeBluez().start()
    try:
        for n, serial in enumerate(serials, start=1):
            fake.add_unit(FakeTensUnit.with_history(serial, unit_address(n), records, drop_link_after=drop_after))
        runner = GatewayRunner(config, buffer, api, progress=progress)
        results = await runner.pull_until_done(set(pulled))
        for result in sorted(results, key=lambda r: r.serial):
            state = "complete" if result.completed else "incomplete"
            print(
                f"{result.serial}: {result.stored} record(s) stored over {result.attempts} connection(s), {state}",
                file=sys.stderr,
            )
        return runner
    finally:
        await fake.stop()
