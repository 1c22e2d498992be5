"""The gateway end to end: simulated bands on emulated BlueZ → real bleak → Gateway → EDF+/sinks.

Bands are :class:`~firmware_sim.peripheral.BandPeripheral` GATT servers on ``hci1`` …
``hci4`` of the ``bluez_testbed`` (in this process, so the test can read the
firmware's own counters, e.g. which sequence numbers the air "lost"); the gateway
is the real :class:`~sensor_gateway.gateway.Gateway` with real bleak on ``hci0``.
The last BLE test runs both as CLI subprocesses (``crampwatch band --replay``,
``crampwatch gateway`` publishing to a real Mosquitto).

Bands run at ``--speed`` 10 … 40 and the gateway's clock runs equally fast
(``GatewayConfig.speed``), so band ticks and receive times stay consistent.  The
40-ppm-over-an-hour drift requirement is tested at unit level (an hour over BLE
does not fit the time budget): tests/unit/test_band_stream.py and
tests/unit/test_clock.py.  Measured figures are printed (``-s``) and recorded
with ``record_property``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from firmware_sim.band import BandConfig, BandFaults, BandFirmware
from firmware_sim.night import NightConfig, SyntheticNight
from firmware_sim.peripheral import BandPeripheral, PeripheralConfig
from firmware_sim.testbed import BluezTestbed, adapter_address
from sensor_gateway.ble import DATA, LINK_LOST, STATUS, Notification
from sensor_gateway.commands.gateway import mqtt_config
from sensor_gateway.errors import ConfigError
from sensor_gateway.gateway import BandRuntime, Gateway, GatewayConfig
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.protocol import (
    BandPacket,
    BandStatus,
    encode_data_packet,
    encode_status,
)
from sensor_gateway.recordings import GAP_TEXT, RecordingWriter, SignalChunk, open_recording
from sensor_gateway.sinks import JsonLinesSink, MemorySink
from tests.fixtures.servers import MosquittoServer

FS = 2000
N_EMG = 100
T0 = 1.7e9

IntArray = NDArray[np.int64]

# --------------------------------------------------------------------------- helpers


def address_of(adapter: str) -> str:
    """Bluetooth address of the test bed's adapter ``hci<i>``."""
    return adapter_address(int(adapter.removeprefix("hci")))


def counts(values: NDArray[np.float64], per_unit: float) -> IntArray:
    """Quantised values as integer counts (EMG: 2 per µV, accelerometer: 1000 per g)."""
    out: IntArray = np.rint(values * per_unit).astype(np.int64)
    return out


@dataclass
class Source:
    """A signal the band streams, kept in memory as counts for exact comparison."""

    chunks: list[SignalChunk]

    @classmethod
    def night(cls, seconds: float, seed: int) -> Source:
        night = SyntheticNight(NightConfig(hours=seconds / 3600, seed=seed))
        return cls(list(night.chunks(10.0)))

    @property
    def emg_counts(self) -> IntArray:
        return counts(np.concatenate([c.emg_uv for c in self.chunks]), 2.0)

    @property
    def acc_counts(self) -> IntArray:
        return counts(np.concatenate([c.acc_g for c in self.chunks]), 1000.0)


def recorded(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64], list[str]]:
    """EMG (µV) and accelerometer (g), both NaN in gaps, and annotation texts of an EDF+ file."""
    with open_recording(path) as rec:
        chunks = list(rec.chunks(60.0))
        texts = [a.text for a in rec.info.annotations]
    emg = np.concatenate([c.emg_uv for c in chunks])
    return emg, np.concatenate([c.acc_g for c in chunks]), texts


def figure(record_property: Callable[[str, object], None], name: str, value: object) -> None:
    """Print a measured figure (visible with ``-s``) and attach it to the test report."""
    print(f"{name}: {value}")
    record_property(name, value)


