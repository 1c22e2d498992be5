"""The simulated band as a real BLE peripheral: bluezoo test bed + real bleak as the central.

The band runs in this process's event loop (``firmware_sim.peripheral``) on ``hci1``
/ ``hci2``; a minimal bleak client on ``hci0`` plays the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from firmware_sim.band import BandConfig, BandFaults, BandFirmware
from firmware_sim.peripheral import BandPeripheral, PeripheralConfig
from firmware_sim.testbed import BluezTestbed
from sensor_gateway.protocol import (
    CONTROL_CHAR_UUID,
    DATA_CHAR_UUID,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
    BandPacket,
    BandStatus,
    ControlCommand,
    decode_data_packet,
    decode_status,
    encode_control,
    tick_delta,
)
from sensor_gateway.recordings import SignalChunk

pytestmark = pytest.mark.integration


def noise(seconds: int, seed: int = 0) -> Iterator[SignalChunk]:
    rng = np.random.default_rng(seed)
    for i in range(seconds):
        yield SignalChunk(i * 2000, rng.normal(0.0, 40.0, 2000), np.tile([0.0, 0.0, 1.0], (100, 1)))


async def find_band(name: str, timeout: float = 10.0) -> object:
    from bleak import BleakScanner  # noqa: PLC0415

    dev = await BleakScanner.find_device_by_filter(
        lambda d, a: SERVICE_UUID in [u.lower() for u in a.service_uuids] and a.local_name == name,
        timeout=timeout,
        service_uuids=[SERVICE_UUID],
        bluez={"adapter": "hci0"},
    )
    assert dev is not None, f"{name} not discovered on hci0"
    return dev


def test_band_streams_a_simulated_minute_at_speed_20_without_loss(
    bluez_testbed: BluezTestbed,
) -> None:
    from bleak import BleakClient  # noqa: PLC0415
    from bleak.exc import BleakDBusError  # noqa: PLC0415

    fw = BandFirmware(BandConfig(band_id="0001", tick_offset=2**32 - 1_000_000), noise(90))
    packets: list[BandPacket] = []
    statuses: list[BandStatus] = []

    async def scenario() -> tuple[BandStatus, BandPeripheral]:
        async with BandPeripheral(fw, PeripheralConfig(adapter="hci1", speed=20.0)) as band:
            pacing = asyncio.create_task(band.run())
            dev = await find_band("CalfBand-0001")
            async with BleakClient(dev, bluez={"adapter": "hci0"}) as client:  # type: ignore[arg-type]
                first = decode_status(await client.read_gatt_char(STATUS_CHAR_UUID))
                await client.start_notify(
                    STATUS_CHAR_UUID, lambda _c, d: statuses.append(decode_status(d))
                )
                await client.start_notify(
                    DATA_CHAR_UUID, lambda _c, d: packets.append(decode_data_packet(d))
                )
                await client.write_gatt_char(
                    CONTROL_CHAR_UUID, encode_control(ControlCommand.START_STREAM), response=True
                )
                await client.write_gatt_char(
                    CONTROL_CHAR_UUID,
                    encode_control(ControlCommand.TIME_SYNC, unix_ms=1_717_171_717_171),
                    response=True,
                )
                with pytest.raises(BleakDBusError, match="0x82"):  # rate change while streaming
                    await client.write_gatt_char(
                        CONTROL_CHAR_UUID,
                        encode_control(ControlCommand.SET_EMG_RATE, emg_fs=1000),
                        response=True,
                    )
                with pytest.raises(BleakDBusError, match="InvalidValueLength"):
                    await client.write_gatt_char(CONTROL_CHAR_UUID, b"\x03\x01", response=True)
                await asyncio.wait_for(pacing, timeout=20.0)
                await asyncio.sleep(0.3)  # last notifications in flight through bluezoo
        return first, band

    first, band = asyncio.run(scenario())
    assert first.streaming and first.emg_fs == 2000 and first.firmware == (1, 0, 0)
    # START_STREAM restarted seq at 0: everything after it arrived, in order, once.
    restart = max(i for i, p in enumerate(packets) if p.seq == 0)
    tail = packets[restart:]
    assert [p.seq for p in tail] == list(range(fw.seq))
    assert fw.seq >= 1200  # more than a simulated minute after the restart
    steps = {tick_delta(b.tick, a.tick) for a, b in itertools.pairwise(tail)}
    assert steps <= {1638, 1639}
    assert any(p.tick < tail[0].tick for p in tail)  # the u32 tick wrapped on the way
    assert all(p.emg.shape == (100,) and p.acc.shape == (5, 3) for p in tail)
    assert band.counters.notified == len(packets)  # nothing lost between band and bleak
    assert band.counters.control_writes == 2 and band.counters.control_rejected == 2
    sync = [s for s in statuses if s.sync_host_ms is not None]
    assert len(sync) == 1 and sync[0].sync_host_ms == 1_717_171_717_171 and sync[0].time_synced
    assert all(p.flags & 0x10 for p in packets[-10:])  # TIME_SYNCED after the sync


def on_gone(event: asyncio.Event, _client: object) -> None:
    event.set()


def test_faults_disconnect_and_drop_rate_are_accounted_exactly(
    bluez_testbed: BluezTestbed,
) -> None:
    from bleak import BleakClient  # noqa: PLC0415

    faults = BandFaults(drop_rate=0.05, seed=3, disconnect_every_s=15.0)
    fw = BandFirmware(BandConfig(band_id="0002", faults=faults), noise(40, seed=1))
    seqs: list[int] = []

    async def scenario() -> BandPeripheral:
        async with BandPeripheral(fw, PeripheralConfig(adapter="hci2", speed=10.0)) as band:
            pacing = asyncio.create_task(band.run())
            sessions = 0
            while not pacing.done() and sessions < 6:
                dev = await find_band("CalfBand-0002")
                gone = asyncio.Event()
                async with BleakClient(
                    dev,  # type: ignore[arg-type]
                    disconnected_callback=functools.partial(on_gone, gone),
                    bluez={"adapter": "hci0"},
                ) as client:
                    sessions += 1
                    await client.start_notify(
                        DATA_CHAR_UUID, lambda _c, d: seqs.append(decode_data_packet(d).seq)
                    )
                    waiter = asyncio.create_task(gone.wait())
                    await asyncio.wait({waiter, pacing}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    await asyncio.sleep(0.3)
            await asyncio.wait_for(pacing, timeout=20.0)
        return band

    band = asyncio.run(scenario())
    c = fw.counters
    assert band.counters.forced_disconnects >= 2 and band.counters.connects >= 3
    assert len(seqs) == len(set(seqs)), "a packet arrived twice"
    assert set(seqs).isdisjoint(c.lost_seqs), "a packet the air 'lost' arrived"
    assert seqs == sorted(seqs)
    # Every produced packet is accounted for: received, lost on air, overflowed on the
    # band, still queued, or in flight in the socket when the link was dropped.
    in_flight = band.counters.notified - len(seqs)
    assert 0 <= in_flight <= 40
    assert len(seqs) + c.lost + c.overflowed + fw.queued + in_flight == c.produced
    assert c.lost > 0


def test_crampwatch_band_command_streams_and_unregisters_on_sigterm(
    bluez_testbed: BluezTestbed,
) -> None:
    pytest.importorskip("firmware_sim.night", reason="the night simulator is not in the tree yet")
    from bleak import BleakClient  # noqa: PLC0415

    proc = subprocess.Popen(
        [sys.executable, "-m", "sensor_gateway", "band", "--adapter", "hci3", "--band-id",
         "0003", "--simulate", "--seed", "1", "--hours", "0.05", "--speed", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    got: list[int] = []

    async def client() -> None:
        dev = await find_band("CalfBand-0003", timeout=15.0)
        async with BleakClient(dev, bluez={"adapter": "hci0"}) as c:  # type: ignore[arg-type]
            await c.start_notify(
                DATA_CHAR_UUID, lambda _c, d: got.append(decode_data_packet(d).seq)
            )
            for _ in range(100):
                if len(got) >= 100:
                    break
                await asyncio.sleep(0.1)

    try:
        asyncio.run(client())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["band"] == "0003" and summary["notified"] >= len(got) >= 100
    assert got == list(range(got[0], got[0] + len(got)))
