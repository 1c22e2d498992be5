"""BandStream: packets → continuous timeline with NaN gaps, recorder chunks, stamped events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent
from sensor_gateway.band_stream import BandStream, night_file, utc_iso
from sensor_gateway.recordings import SignalChunk

TICK_HZ = 32768.0
FS = 2000.0
N_EMG, N_ACC = 100, 5
T0 = 1_714_600_000.0


@dataclass(frozen=True)
class Pkt:
    seq: int
    tick: int
    emg_fs: float
    emg: NDArray[np.int16]
    acc: NDArray[np.int16]


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

    def packet(self, i: int, *, seq0: int = 0, tick0: int = 5000, index0: int = 0) -> Pkt:
        j = i - index0
        tick = (tick0 + int(np.floor(j * N_EMG * TICK_HZ / FS))) % (1 << 32)
        return Pkt(
            (seq0 + j) % 65536,
            tick,
            FS,
            self.emg[i * N_EMG : (i + 1) * N_EMG],
            self.acc[i * N_ACC : (i + 1) * N_ACC],
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
    bs.on_status({"battery_pct": 81, "lead_off": True})
    st = bs.status()
    assert st["battery_pct"] == 81.0
    assert st["lead_off"] is True
    assert st["drift_ppm"] is None
    assert st["connected"] is False


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
