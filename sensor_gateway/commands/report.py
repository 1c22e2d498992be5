"""``crampwatch report --night YYYY-MM-DD``: the morning report as HTML plus PNG plots.

From InfluxDB (``[influx]`` of ``--config`` and the environment) with the
previous ``--weeks`` for comparison, or, with ``--from-file REC.edf``, straight
from a recording through the detector (``[detector]`` of the config), without
any server.  Writes ``--output`` (default ``crampwatch-report-<night>.html``)
and ``<stem>-night.png``, ``<stem>-cramps.png``, ``<stem>-weeks.png`` next to
it, and prints the paths.  Nights run from local noon to noon
(``--timezone``, default ``[dashboard].timezone`` or the system's zone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sensor_gateway.commands._argtypes import count

HELP = "write the morning report of one night (HTML + PNG plots)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch report``."""
    parser.add_argument("--night", metavar="YYYY-MM-DD",
                        help="the evening the night starts on (default with --from-file: "
                             "the night the recording starts in)")  # fmt: skip
    parser.add_argument("--from-file", type=Path, metavar="REC",
                        help="run the detector on this EDF+/BDF+/CSV recording instead of "
                             "reading InfluxDB")  # fmt: skip
    parser.add_argument("--output", "-o", type=Path, metavar="HTML", help="report file to write")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help="config ([influx], [dashboard], [detector])")  # fmt: skip
    parser.add_argument("--timezone", metavar="ZONE", help="IANA zone of the night")
    parser.add_argument("--band", metavar="ID", help="only this band (InfluxDB)")
    parser.add_argument("--weeks", type=count, default=4, metavar="N",
                        help="weeks before the night to compare with (default: 4)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build and write the report; print the files written."""
    import asyncio  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from cramp_signal.config import DetectorConfig  # noqa: PLC0415
    from sensor_gateway.config import load_section, read_config_file  # noqa: PLC0415
    from sensor_gateway.errors import ConfigError  # noqa: PLC0415
    from sensor_gateway.influx import InfluxConfig  # noqa: PLC0415
    from sensor_gateway.nights import NightStore, local_zone, parse_night, query_for  # noqa: PLC0415
    from sensor_gateway.report import (  # noqa: PLC0415
        NightReport,
        default_output,
        from_influx,
        from_recording,
        write_report,
    )
    from sensor_gateway.web.app import DashboardConfig  # noqa: PLC0415

    doc = read_config_file(args.config)
    dash = load_section(DashboardConfig, "dashboard", doc)
    tz = local_zone(args.timezone if args.timezone is not None else dash.timezone)
    day = parse_night(args.night) if args.night else None
    if args.from_file is not None:
        config = load_section(DetectorConfig, "detector", doc)
        report = from_recording(args.from_file, tz, day=day, config=config,
                                progress=sys.stderr.isatty())  # fmt: skip
    else:
        if day is None:
            raise ConfigError("--night YYYY-MM-DD is required (or --from-file)")
        influx = InfluxConfig.load(doc)
        store = NightStore(query_for(influx), tz, args.band or dash.band or None)

        async def read() -> NightReport:
            try:
                return await from_influx(store, day, args.weeks)
            finally:
                await store.close()

        report = asyncio.run(read())
    out = args.output or default_output(report.night.day)
    for path in write_report(report, out):
        print(path)
    return 0
