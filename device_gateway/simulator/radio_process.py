"""Run the fake BlueZ with simulated units as a process of its own, until SIGTERM.

``python -m device_gateway.simulator.radio_process --serials CT-000001,CT-000002 --records 100`` with
``DBUS_SYSTEM_BUS_ADDRESS`` pointing at a private bus; prints ``READY`` once the units are in range.
Used by tests that run ``device-gateway run`` as a real process, and for demos.
"""

import argparse
import asyncio
import signal

from device_gateway.simulator.demo import unit_address
from device_gateway.simulator.radio import FakeBluez
from device_gateway.simulator.unit import FakeTensUnit


async def serve(serials: list[str], records: int, drop_after: int | None, notify_interval_s: float) -> None:
    """Host the units until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fake = await FakeBluez(notify_interval_s).start()
    try:
        for n, serial in enumerate(serials, start=1):
            fake.add_unit(FakeTensUnit.with_history(serial, unit_address(n), records, drop_link_after=drop_after))
        print("READY", flush=True)
        await stop.wait()
    finally:
        await fake.stop()


def main() -> None:
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serials", default="CT-000001", help="comma-separated serials of the simulated units")
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--drop-after", type=int, default=None)
    parser.add_argument("--notify-interval-ms", type=float, default=1.0, help="pause between two notified records")
    args = parser.parse_args()
    asyncio.run(serve(args.serials.split(","), args.records, args.drop_after, args.notify_interval_ms / 1000))


if __name__ == "__main__":
    main()