@dataclass
class Run:
    gateway: Gateway
    bands: list[BandPeripheral]
    sink: MemorySink

    def runtime(self, i: int) -> BandRuntime:
        return self.gateway.bands[address_of(self.bands[i].config.adapter)]

    def status(self, i: int) -> dict[str, object]:
        return self.gateway.band_status(self.runtime(i))

    def recording(self, i: int) -> Path:
        path = self.runtime(i).stream.recording_path
        assert path is not None and path.exists()
        return path


async def _until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


def stream_through_gateway(
    firmwares: list[tuple[BandFirmware, str]],
    tmp_path: Path,
    *,
    speed: float,
    pace_after_subscribe: bool = False,
    during: Callable[[Run], Awaitable[None]] | None = None,
    timeout_s: float = 60.0,
    **gateway: object,
) -> Run:
    """Bands on their adapters, the gateway on hci0 pinned to them; run until every band's
    source is exhausted and flushed, then shut the gateway down (EDF+ closed)."""
    sink = MemorySink()

    async def scenario() -> Run:
        async with contextlib.AsyncExitStack() as stack:
            bands = [
                await stack.enter_async_context(
                    BandPeripheral(fw, PeripheralConfig(adapter=adapter, speed=speed))
                )
                for fw, adapter in firmwares
            ]
            cfg = GatewayConfig(
                bands=tuple(address_of(a) for _, a in firmwares),
                data_dir=tmp_path / "data",
                speed=speed,
                **gateway,  # type: ignore[arg-type]
            )
            gw = Gateway(cfg, [sink])
            run = Run(gw, bands, sink)
            await gw.discover()
            gw.start()
            if pace_after_subscribe:  # status + data subscribed: no packet before the first
                await _until(
                    lambda: all(b.counters.subscriptions >= 2 for b in bands), 15.0, "subscriptions"
                )
            pacing = [asyncio.create_task(b.run()) for b in bands]
            try:
                work = [*pacing] if during is None else [*pacing, during(run)]
                await asyncio.wait_for(asyncio.gather(*work), timeout_s)
                # the last notifications in flight through bluezoo and the queues
                await _until(
                    lambda: all(run.runtime(i).link.stats.notifications  # type: ignore[union-attr]
                                >= b.counters.notified for i, b in enumerate(bands)),
                    5.0, "last notifications",
                )  # fmt: skip
            finally:
                for t in pacing:
                    t.cancel()
                await gw.shutdown()
        return run

    return asyncio.run(scenario())


