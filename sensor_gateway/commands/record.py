"""``crampwatch record``: store crampwatch MQTT messages in InfluxDB.

Reads ``[mqtt]`` (broker, recorder credentials, optional ``share_group``) and
``[influx]`` (1.x database or 2.x bucket/org/token, batching, disk spool) from
``--config`` and the environment (secrets: ``CRAMPWATCH_MQTT_PASSWORD_FILE``,
``CRAMPWATCH_INFLUX_TOKEN_FILE``, ...).  Runs until SIGINT/SIGTERM or
``--duration``; on the way out the last batch is flushed (or spooled) and
acknowledged.  Details: docs/mqtt.md, docs/influx-schema.md.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

HELP = "store crampwatch MQTT events, status and summaries in InfluxDB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch record``."""
    parser.add_argument("--config", type=Path, metavar="TOML", help="config ([mqtt], [influx])")
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (tests, demos)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the recorder until interrupted or ``--duration`` is over."""
    from sensor_gateway.config import read_config_file  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.influx import InfluxConfig, make_writer  # noqa: PLC0415
    from sensor_gateway.mqtt import MqttConfig  # noqa: PLC0415
    from sensor_gateway.recorder import Recorder, spool_for  # noqa: PLC0415

    doc = read_config_file(args.config)
    mqtt_cfg = MqttConfig.load(doc)
    influx_cfg = InfluxConfig.load(doc)
    if not mqtt_cfg.username or not mqtt_cfg.password:
        raise ConfigError("[mqtt] username and password are required (no anonymous access)")

    async def main() -> None:
        writer = make_writer(influx_cfg)
        spool = spool_for(influx_cfg.spool_dir, influx_cfg.spool_max_bytes)
        recorder = Recorder(
            mqtt_cfg,
            writer,
            spool,
            batch_size=influx_cfg.batch_size,
            flush_interval_s=influx_cfg.flush_interval_s,
            retry_interval_s=influx_cfg.retry_interval_s,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        try:
            await recorder.run(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return 0
