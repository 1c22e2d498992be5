"""``crampwatch demo``: the whole live path on one machine, stopped cleanly by Ctrl-C.

Simulated band(s) → BLE (BlueZ emulation) → gateway + detector → MQTT → recorder →
InfluxDB → night view and alerts, with private servers started for the user.
Details: :mod:`sensor_gateway.demo`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sensor_gateway.commands._argtypes import port, positive_float, positive_int

HELP = "live demo: simulated band -> BLE -> detector -> MQTT -> InfluxDB -> night view"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "crampwatch" / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch demo``."""
    parser.add_argument(
        "--bands", type=positive_int, default=1, help="simulated bands (default: 1)"
    )
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=60.0,
        help="night seconds per wall second (default: 60, an 8-h night in 8 min)",
    )
    parser.add_argument(
        "--seed", type=int, default=12, help="simulator seed of band 1 (12: first cramp at 51 min)"
    )
    parser.add_argument("--hours", type=positive_float, default=8.0, help="simulated night length")
    parser.add_argument("--profile", default="typical", help="simulator profile")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="play a recording instead")
    parser.add_argument("--mqtt-url", metavar="URL", help="use this broker (mqtt[s]://host:port)")
    parser.add_argument("--influx-url", metavar="URL", help="use this InfluxDB 1.x (http://...)")
    parser.add_argument("--port", type=port, default=8080, help="night view port (default: 8080)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="servers' data, recordings, logs (default: ~/.local/share/crampwatch/demo)",
    )
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``--duration``."""
    import asyncio  # noqa: PLC0415

    from sensor_gateway.demo import DemoOptions, run_demo  # noqa: PLC0415

    opts = DemoOptions(
        data_dir=(args.data_dir or _default_data_dir()).expanduser().resolve(),
        bands=args.bands,
        speed=args.speed,
        seed=args.seed,
        hours=args.hours,
        profile=args.profile,
        replay=args.replay,
        mqtt_url=args.mqtt_url,
        influx_url=args.influx_url,
        http_port=args.port,
        duration_s=args.duration,
    )
    return asyncio.run(run_demo(opts))
