"""``crampwatch dashboard``: the built-in night view on http://HOST:PORT/.

Reads ``[influx]`` (where ``crampwatch record`` writes; on InfluxDB 2.x
``database`` names the DBRP mapping used for InfluxQL) and ``[dashboard]``
(``host``, ``port``, ``timezone``, ``band``, ``weeks``) from ``--config`` and the
environment; ``--host``/``--port``/``--timezone``/``--band`` override them.  Runs
on one asyncio loop until SIGINT/SIGTERM.  Pages: docs/night-view.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensor_gateway.commands._argtypes import port

HELP = "serve the night view (nights, cramps, trends) from InfluxDB over HTTP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch dashboard``."""
    parser.add_argument(
        "--config", type=Path, metavar="TOML", help="config ([influx], [dashboard])"
    )
    parser.add_argument("--host", help="listen address (default: [dashboard].host, 127.0.0.1)")
    parser.add_argument("--port", type=port, help="listen port (default: [dashboard].port, 8080)")
    parser.add_argument("--timezone", metavar="ZONE", help="IANA zone of the nights")
    parser.add_argument("--band", metavar="ID", help="show only this band")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from dataclasses import replace  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415

    from sensor_gateway.config import load_section, read_config_file  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.influx import InfluxConfig  # noqa: PLC0415
    from sensor_gateway.nights import local_zone, query_for  # noqa: PLC0415
    from sensor_gateway.web.app import DashboardConfig, create_app  # noqa: PLC0415

    doc = read_config_file(args.config)
    cfg = load_section(DashboardConfig, "dashboard", doc)
    overrides = {k: v for k in ("host", "port", "timezone", "band")
                 if (v := getattr(args, k)) is not None}  # fmt: skip
    try:
        cfg = replace(cfg, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    influx = InfluxConfig.load(doc)
    tz = local_zone(cfg.timezone)

    async def app() -> web.Application:
        return create_app(query_for(influx), tz, band=cfg.band or None, weeks=cfg.weeks)

    print(f"crampwatch night view on http://{cfg.host}:{cfg.port}/ (nights in {tz.key})",
          flush=True)  # fmt: skip
    try:
        web.run_app(app(), host=cfg.host, port=cfg.port, print=None, handle_signals=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
    return 0
