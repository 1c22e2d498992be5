"""How many bands can one gateway core serve?  Prints figures measured in one run.

The packets are real: :class:`~firmware_sim.band.BandFirmware` streams a simulated
night (:mod:`firmware_sim.night`, cramps included) and encodes every 50-ms packet
with the protocol codec; 1 % are lost "over the air" and 0.5 % swapped with their
neighbour, so the gap and reorder paths run too.  Receive times carry BLE-like
delays.

1. **Reference**: ``protocol.decode_data_packet`` alone on the same bytes: the
   least any gateway must do per packet.
2. **Gateway, no BLE**: the same bytes through :meth:`Gateway.handle
   <sensor_gateway.gateway.Gateway.handle>` (decode, sequence tracking, clock
   mapping, one :class:`CrampDetector` per band, sinks), without and with the
   EDF+ recorder.
3. **Gateway over BLE** (``--ble``, needs dbus-daemon + bluezoo): a band
   subprocess (``crampwatch band --speed``) on the emulated BlueZ, the gateway with
   real bleak in this process; its CPU time per notification includes bleak and
   D-Bus message handling (not the emulator's or a real ``bluetoothd``'s CPU).
   Measured twice: receiving only (a gateway whose ``handle`` does nothing) and
   the full gateway.

From the cost per packet: CPU per band at real time (20 packets/s) and the largest
number of bands one core sustains, ``1 / (20 x cost)``.  CPU time is
``time.thread_time`` (the event loop's thread), best of ``--repeat``.  Run::

    .venv/bin/python -m benchmarks.gateway_load              # 10 simulated minutes
    .venv/bin/python -m benchmarks.gateway_load --minutes 2 --ble
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import best_of
from firmware_sim.band import BandConfig, BandFaults, BandFirmware
from firmware_sim.night import NightConfig, SyntheticNight
from sensor_gateway.ble import DATA, Notification
from sensor_gateway.gateway import BandRuntime, Gateway, GatewayConfig
from sensor_gateway.protocol import PACKET_SECONDS, decode_data_packet
from sensor_gateway.sinks import MemorySink

PACKETS_PER_S = round(1 / PACKET_SECONDS)
T0 = 1.7e9


def make_packets(minutes: float, seed: int) -> tuple[list[bytes], list[float]]:
    """Encoded packets of a simulated night as received: lost, reordered, with receive times."""
    night = SyntheticNight(NightConfig(hours=minutes / 60, seed=seed))
    fw = BandFirmware(BandConfig(faults=BandFaults(drop_rate=0.01, seed=seed)), night.chunks(10))
    received: list[tuple[bytes, float]] = []
    rng = np.random.default_rng(seed)
    while True:
        lost = fw.counters.lost
        e = fw.step()
        if e is None:
            break
        fw.drain()
        if fw.counters.lost == lost:
            delay = min(rng.exponential(0.008), 0.03)
            received.append((e.data, T0 + e.t_s + PACKET_SECONDS + delay))
    swap = np.flatnonzero(rng.random(len(received) - 1) < 0.005)
    for i in swap:
        received[i], received[i + 1] = received[i + 1], received[i]
    return [b for b, _ in received], [t for _, t in received]


def gateway_cost(blobs: list[bytes], host: list[float], *, record: bool, batch: int) -> float:
    """CPU seconds to push every packet through :meth:`Gateway.handle` and shut down."""

    async def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GatewayConfig(data_dir=Path(tmp), record=record, batch_packets=batch)
            gw = Gateway(cfg, [MemorySink()])
            rt = gw.add_band("bench", None)
            items = [Notification(DATA, t, b) for b, t in zip(blobs, host, strict=True)]
            t0 = time.thread_time()
            for item in items:
                await gw.handle(rt, item)
            rt.stream.finish()
            return time.thread_time() - t0

    return asyncio.run(run())


class ReceiveOnly(Gateway):
    """A gateway that receives and queues notifications but does not process them."""

    async def handle(self, rt: BandRuntime, item: Notification) -> None:
        """Drop the item."""


def ble_cost(seconds: float, speed: float, gateway: type[Gateway]) -> tuple[float, int] | str:
    """Gateway CPU seconds and notifications for one band over emulated BLE, or why not."""
    from firmware_sim.testbed import BluezTestbed, TestbedError, adapter_address  # noqa: PLC0415

    try:
        bed = BluezTestbed.start(2)
    except TestbedError as exc:
        return f"skipped: {exc}"
    try:
        band = subprocess.Popen(
            [sys.executable, "-m", "sensor_gateway", "band", "--adapter", "hci1", "--simulate",
             "--hours", str(seconds / 3600), "--speed", str(speed), "--wait-start"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
        )  # fmt: skip

        async def run() -> tuple[float, int]:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = GatewayConfig(bands=(adapter_address(1),), data_dir=Path(tmp),
                                    record=False, speed=speed)  # fmt: skip
                gw = gateway(cfg, [MemorySink()])
                await gw.discover()
                t0 = time.thread_time()
                gw.start()
                while band.poll() is None:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                cpu = time.thread_time() - t0
                link = next(iter(gw.bands.values())).link
                await gw.shutdown()
                assert link is not None
                return cpu, link.stats.notifications

        return asyncio.run(run())
    finally:
        if band.poll() is None:
            band.terminate()
        band.wait()
        bed.stop()


def report(name: str, per_packet_s: float, reference_s: float) -> None:
    """One line: µs per packet, ratio to the reference, CPU per band, bands per core."""
    per_band = per_packet_s * PACKETS_PER_S
    print(f"{name:<34}: {per_packet_s * 1e6:7.1f} µs/packet ({per_packet_s / reference_s:5.1f}x "
          f"reference) = {per_band * 100:6.3f} % of a core per band -> "
          f"{int(1 / per_band):5d} bands/core")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=5, help="gateway batch_packets (default 5)")
    ap.add_argument("--ble", action="store_true", help="also measure over emulated BLE")
    ap.add_argument("--ble-speed", type=float, default=20.0)
    args = ap.parse_args()
    blobs, host = make_packets(args.minutes, args.seed)
    n = len(blobs)

    def decode_all() -> None:
        for b in blobs:
            decode_data_packet(b)

    ref = best_of(args.repeat, decode_all, clock=time.thread_time) / n
    print(f"packets per run: {n} ({args.minutes:g} simulated min, 1 % lost, 0.5 % reordered), "
          f"batch_packets={args.batch}")  # fmt: skip
    print(f"{'reference: decode_data_packet':<34}: {ref * 1e6:7.1f} µs/packet")
    for record in (False, True):
        cost = min(gateway_cost(blobs, host, record=record, batch=args.batch)
                   for _ in range(args.repeat)) / n  # fmt: skip
        report("gateway.handle" + (" + EDF+ recorder" if record else ""), cost, ref)
    if args.ble:
        if shutil.which("dbus-daemon") is None:
            print("over BLE: skipped (dbus-daemon not installed)")
            return
        for name, gateway in (("BLE receive only", ReceiveOnly), ("gateway over BLE", Gateway)):
            got = ble_cost(args.minutes * 60, args.ble_speed, gateway)
            if isinstance(got, str):
                print(f"over BLE: {got}")
                return
            cpu, notes = got
            report(f"{name} (speed {args.ble_speed:g})", cpu / max(notes, 1), ref)


if __name__ == "__main__":
    main()
