"""BandStream: packets → continuous timeline with NaN gaps, recorder chunks, stamped events."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent
from sensor_gateway.band_stream import BandStream, night_file, utc_iso
from sensor_gateway.protocol import BandPacket, BandStatus, PacketFlags
from sensor_gateway.recordings import SignalChunk

TICK_HZ = 32768.0
FS = 2000.0
N_EMG, N_ACC = 100, 5
T0 = 1_714_600_000.0
NO_FLAGS = PacketFlags(0)


class MemoryRecorder:
    def __init__(self, path: Path, start: datetime, emg_fs: float, acc_fs: float | None) -> None:
        self.path, self.start, self.emg_fs, self.acc_fs = path, start, emg_fs, acc_fs
        self.chunks: list[SignalChunk] = []
        self.annotations: list[tuple[float, float | None, str]] = []
        self.closed = False

    def write(self, chunk: SignalChunk) -> None:
        self.chunks.append(chunk)

    def annotate(self, onset_s: float, duration_s: float | None, text: str) -> None:
        self.annotations.append((onset_s, duration_s, text))

    def close(self) -> None:
        self.closed = True


class Source:
    """A band: int16 samples, seq/tick stamping, receive times 50 ms after the packet end."""

    def __init__(self, n_packets: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.emg = rng.integers(-3000, 3000, n_packets * N_EMG).astype(np.int16)
        self.acc = rng.integers(-1100, 1100, (n_packets * N_ACC, 3)).astype(np.int16)
        self.n = n_packets

    def packet(
        self, i: int, *, seq0: int = 0, tick0: int = 5000, index0: int = 0,
        flags: PacketFlags = NO_FLAGS,
    ) -> BandPacket:  # fmt: skip
        j = i - index0
        tick = tick0 + (j * N_EMG * int(TICK_HZ)) // int(FS)
        return BandPacket.create(
            seq0 + j,
            tick,
            self.emg[i * N_EMG : (i + 1) * N_EMG],
            self.acc[i * N_ACC : (i + 1) * N_ACC],
            flags=flags,
        )

    @staticmethod
    def host_time(i: int, delay: float = 0.004) -> float:
        return T0 + (i + 1) * N_EMG / FS + delay


def _stream(tmp_path: Path, **kw: object) -> tuple[BandStream, list[MemoryRecorder]]:
    made: list[MemoryRecorder] = []

    def factory(path: Path, start: datetime, emg_fs: float, acc_fs: float | None) -> MemoryRecorder:
        rec = MemoryRecorder(path, start, emg_fs, acc_fs)
        made.append(rec)
        return rec

    bs = BandStream("band-A", recorder_factory=factory, data_dir=tmp_path, **kw)  # type: ignore[arg-type]
    return bs, made


def _recorded(rec: MemoryRecorder) -> tuple[np.ndarray, np.ndarray]:
    starts = [c.start_sample for c in rec.chunks]
    lengths = [c.emg_uv.size for c in rec.chunks]
    assert starts == list(np.cumsum([0, *lengths[:-1]]))  # contiguous chunks
    return (
        np.concatenate([c.emg_uv for c in rec.chunks]),
        np.concatenate([c.acc_g for c in rec.chunks]),
    )


def test_lossless_stream_is_recorded_exactly(tmp_path: Path) -> None:
    src = Source(200)
    bs, made = _stream(tmp_path)
    for i in range(src.n):
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.finish()
    (rec,) = made
    assert rec.closed
    assert rec.emg_fs == FS and rec.acc_fs == 100.0
    emg, acc = _recorded(rec)
    np.testing.assert_array_equal(emg, src.emg * 0.5)
    np.testing.assert_array_equal(acc, src.acc * 0.001)
    assert bs.samples == src.n * N_EMG
    assert rec.path == tmp_path / "band-A" / f"{rec.path.stem}.edf"
    # the file starts at the first sample: 50 ms before the first packet's receipt
    assert abs(rec.start.timestamp() - T0) < 0.01


def test_lost_packets_become_nan_at_the_right_samples(tmp_path: Path) -> None:
    src = Source(100)
    bs, made = _stream(tmp_path)
    for i in range(src.n):
        if 10 <= i < 13:
            continue
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.finish()
    emg, acc = _recorded(made[0])
    assert emg.size == src.n * N_EMG
    gap = np.isnan(emg)
    assert np.array_equal(np.flatnonzero(gap), np.arange(1000, 1300))
    np.testing.assert_array_equal(emg[~gap], (src.emg * 0.5)[~gap])
    assert acc.shape == (src.n * N_ACC, 3)
    # accelerometer rows in the gap repeat the last real row
    np.testing.assert_array_equal(acc[50:65], np.tile(src.acc[49] * 0.001, (15, 1)))
    st = bs.status()
    assert st["missing_packets"] == 3
    assert st["missing_emg"] == 300


def test_reordered_and_duplicated_packets_do_not_disturb_the_timeline(tmp_path: Path) -> None:
    src = Source(60)
    bs, made = _stream(tmp_path)
    order = [*range(0, 20), 21, 20, 22, 22, 24, 23, *range(25, 60)]
    for i in order:
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.finish()
    emg, _ = _recorded(made[0])
    np.testing.assert_array_equal(emg, src.emg * 0.5)
    assert bs.status()["duplicates"] == 1


def test_reconnect_after_outage_keeps_exact_sample_count(tmp_path: Path) -> None:
    src = Source(400)
    bs, made = _stream(tmp_path)
    for i in range(100):
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.on_link_lost()
    assert not bs.connected
    for i in range(300, 400):  # 10 s later, same band clock
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.finish()
    emg, _ = _recorded(made[0])
    assert emg.size == 400 * N_EMG
    assert np.array_equal(np.flatnonzero(np.isnan(emg)), np.arange(100 * N_EMG, 300 * N_EMG))
    assert bs.status()["reboots"] == 0


def test_reboot_gap_is_sized_from_the_wall_clock(tmp_path: Path) -> None:
    src = Source(300)
    bs, made = _stream(tmp_path)
    for i in range(100):
        bs.on_packet(src.packet(i), src.host_time(i))
    # band reboots: 2 s of silence, then seq and tick restart from zero
    for i in range(140, 300):
        bs.on_packet(src.packet(i, seq0=0, tick0=0, index0=140), src.host_time(i))
    bs.finish()
    emg, acc = _recorded(made[0])
    st = bs.status()
    assert st["reboots"] == 1
    assert st["resets"] == 1
    gap = int(st["reset_gap_samples"])  # type: ignore[call-overload]
    assert gap % 20 == 0  # whole accelerometer periods
    # true gap is 40 packets = 4000 samples; the new segment's first pair is ~4 ms late
    assert 4000 <= gap <= 4000 + 40
    assert emg.size == 260 * N_EMG + gap
    assert acc.shape[0] * 20 == emg.size
    np.testing.assert_array_equal(emg[-160 * N_EMG :], src.emg[140 * N_EMG :] * 0.5)


def test_events_get_wall_clock_times_and_annotations(tmp_path: Path) -> None:
    class StubDetector(CrampDetector):
        def process(
            self, emg_uv: NDArray[np.float64], acc_g: NDArray[np.float64] | None = None
        ) -> list[DetectorEvent]:
            before = self.samples_seen
            self._n_samples += emg_uv.size
            if before < 4000 <= self._n_samples:  # once, when sample 4000 (2 s) passes
                return [DetectorEvent("spasm_onset", 1, 1.5, self._n_samples / FS)]
            return []

    src = Source(100)
    bs, made = _stream(tmp_path, detector_factory=StubDetector)
    events = []
    for i in range(src.n):
        events += bs.on_packet(src.packet(i), src.host_time(i)).events
    (ev,) = events
    assert ev.band_id == "band-A"
    assert ev.wall_time == pytest.approx(T0 + 1.5, abs=0.01)
    doc = ev.to_json()
    assert doc["type"] == "spasm_onset" and doc["t_s"] == 1.5
    assert doc["time"] == utc_iso(ev.wall_time)
    assert made[0].annotations == [(1.5, None, "crampwatch:spasm_onset#1")]


def test_real_detector_runs_and_emits_summaries(tmp_path: Path) -> None:
    src = Source(100)
    bs, _ = _stream(tmp_path)
    summaries = []
    for i in range(src.n):
        summaries += bs.on_packet(src.packet(i), src.host_time(i)).summaries
    summaries += bs.finish().summaries
    assert len(summaries) == 5  # 5 s of signal, one summary per second
    assert all(s.band_id == "band-A" for s in summaries)


def test_status_reports_battery_lead_off_and_drift(tmp_path: Path) -> None:
    bs, _ = _stream(tmp_path)
    bs.on_status(
        BandStatus(battery_pct=81, lead_off=True, firmware=(1, 4, 2), uptime_s=3725,
                   dropped_packets=3, charging=True),
        T0,
    )  # fmt: skip
    st = bs.status()
    assert (st["battery_pct"], st["lead_off"], st["charging"]) == (81, True, True)
    assert (st["firmware"], st["uptime_s"], st["band_dropped_packets"]) == ("1.4.2", 3725, 3)
    assert st["drift_ppm"] is None
    assert st["sync_rtt_ms"] is None
    assert st["connected"] is False


def test_packet_flags_reach_the_status_and_the_samples_stay(tmp_path: Path) -> None:
    src = Source(100)
    bs, made = _stream(tmp_path)
    for i in range(src.n):
        flags = PacketFlags(0)
        if 20 <= i < 30:
            flags |= PacketFlags.LEAD_OFF
        if i in (40, 41):
            flags |= PacketFlags.EMG_SATURATED
        if i == 99:
            flags |= PacketFlags.BATTERY_LOW
        bs.on_packet(src.packet(i, flags=flags), src.host_time(i))
        if i == 25:
            assert bs.status()["lead_off"] is True
    bs.finish()
    st = bs.status()
    assert (st["lead_off_packets"], st["saturated_packets"]) == (10, 2)
    assert st["lead_off"] is False and st["battery_low"] is True
    emg, _ = _recorded(made[0])
    np.testing.assert_array_equal(emg, src.emg * 0.5)  # flagged samples are kept as sent


def test_reboot_gap_is_placed_by_the_time_sync_anchor(tmp_path: Path) -> None:
    """After a reboot the first packets are a 2-s backlog arriving in a burst; the
    session's time-sync reply (tick latched at the write, echo of the request time)
    places the new segment instead of their late receive times."""
    src = Source(400)
    bs, made = _stream(tmp_path)
    for i in range(100):
        bs.on_packet(src.packet(i), src.host_time(i))
    bs.on_link_lost()
    # band reboots at packet 100; it is dead for 2 s (packets 100..139), boots at tick 0
    # with packet 140, and the gateway reconnects 3 s later: time sync written at the
    # start of packet 201, latched by the band 20 ms later, answer received after 40 ms
    boot = 140

    def band_tick(i: int) -> int:
        return ((i - boot) * N_EMG * int(TICK_HZ)) // int(FS)

    t1 = src.host_time(200, delay=0.0)  # = T0 + 201 x 50 ms
    latched = band_tick(201) + round(0.020 * TICK_HZ)
    reply = BandStatus(battery_pct=90, tick=latched, sync_host_ms=round(t1 * 1e3))
    bs.on_status(reply, t1 + 0.040)
    # the band's 2-s ring (packets 160..199) arrives in a burst, then live packets
    for k, i in enumerate(range(160, 300)):
        host = max(src.host_time(i), t1 + 0.045 + 0.002 * k)
        bs.on_packet(src.packet(i, seq0=20, tick0=0, index0=boot), host)
    bs.finish()
    st = bs.status()
    assert (st["reboots"], st["resets"], st["sync_rtt_ms"]) == (1, 1, 40.0)
    # true gap: packets 100..159 = 6000 samples; the anchor is good to ± RTT/2 = 20 ms
    gap = int(st["reset_gap_samples"])  # type: ignore[call-overload]
    assert abs(gap - 6000) <= 40, gap
    emg, _ = _recorded(made[0])
    assert emg.size == 240 * N_EMG + gap


def test_40_ppm_drift_over_an_hour_is_mapped_within_a_millisecond(tmp_path: Path) -> None:
    """Protocol §2 clock model: samples sit on the tick grid, the crystal is 40 ppm fast,
    so a 50-ms packet period lasts 50 ms / (1 + 40e-6) of true time.  Receive times
    are late by exponential BLE delays (mean 8 ms, clipped at 30 ms) plus 1 % of
    0.1-0.4 s retransmission bursts.  Timestamps of the stream's samples are compared
    with their true times over the last 55 minutes."""
    d = 40e-6
    n = 72_000  # one hour
    rng = np.random.default_rng(4)
    delay = np.minimum(rng.exponential(0.008, n), 0.03)
    delay[rng.random(n) < 0.01] += rng.uniform(0.1, 0.4)
    period = 0.05 / (1 + d)
    emg = np.zeros(N_EMG, dtype=np.int16)
    acc = np.zeros((N_ACC, 3), dtype=np.int16)
    bs = BandStream("drift", batch_packets=40)  # fewer detector calls: a cheaper hour
    started = time.process_time()
    for j in range(n):
        tick = 7_000_000 + (j * N_EMG * int(TICK_HZ)) // int(FS)
        bs.on_packet(BandPacket.create(j, tick, emg, acc), T0 + (j + 1) * period + delay[j])
    bs.finish()
    cpu = time.process_time() - started
    t_s = np.arange(300.0, 3600.0, 7.3)  # stream seconds (nominal sample index / fs)
    got = np.array([bs.wall_time(t) for t in t_s])
    true = T0 + t_s / (1 + d)
    err_ms = np.abs(got - true) * 1e3
    drift = float(bs.status()["drift_ppm"])  # type: ignore[arg-type]
    print(f"40 ppm over 1 h: max timestamp error {err_ms.max():.3f} ms, estimated drift "
          f"{drift:+.2f} ppm (positive = band slow), {cpu:.1f} s CPU")  # fmt: skip
    assert err_ms.max() <= 1.0
    assert drift == pytest.approx(-40.0, abs=2.0)  # the band runs fast: negative


def test_night_file_names_the_evening_and_never_overwrites(tmp_path: Path) -> None:
    late = datetime(2024, 5, 2, 3, 0, tzinfo=UTC).astimezone()  # 03:00 local is "last night"
    p = night_file(tmp_path, "AA:BB", late)
    expected_night = datetime(2024, 5, 1, 15, 0, tzinfo=UTC).astimezone().date().isoformat()
    assert p == tmp_path / "AA_BB" / f"{expected_night}.edf"
    p.parent.mkdir(parents=True)
    p.touch()
    assert night_file(tmp_path, "AA:BB", late).name == f"{expected_night}-2.edf"


def test_utc_iso_format() -> None:
    assert utc_iso(0.25) == "1970-01-01T00:00:00.250Z"
