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
from pathlib import Path

from sensor_gateway.commands._argtypes import positive_float
from sensor_gateway.stop_signals import run_until_stopped

HELP = "store crampwatch MQTT events, status and summaries in InfluxDB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch record``."""
    parser.add_argument("--config", type=Path, metavar="TOML", help="config ([mqtt], [influx])")
    parser.add_argument(
        "--duration", type=positive_float, metavar="S", help="stop after S seconds (tests, demos)"
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
            status_interval_s=influx_cfg.status_interval_s or None,
        )
        await run_until_stopped(recorder.run, args.duration)

    asyncio.run(main())
    return 0