def assert_samples_in_place(
    emg: NDArray[np.float64], acc: NDArray[np.float64], source: Source, *, first: int = 0
) -> None:
    """Every recorded (non-NaN) sample equals the source sample that belongs at its index."""
    want = source.emg_counts[first : first + emg.size]
    have = ~np.isnan(emg)
    assert emg.size <= want.size
    np.testing.assert_array_equal(counts(emg[have], 2.0), want[have])
    acc_want = source.acc_counts[first // 20 : first // 20 + acc.shape[0]]
    rows = have.reshape(-1, 20).all(axis=1)  # accelerometer rows of fully received periods
    np.testing.assert_array_equal(counts(acc[rows], 1000.0), acc_want[rows])


# --------------------------------------------------------------------------- processing only


def _packet_bytes(seq: int, emg: NDArray[np.int16], acc: NDArray[np.int16]) -> bytes:
    return encode_data_packet(BandPacket.create(seq, (seq * N_EMG * 32768) // FS, emg, acc))


def test_four_bands_through_the_gateway_with_malformed_and_lost_packets(tmp_path: Path) -> None:
    """The processing path without radio: real codec, queues, BandStream, EDF+, two sinks."""
    events_file = tmp_path / "events.jsonl"
    cfg = GatewayConfig(data_dir=tmp_path, queue_size=50)
    mem = MemorySink()
    rng = np.random.default_rng(0)
    n = 200
    emg = rng.integers(-2000, 2000, (4, n * N_EMG)).astype(np.int16)
    acc = rng.integers(-900, 900, (4, n * 5, 3)).astype(np.int16)
    status = encode_status(BandStatus(battery_pct=77, lead_off=True, firmware=(1, 2, 3)))

    async def scenario() -> Gateway:
        gw = Gateway(cfg, [mem, JsonLinesSink(events_file)])
        rts = [gw.add_band(f"band{b}", None) for b in range(4)]
        gw.start()
        for i in range(n):
            for b, rt in enumerate(rts):
                if b == 1 and 50 <= i < 53:  # band1 loses 3 packets
                    continue
                blob = _packet_bytes(i, emg[b, i * N_EMG : (i + 1) * N_EMG],
                                     acc[b, i * 5 : (i + 1) * 5])  # fmt: skip
                await rt.queue.put(Notification(DATA, T0 + (i + 1) * 0.05, blob))
            if i == 10:
                await rts[2].queue.put(Notification(DATA, 0.0, b"\x01"))
                await rts[2].queue.put(Notification(DATA, 0.0, blob[:12]))
                await rts[2].queue.put(Notification(DATA, 0.0, blob + b"\x00"))
                await rts[3].queue.put(Notification(STATUS, 0.0, status[:20]))
                await rts[0].queue.put(Notification(STATUS, T0, status))
            await asyncio.sleep(0)
        await rts[3].queue.put(Notification(LINK_LOST, T0 + 10.0, reason="test"))
        while any(not rt.queue.empty() for rt in rts):
            await asyncio.sleep(0.01)
        await gw.shutdown()
        return gw

    gw = asyncio.run(scenario())
    for b in range(4):
        rt = gw.bands[f"band{b}"]
        assert rt.stream.recording_path is not None
        got, got_acc, texts = recorded(rt.stream.recording_path)
        want = emg[b].astype(np.float64) * 0.5
        if b == 1:
            want[5000:5300] = np.nan
            assert GAP_TEXT in texts
        np.testing.assert_array_equal(got, want)
        rows = ~np.isnan(got_acc).any(axis=1)  # the reader marks rows inside EMG gaps NaN
        assert rows.sum() == (985 if b == 1 else 1000)
        np.testing.assert_array_equal(counts(got_acc[rows], 1000.0), acc[b][rows])
        assert gw.band_status(rt)["missing_packets"] == (3 if b == 1 else 0)
    assert dict(gw.bands["band2"].malformed) == {"PacketTooShortError": 2,
                                                 "MalformedPacketError": 1}  # fmt: skip
    assert dict(gw.bands["band3"].malformed) == {"status:PacketTooShortError": 1}
    st0 = gw.band_status(gw.bands["band0"])
    assert (st0["battery_pct"], st0["firmware"]) == (77, "1.2.3")
    assert st0["lead_off"] is False  # the newer packets' flags supersede the status record
    assert mem.closed
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    finals = {d["band_id"]: d for d in lines if d["record"] == "status"}
    assert set(finals) == {"band0", "band1", "band2", "band3"}
    assert finals["band1"]["missing_emg"] == 300
    assert finals["band2"]["malformed"] == 3


def test_gateway_config_from_toml_table_and_env() -> None:
    doc = {"gateway": {"adapter": "hci1", "bands": ["AA:BB:CC:DD:EE:01"], "watchdog_s": 2}}
    env = {"CRAMPWATCH_GATEWAY_QUEUE_SIZE": "64", "CRAMPWATCH_GATEWAY_SPEED": "20"}
    cfg = GatewayConfig.load(doc, environ=env)
    assert cfg.adapter == "hci1"
    assert cfg.bands == ("AA:BB:CC:DD:EE:01",)
    assert (cfg.watchdog_s, cfg.queue_size, cfg.speed) == (2.0, 64, 20.0)
    assert cfg.link_settings().adapter == "hci1"
    with pytest.raises(ConfigError):
        GatewayConfig.load({"gateway": {"watchdog": 2}}, environ={})
    with pytest.raises(ConfigError):
        GatewayConfig.load({"gateway": {"backoff_max_s": 0.1}}, environ={})
    with pytest.raises(ConfigError):
        GatewayConfig.load({"gateway": {"speed": 0}}, environ={})


def test_mqtt_is_configured_by_table_env_or_url() -> None:
    secret = {"CRAMPWATCH_MQTT_PASSWORD": "s3cret"}
    assert mqtt_config({}, None, secret) is None  # no [mqtt], no host, no URL: off
    cfg = mqtt_config({"mqtt": {"host": "broker", "username": "gw"}}, None, secret)
    assert cfg is not None and (cfg.host, cfg.port, cfg.username, cfg.tls) == (
        "broker", 1883, "gw", False)  # fmt: skip
    cfg = mqtt_config({}, "mqtts://gw%40home@broker.lan", secret)
    assert cfg is not None and (cfg.host, cfg.port, cfg.username, cfg.tls) == (
        "broker.lan", 8883, "gw@home", True)  # fmt: skip
    env = {**secret, "CRAMPWATCH_MQTT_HOST": "10.0.0.2", "CRAMPWATCH_MQTT_USERNAME": "gw"}
    cfg = mqtt_config({}, None, env)
    assert cfg is not None and cfg.host == "10.0.0.2"
    with pytest.raises(ConfigError, match="no password in URLs"):
        mqtt_config({}, "mqtt://gw:pw@broker", secret)
    with pytest.raises(ConfigError, match="expected mqtt"):
        mqtt_config({}, "http://broker", secret)
    with pytest.raises(ConfigError, match="username and password"):
        mqtt_config({}, "mqtt://broker", {})


# --------------------------------------------------------------------------- over BLE


@pytest.mark.integration
def test_ten_simulated_minutes_arrive_complete_and_the_edf_equals_the_source(
    bluez_testbed: BluezTestbed, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    source = Source.night(600.0, seed=1)
    fw = BandFirmware(BandConfig(band_id="A1", autostart=False), iter(source.chunks))
    started = time.monotonic()
    run = stream_through_gateway([(fw, "hci1")], tmp_path, speed=40.0)
    wall_s = time.monotonic() - started
    st = run.status(0)
    link = run.runtime(0).link
    assert link is not None
    assert fw.counters.produced == 12_000  # 10 minutes of 50-ms packets
    assert link.stats.stream_starts == 1  # the band booted idle; the gateway started it
    assert (st["received"], st["delivered"]) == (12_000, 12_000)
    for key in ("missing_packets", "duplicates", "late", "resets", "queue_drops", "malformed"):
        assert st[key] == 0, key
    assert (st["firmware"], st["reboots"], st["time_syncs"]) == ("1.0.0", 0, 1)
    emg, acc, texts = recorded(run.recording(0))
    assert emg.size == source.emg_counts.size and not np.isnan(emg).any()
    np.testing.assert_array_equal(counts(emg, 2.0), source.emg_counts)
    np.testing.assert_array_equal(counts(acc, 1000.0), source.acc_counts)
    assert GAP_TEXT not in texts
    figure(record_property, "ten_minutes_wall_s", round(wall_s, 1))
    figure(record_property, "ten_minutes_notifications_per_s", round(12_000 / wall_s))
    figure(record_property, "time_sync_rtt_ms_at_speed_40", st["sync_rtt_ms"])


@pytest.mark.integration
def test_injected_drops_are_counted_exactly(
    bluez_testbed: BluezTestbed, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    source = Source.night(90.0, seed=2)
    faults = BandFaults(drop_rate=0.03, seed=5)
    fw = BandFirmware(BandConfig(band_id="B2", autostart=False, faults=faults),
                      iter(source.chunks))  # fmt: skip
    run = stream_through_gateway([(fw, "hci2")], tmp_path, speed=20.0)
    st = run.status(0)
    emg, acc, texts = recorded(run.recording(0))
    packets = emg.size // N_EMG  # the timeline ends with the last packet that arrived
    lost = sorted(fw.counters.lost_seqs)
    # a packet lost after the last one that arrived leaves no trace on the timeline
    assert all(q >= packets for q in lost if q not in range(packets))
    lost_inside = [q for q in lost if q < packets]
    assert fw.counters.overflowed == 0 and len(lost_inside) > 20
    assert st["missing_packets"] == len(lost_inside)
    assert st["missing_emg"] == len(lost_inside) * N_EMG == int(np.isnan(emg).sum())
    nan_packets = np.isnan(emg).reshape(-1, N_EMG)
    assert np.flatnonzero(nan_packets.all(axis=1)).tolist() == lost_inside
    assert not (nan_packets.any(axis=1) & ~nan_packets.all(axis=1)).any()  # whole packets
    assert GAP_TEXT in texts
    assert_samples_in_place(emg, acc, source)
    figure(record_property, "drops_injected_vs_missing_packets",
           f"{len(lost_inside)} / {st['missing_packets']}")  # fmt: skip


def nan_runs(emg: NDArray[np.float64]) -> list[tuple[int, int]]:
    """``(start, length)`` of every NaN run."""
    mask = np.concatenate([[False], np.isnan(emg), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(mask))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@pytest.mark.integration
def test_forced_disconnects_reconnect_within_5_s_and_leave_recorded_gaps(
    bluez_testbed: BluezTestbed, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    source = Source.night(70.0, seed=3)
    faults = BandFaults(disconnect_every_s=20.0)
    fw = BandFirmware(BandConfig(band_id="C3", autostart=False, faults=faults),
                      iter(source.chunks))  # fmt: skip
    run = stream_through_gateway([(fw, "hci3")], tmp_path, speed=20.0)
    st = run.status(0)
    link = run.runtime(0).link
    assert link is not None
    times = link.stats.reconnect_times_s
    assert run.bands[0].counters.forced_disconnects == 3  # at 20, 40 and 60 band seconds
    assert len(times) == 3 and link.stats.connects == 4
    assert max(times) < 5.0
    emg, acc, texts = recorded(run.recording(0))
    assert emg.size == fw.counters.produced * N_EMG  # the last packets arrived
    gaps = nan_runs(emg)
    assert 1 <= len(gaps) <= 3 and all(n % N_EMG == 0 for _, n in gaps)
    assert st["missing_emg"] == int(np.isnan(emg).sum())
    # what the band's ring discarded while nobody listened must show up as gaps
    assert int(st["missing_packets"]) >= fw.counters.overflowed  # type: ignore[call-overload]
    assert texts.count(GAP_TEXT) == len(gaps)
    assert_samples_in_place(emg, acc, source)
    figure(record_property, "reconnect_s", [round(t, 3) for t in times])
    figure(record_property, "disconnect_gaps_band_s", [n / FS for _, n in gaps])


def locate(block: IntArray, source: IntArray, around: int, reach: int) -> int:
    """Index of ``block`` in ``source`` within ``around`` ± ``reach`` (exact match)."""
    lo = max(0, around - reach)
    windows = np.lib.stride_tricks.sliding_window_view(source[lo : around + reach], block.size)
    hits = np.flatnonzero((windows == block).all(axis=1))
    assert hits.size == 1, f"{hits.size} matches"
    return lo + int(hits[0])


@pytest.mark.integration
def test_stall_is_caught_by_the_watchdog_and_a_reboot_starts_a_new_segment(
    bluez_testbed: BluezTestbed, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    source = Source.night(99.0, seed=5)  # ends before the second stall (100 s)
    # notifications stop for 20 band seconds (1 s of real time) at 50 s; reboot at 75 s
    faults = BandFaults(stall_every_s=50.0, stall_for_s=20.0, reboot_at_s=75.0)
    fw = BandFirmware(BandConfig(band_id="D4", faults=faults), iter(source.chunks))
    run = stream_through_gateway([(fw, "hci4")], tmp_path, speed=20.0, watchdog_s=0.5,
                                 pace_after_subscribe=True)  # fmt: skip
    st = run.status(0)
    link = run.runtime(0).link
    assert link is not None
    assert link.stats.stalls >= 1  # the watchdog saw the silent, connected link
    assert fw.counters.reboots == 1
    assert (st["resets"], st["reboots"], st["clock_segment"]) == (1, 1, 1)
    emg, acc, _ = recorded(run.recording(0))
    # the band streamed from the first subscription: timeline index == band time x fs
    have = ~np.isnan(emg)
    boundary = int(np.flatnonzero(have[:-1] & ~have[1:])[-1]) + 1  # the last gap: the reboot
    after = boundary + int(np.flatnonzero(have[boundary:])[0])
    assert_samples_in_place(emg[:boundary], acc[: boundary // 20], source)
    block = counts(emg[after : after + N_EMG], 2.0)
    true_index = locate(block, source.emg_counts, after, 10 * FS)
    shift = true_index - after  # how far the reboot gap estimate is off (samples)
    assert abs(shift) <= 0.25 * FS
    assert_samples_in_place(emg[after:], acc[after // 20 :], source, first=true_index)
    assert int(st["reset_gap_samples"]) >= 2 * FS  # type: ignore[call-overload]
    figure(record_property, "stalls_detected", link.stats.stalls)
    figure(record_property, "reboot_gap_error_ms", round(shift / FS * 1e3, 1))


@pytest.mark.integration
def test_four_bands_at_once_lose_nothing(
    bluez_testbed: BluezTestbed, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    sources = [Source.night(60.0, seed=10 + i) for i in range(4)]
    fws = [BandFirmware(BandConfig(band_id=f"E{i}", autostart=False), iter(s.chunks))
           for i, s in enumerate(sources)]  # fmt: skip
    started = time.monotonic()
    run = stream_through_gateway([(fw, f"hci{i + 1}") for i, fw in enumerate(fws)], tmp_path,
                                 speed=10.0)  # fmt: skip
    wall_s = time.monotonic() - started
    assert len(run.gateway.bands) == 4
    for i, source in enumerate(sources):
        st = run.status(i)
        assert (st["received"], st["missing_packets"], st["queue_drops"]) == (1200, 0, 0)
        emg, acc, _ = recorded(run.recording(i))
        np.testing.assert_array_equal(counts(emg, 2.0), source.emg_counts)
        np.testing.assert_array_equal(counts(acc, 1000.0), source.acc_counts)
    figure(record_property, "four_bands_notifications_per_s", round(4 * 1200 / wall_s))


# --------------------------------------------------------------------------- CLI + MQTT


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensor_gateway", *args]


def _jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _event_key(doc: dict[str, object]) -> tuple[object, ...]:
    return doc["type"], doc["episode"], doc["t_s"], doc["emitted_at_s"]


@pytest.mark.integration
def test_replayed_night_through_ble_gives_the_same_events_as_detect_on_the_file(
    bluez_testbed: BluezTestbed,
    mosquitto: MosquittoServer,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """``crampwatch band --replay`` → BLE → ``crampwatch gateway`` (JSON Lines + MQTT)
    yields exactly the detector events of ``crampwatch detect`` on the same file."""
    night = SyntheticNight(NightConfig(hours=0.1, seed=4))
    assert night.truth.onsets_s  # a cramp at about 62 s
    path = tmp_path / "night.edf"
    start = datetime(2025, 1, 1, 23, 0, tzinfo=UTC)
    with RecordingWriter(path, emg_fs=FS, acc_fs=100, start=start) as writer:
        for chunk in night.chunks(10.0):
            writer.write(chunk)
    detect = subprocess.run(_cli("detect", str(path)), capture_output=True, check=True)
    want = [json.loads(line) for line in detect.stdout.decode().splitlines()]
    assert {"spasm_onset", "cramp_confirmed", "cramp_end"} <= {d["type"] for d in want}

    address = address_of("hci1")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\nusername = "gateway"\n'
        f'gateway_id = "gw-ble"\noutbox_dir = "{tmp_path / "outbox"}"\n\n'
        f'[gateway]\nadapter = "hci0"\ndata_dir = "{tmp_path / "data"}"\nstatus_interval_s = 0.5\n'
    )
    events_file = tmp_path / "events.jsonl"
    env = {**os.environ, "CRAMPWATCH_MQTT_PASSWORD": mosquitto.passwords["gateway"]}
    received: list[dict[str, object]] = []

    async def scenario() -> tuple[dict[str, object], int]:
        sub = MqttAdapter(MqttConfig(host="127.0.0.1", port=mosquitto.port, username="recorder",
                                     password=mosquitto.passwords["recorder"]),
                          "test-gateway-ble")  # fmt: skip
        sub.start()
        assert await sub.wait_connected(5.0)
        sub.subscribe([("crampwatch/band/+/event", 1), ("crampwatch/band/+/status", 1)])
        band = subprocess.Popen(
            _cli("band", "--adapter", "hci1", "--band-id", "F1", "--replay", str(path),
                 "--speed", "40", "--wait-start"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        gateway = subprocess.Popen(
            _cli("gateway", "--config", str(config), "--band", address, "--speed", "40",
                 "--events", str(events_file)),
            stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while band.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            out, err = band.communicate(timeout=5)
            assert band.returncode == 0, err.decode()[-2000:]
            summary = json.loads(out.decode().splitlines()[-1])

            def caught_up() -> bool:
                st = [d for d in _jsonl(events_file) if d["record"] == "status"]
                return bool(st) and int(st[-1]["received"]) >= summary["notified"]  # type: ignore[call-overload]

            await _until(caught_up, 10.0, "the gateway to receive every notification")
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, gw_err = gateway.communicate(timeout=20)
        assert gateway.returncode == 0, gw_err.decode()[-2000:]
        n_events = sum(1 for d in _jsonl(events_file) if d["record"] == "event")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    msg = sub.messages.get_nowait()
                    received.append({"topic": msg.topic, **json.loads(msg.payload)})
            if sum(1 for r in received if r["kind"] == "event") >= n_events:
                break
            await asyncio.sleep(0.05)
        await sub.stop()
        return summary, n_events

    summary, n_events = asyncio.run(scenario())
    lines = _jsonl(events_file)
    got = [{k: v for k, v in d.items() if k not in ("record", "band_id", "time")}
           for d in lines if d["record"] == "event"]  # fmt: skip
    assert [_event_key(d) for d in got] == [_event_key(d) for d in want]
    assert got == want  # details included: the link is transparent, bit for bit
    final = [d for d in lines if d["record"] == "status"][-1]
    assert (final["received"], final["missing_packets"]) == (summary["notified"], 0)
    assert final["received"] == 7200  # 6 minutes, every packet
    # MQTT: the same events (QoS 1 through the outbox), the status with the band's record
    mqtt_events = [r for r in received if r["kind"] == "event"]
    assert sorted((r["type"], r["episode"], r["t_s"]) for r in mqtt_events) == sorted(
        (d["type"], d["episode"], d["t_s"]) for d in got)  # fmt: skip
    statuses = [r["status"] for r in received if r["kind"] == "status"]
    assert statuses and all(s["firmware"] == "1.0.0" for s in statuses)  # type: ignore[index]
    assert all(r["topic"] == f"crampwatch/band/{address}/event" for r in mqtt_events)
    figure(record_property, "replay_events", n_events)
