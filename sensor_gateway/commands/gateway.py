"""``crampwatch gateway``: connect to calf bands over BLE, detect cramps, record, publish events.

Bands are found by the crampwatch service UUID (or pinned in ``[gateway].bands``);
each gets its own detector and an EDF+ file per night under ``--data-dir``.
Events (and status records) go to ``--events`` as JSON Lines.  SIGINT/SIGTERM
or ``--duration`` end the run cleanly: detectors finish, EDF+ files are closed,
sinks flushed.  Details: docs/gateway.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from pathlib import Path

HELP = "connect to bands over BLE, detect cramps, record EDF+ and publish events"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch gateway``."""
    parser.add_argument("--config", type=Path, metavar="TOML", help="config file ([gateway])")
    parser.add_argument("--adapter", metavar="HCI", help="BlueZ adapter (default: hci0)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="where recordings go")
    parser.add_argument(
        "--events", metavar="FILE", default="-", help="JSON Lines events file, '-' = stdout"
    )
    parser.add_argument("--summaries", action="store_true", help="also write 1-s summaries")
    parser.add_argument("--max-bands", type=int, metavar="N", help="use at most N bands")
    parser.add_argument("--band", action="append", metavar="ADDR|NAME", help="pin a band")
    parser.add_argument("--no-record", action="store_true", help="do not write EDF+ files")
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (tests, demos)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the gateway until interrupted or ``--duration`` is over."""
    from sensor_gateway.config import read_config_file  # noqa: PLC0415
    from sensor_gateway.gateway import Gateway, GatewayConfig  # noqa: PLC0415
    from sensor_gateway.sinks import JsonLinesSink  # noqa: PLC0415

    cfg = GatewayConfig.load(read_config_file(args.config))
    overrides: dict[str, object] = {}
    if args.adapter:
        overrides["adapter"] = args.adapter
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.max_bands is not None:
        overrides["max_bands"] = args.max_bands
    if args.band:
        overrides["bands"] = tuple(args.band)
    if args.no_record:
        overrides["record"] = False
    cfg = dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]

    async def main() -> None:
        sink = JsonLinesSink(args.events, summaries=args.summaries)
        gw = Gateway(cfg, [sink])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop.set)
        try:
            await gw.run(args.duration)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return 0
