"""``crampwatch alerts``: alert on cramps, frequent cramps and band problems.

Reads ``[alerts]`` (rules, cooldowns, quiet hours, ``state_dir``) and its
``[alerts.webhooks.<name>]`` tables, ``[mqtt]`` (a user that may read
``crampwatch/#`` and write ``crampwatch/alert/#``) and, for the weekly rule,
``[influx]`` (InfluxQL; a read-only user is enough) from ``--config`` and the
environment (secrets: ``CRAMPWATCH_MQTT_PASSWORD_FILE``,
``CRAMPWATCH_ALERTS_WEBHOOKS_<NAME>_TOKEN_FILE``, ``..._URL_FILE`` ...).  Runs until
SIGINT/SIGTERM or ``--duration``; undelivered alerts stay on disk for the next
run.  Details: docs/alerts.md.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from sensor_gateway.commands._argtypes import positive_float
from sensor_gateway.stop_signals import run_until_stopped

HELP = "alert on cramps, frequent cramps and band problems (MQTT topic, webhooks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch alerts``."""
    parser.add_argument(
        "--config", type=Path, metavar="TOML", help="config ([alerts], [mqtt], [influx])"
    )
    parser.add_argument(
        "--duration", type=positive_float, metavar="S", help="stop after S seconds (tests, demos)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the alerts service until interrupted or ``--duration`` is over."""
    from sensor_gateway.alert_delivery import load_webhooks  # noqa: PLC0415
    from sensor_gateway.alert_service import AlertService  # noqa: PLC0415
    from sensor_gateway.alerts import AlertsConfig  # noqa: PLC0415
    from sensor_gateway.config import read_config_file  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.influx import InfluxConfig  # noqa: PLC0415
    from sensor_gateway.mqtt import MqttConfig  # noqa: PLC0415
    from sensor_gateway.nights import local_zone, query_for  # noqa: PLC0415

    doc = read_config_file(args.config)
    cfg = AlertsConfig.load(doc)
    webhooks = load_webhooks(doc)
    mqtt_cfg = MqttConfig.load(doc)
    if not mqtt_cfg.username or not mqtt_cfg.password:
        raise ConfigError("[mqtt] username and password are required (no anonymous access)")
    influx_cfg = InfluxConfig.load(doc) if cfg.weekly_nights else None
    tz = local_zone(cfg.timezone)

    async def main() -> None:
        query = None if influx_cfg is None else query_for(influx_cfg)
        service = AlertService(cfg, mqtt_cfg, webhooks, tz=tz, query=query)
        await run_until_stopped(service.run, args.duration)

    asyncio.run(main())
    return 0
