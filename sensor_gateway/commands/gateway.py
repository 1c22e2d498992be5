"""``crampwatch gateway``: connect to calf bands over BLE, detect cramps, record, publish events.

Bands are found by the crampwatch service UUID (or pinned in ``[gateway].bands``);
each gets its own detector and an EDF+ file per night under ``--data-dir``.

Outputs: with MQTT configured (an ``[mqtt]`` table in the config file,
``$CRAMPWATCH_MQTT_HOST`` or ``--mqtt-url``) events, band status and 1-s summaries
go to the broker through :class:`~sensor_gateway.mqtt_sink.MqttSink` (disk outbox,
gateway online/offline with a Last Will), and to ``--events`` as JSON Lines only
when that option is given; without MQTT they go to ``--events`` (default: stdout).
SIGINT/SIGTERM or ``--duration`` end the run cleanly: detectors finish, EDF+ files
are closed, sinks flushed.  Details: docs/gateway.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sensor_gateway.commands._argtypes import positive_float, positive_int
from sensor_gateway.stop_signals import on_stop_signals

if TYPE_CHECKING:
    from sensor_gateway.mqtt import MqttConfig
    from sensor_gateway.sinks import EventSink

HELP = "connect to bands over BLE, detect cramps, record EDF+ and publish events"

#: Default broker ports of the ``mqtt://`` and ``mqtts://`` schemes.
MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch gateway``."""
    parser.add_argument(
        "--config", type=Path, metavar="TOML", help="config file ([gateway], [mqtt])"
    )
    parser.add_argument("--adapter", metavar="HCI", help="BlueZ adapter (default: hci0)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="where recordings go")
    parser.add_argument(
        "--events",
        metavar="FILE",
        help="JSON Lines events file, '-' = stdout (default: stdout unless MQTT is configured)",
    )
    parser.add_argument("--summaries", action="store_true", help="also write 1-s summaries")
    parser.add_argument(
        "--mqtt-url",
        metavar="URL",
        help="publish to this broker: mqtt[s]://[user@]host[:port] (password: "
        "$CRAMPWATCH_MQTT_PASSWORD_FILE or [mqtt].password)",
    )
    parser.add_argument("--max-bands", type=positive_int, metavar="N", help="use at most N bands")
    parser.add_argument("--band", action="append", metavar="ADDR|NAME", help="pin a band")
    parser.add_argument("--no-record", action="store_true", help="do not write EDF+ files")
    parser.add_argument(
        "--speed",
        type=positive_float,
        metavar="N",
        help="the bands are simulated at crampwatch band --speed N (default: 1, real bands)",
    )
    parser.add_argument(
        "--duration", type=positive_float, metavar="S", help="stop after S seconds (tests, demos)"
    )


def mqtt_config(
    document: Mapping[str, Any], url: str | None, environ: Mapping[str, str]
) -> MqttConfig | None:
    """The broker to publish to, or ``None`` when MQTT is not configured.

    MQTT is on when ``url`` is given, the config has an ``[mqtt]`` table or
    ``$CRAMPWATCH_MQTT_HOST`` is set.  ``url`` (``mqtt[s]://[user@]host[:port]``)
    overrides host, port, TLS and user of the ``[mqtt]`` table.

    Raises
    ------
    ConfigError
        For a malformed URL, a password in the URL, or missing credentials.
    """
    from sensor_gateway.config import load_section  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.mqtt import MqttConfig  # noqa: PLC0415

    if url is None and "mqtt" not in document and "CRAMPWATCH_MQTT_HOST" not in environ:
        return None
    cfg = load_section(MqttConfig, "mqtt", document, environ)
    if url is not None:
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in MQTT_PORTS or not parts.hostname or port == -1 or parts.path:
            raise ConfigError(f"--mqtt-url {url!r}: expected mqtt[s]://[user@]host[:port]")
        if parts.password is not None:
            raise ConfigError("--mqtt-url: no password in URLs; use $CRAMPWATCH_MQTT_PASSWORD_FILE")
        try:
            cfg = dataclasses.replace(
                cfg,
                host=parts.hostname,
                port=port or MQTT_PORTS[parts.scheme],
                tls=parts.scheme == "mqtts",
                username=urllib.parse.unquote(parts.username or "") or cfg.username,
            )
        except ValueError as exc:
            raise ConfigError(f"--mqtt-url {url!r}: {exc}") from None
    if not cfg.username or not cfg.password:
        raise ConfigError("[mqtt] username and password are required (no anonymous access)")
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run the gateway until interrupted or ``--duration`` is over."""
    from sensor_gateway.config import read_config_file  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.gateway import Gateway, GatewayConfig  # noqa: PLC0415
    from sensor_gateway.mqtt_sink import MqttSink  # noqa: PLC0415
    from sensor_gateway.sinks import JsonLinesSink  # noqa: PLC0415

    doc = read_config_file(args.config)
    cfg = GatewayConfig.load(doc)
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
    if args.speed is not None:
        overrides["speed"] = args.speed
    try:
        cfg = dataclasses.replace(cfg, **overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"gateway: {exc}") from None
    broker = mqtt_config(doc, args.mqtt_url, os.environ)

    async def main() -> None:
        sinks: list[EventSink] = []
        if broker is not None:
            mqtt_sink = MqttSink(broker)
            mqtt_sink.start()  # connect now: "gateway online" before the first band
            sinks.append(mqtt_sink)
        if broker is None or args.events is not None:
            sinks.append(JsonLinesSink(args.events or "-", summaries=args.summaries))
        gw = Gateway(cfg, sinks)
        with on_stop_signals(gw.stop.set):
            await gw.run(args.duration)

    asyncio.run(main())
    return 0
