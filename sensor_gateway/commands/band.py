"""``crampwatch band``: run a simulated calf band as a BLE peripheral on a BlueZ adapter.

The band advertises ``CalfBand-<band id>`` with the band service on ``--adapter``
and streams, in real time × ``--speed``, either a synthetic night
(``--simulate --seed N [--profile P] [--hours H]``, :mod:`firmware_sim.night`) or a
replayed recording (``--replay FILE``); with ``--wait-start`` it boots idle and
starts with the first sample at the gateway's ``START_STREAM``.  Faults (``--drop-rate``,
``--disconnect-every``, ``--stall-every``/``--stall-for``, ``--reboot-at``) are in
band seconds.  Without radio, start the BlueZ test bed first (docs/ble-testbed.md)
and point ``$DBUS_SYSTEM_BUS_ADDRESS`` at it.  SIGINT/SIGTERM unregister the band
cleanly and print its counters.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sensor_gateway.commands._argtypes import (
    count,
    non_negative_float,
    positive_float,
    positive_int,
)
from sensor_gateway.stop_signals import on_stop_signals

if TYPE_CHECKING:
    from firmware_sim.band import ChunkLike

HELP = "run a simulated calf band (BLE GATT peripheral) on a BlueZ adapter"

#: Seconds of signal pulled from the source at a time.
CHUNK_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch band``."""
    parser.add_argument("--adapter", default="hci1", help="BlueZ adapter (default: hci1)")
    parser.add_argument(
        "--band-id", default="0001", help="band id; advertised as CalfBand-<id> (default: 0001)"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--simulate", action="store_true", help="stream a synthetic night")
    src.add_argument("--replay", type=Path, metavar="FILE", help="stream a recording")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    parser.add_argument("--profile", default="typical", help="simulator profile")
    parser.add_argument("--hours", type=positive_float, default=8.0, help="simulated night length")
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        help="band seconds per wall second (default: 1; 20 → 400 notifications/s)",
    )
    parser.add_argument("--loop", action="store_true", help="start over when the source ends")
    parser.add_argument(
        "--wait-start",
        action="store_true",
        help="boot without streaming; start at the gateway's START_STREAM (a replay then "
        "begins with the file's first sample)",
    )
    parser.add_argument(
        "--queue-packets",
        type=positive_int,
        metavar="N",
        help="on-band ring of packets awaiting transmission (default: 40 = 2 s)",
    )
    parser.add_argument("--drift-ppm", type=float, default=0.0, help="crystal error (ppm)")
    parser.add_argument("--tick-offset", type=count, default=0, help="tick at boot (u32)")
    parser.add_argument(
        "--drop-rate",
        type=non_negative_float,
        default=0.0,
        help="fraction of packets lost over the air (seeded by --seed)",
    )
    parser.add_argument(
        "--disconnect-every",
        type=positive_float,
        metavar="S",
        help="drop the link every S band seconds",
    )
    parser.add_argument(
        "--stall-every",
        type=positive_float,
        metavar="S",
        help="stall notifications every S band seconds (needs --stall-for)",
    )
    parser.add_argument("--stall-for", type=positive_float, metavar="S", help="stall length (s)")
    parser.add_argument(
        "--reboot-at",
        type=positive_float,
        metavar="S",
        help="reboot the band at S band seconds",
    )
    parser.add_argument(
        "--battery-drain",
        type=non_negative_float,
        default=3.0,
        metavar="PCT_PER_H",
        help="battery drain (default: 3 %%/h)",
    )


def _simulated(args: argparse.Namespace) -> tuple[int, Iterator[ChunkLike]]:
    from firmware_sim.night import NightConfig, SyntheticNight  # noqa: PLC0415

    emg_fs = 2000
    config = NightConfig(
        hours=args.hours, seed=args.seed, emg_fs=emg_fs, acc_fs=100, mains_hz=50,
        profile=args.profile,
    )  # fmt: skip

    def chunks() -> Iterator[ChunkLike]:
        while True:
            yield from SyntheticNight(config).chunks(CHUNK_S)
            if not args.loop:
                return

    return emg_fs, chunks()


def _replayed(args: argparse.Namespace) -> tuple[int, Iterator[ChunkLike]]:
    from sensor_gateway.errors import RecordingError  # noqa: PLC0415
    from sensor_gateway.recordings import open_recording  # noqa: PLC0415

    path: Path = args.replay
    first = open_recording(path)
    fs = float(first.info.emg.fs_hz)
    if fs not in (1000.0, 2000.0):
        first.close()
        raise RecordingError(f"{path}: EMG at {fs:g} Hz; the band streams 1000 or 2000 Hz")

    def chunks() -> Iterator[ChunkLike]:
        rec = first
        while True:
            with rec:
                yield from rec.chunks(CHUNK_S)
            if not args.loop:
                return
            rec = open_recording(path)

    return int(fs), chunks()


def run(args: argparse.Namespace) -> int:
    """Run the band until the source ends or SIGINT/SIGTERM; print counters as JSON."""
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    from firmware_sim.band import BandConfig, BandFaults, BandFirmware  # noqa: PLC0415
    from firmware_sim.peripheral import BandPeripheral, PeripheralConfig  # noqa: PLC0415
    from sensor_gateway.errors import SimulationError  # noqa: PLC0415

    log = logging.getLogger("crampwatch.band")
    if (args.stall_every is None) != (args.stall_for is None):
        raise SimulationError("--stall-every and --stall-for go together")
    faults = BandFaults(
        drop_rate=args.drop_rate,
        seed=args.seed,
        disconnect_every_s=args.disconnect_every,
        stall_every_s=args.stall_every,
        stall_for_s=args.stall_for or 0.0,
        reboot_at_s=args.reboot_at,
    )
    emg_fs, source = _replayed(args) if args.replay is not None else _simulated(args)
    config = BandConfig(
        band_id=args.band_id,
        emg_fs=emg_fs,
        drift_ppm=args.drift_ppm,
        tick_offset=args.tick_offset,
        battery_drain_pct_per_h=args.battery_drain,
        queue_packets=args.queue_packets or BandConfig.queue_packets,
        autostart=not args.wait_start,
        faults=faults,
    )
    firmware = BandFirmware(config, source)
    pconf = PeripheralConfig(adapter=args.adapter, speed=args.speed)

    async def main() -> dict[str, Any]:
        band = BandPeripheral(firmware, pconf)
        with on_stop_signals(band.request_stop):
            try:
                await band.start()
                log.info(
                    "band %s on %s at speed %g: streaming", band.name, args.adapter, args.speed
                )
                await band.run()
            finally:
                await band.stop()
        return band.summary()

    summary = asyncio.run(main())
    summary["lost_seqs"] = len(firmware.counters.lost_seqs)
    print(json.dumps({"band": args.band_id, **summary}), file=sys.stdout, flush=True)
    return 0
