"""Recordings I/O: EDF+/BDF+/CSV round trips, the public EDFs, and corrupt files."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from sensor_gateway.errors import RecordingError
from sensor_gateway.recordings import (
    RecordingWriter,
    SignalChunk,
    open_recording,
)

SHARED = Path("/work/shared/data")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared/data not available")
START = datetime(2024, 5, 1, 22, 30, 15, tzinfo=UTC)

# Half a quantisation step of each format (docs/recordings.md).
EMG_TOL = {"EDF+": 0.25, "BDF+": 0.5 / 512, "CSV": 0.5e-4}
ACC_TOL = {"EDF+": 0.5e-3, "BDF+": 0.5e-3 / 256, "CSV": 0.5e-6}
SUFFIX = {"EDF+": ".edf", "BDF+": ".bdf", "CSV": ".csv"}


def _ceil_div(a: int, num: int, den: int) -> int:
    return -((-a * num) // den)


def _write(
    path: Path,
    fmt: str,
    emg: NDArray[Any],
    acc: NDArray[Any] | None,
    *,
    emg_fs: int,
    acc_fs: int | None,
    sizes: list[int],
) -> RecordingWriter:
    """Write ``emg``/``acc`` in chunks of the given sizes (cycled), honouring the ACC contract."""
    w = RecordingWriter(path, emg_fs=emg_fs, acc_fs=acc_fs, start=START, file_format=fmt)
    pos, i = 0, 0
    while pos < emg.size:
        end = min(emg.size, pos + sizes[i % len(sizes)])
        rows = np.zeros((0, 3))
        if acc is not None and acc_fs is not None:
            rows = acc[_ceil_div(pos, acc_fs, emg_fs) : _ceil_div(end, acc_fs, emg_fs)]
        w.write(SignalChunk(pos, emg[pos:end], rows))
        pos, i = end, i + 1
    w.close()
    return w


def _read_all(path: Path, seconds: float) -> tuple[list[SignalChunk], NDArray[np.float64]]:
    with open_recording(path) as reader:
        chunks = list(reader.chunks(seconds))
    emg = np.concatenate([c.emg_uv for c in chunks]) if chunks else np.empty(0)
    return chunks, emg


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    fmt=st.sampled_from(["EDF+", "BDF+", "CSV"]),
    emg_fs=st.sampled_from([1000, 2000]),
    with_acc=st.booleans(),
    n=st.integers(min_value=0, max_value=7000),
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=6),
    read_s=st.floats(min_value=0.0007, max_value=4.0),
    gaps=st.lists(st.tuples(st.integers(0, 7000), st.integers(1, 300)), max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip(
    tmp_path: Path,
    *,
    fmt: str,
    emg_fs: int,
    with_acc: bool,
    n: int,
    sizes: list[int],
    read_s: float,
    gaps: list[tuple[int, int]],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    acc_fs = 100 if with_acc else None
    # EMG on the band's 0.5 uV grid: EDF must reproduce it exactly.
    emg = rng.integers(-32768, 32768, size=n) * 0.5
    for a, length in gaps:
        emg[a : a + length] = np.nan
    n_acc = _ceil_div(n, 100, emg_fs) if with_acc else 0
    acc = rng.uniform(-30.0, 30.0, size=(n_acc, 3)) if with_acc else None
    path = tmp_path / f"rt{SUFFIX[fmt]}"

    writer = _write(path, fmt, emg, acc, emg_fs=emg_fs, acc_fs=acc_fs, sizes=sizes)
    assert writer.clipped == 0
    chunks, got = _read_all(path, read_s)

    info = open_recording(path).info
    assert info.file_format == fmt
    assert info.emg.fs_hz == emg_fs
    assert info.emg.n_samples == n
    assert info.duration_s == pytest.approx(n / emg_fs)
    assert info.emg_scale_to_uv == 1.0
    assert got.size == n
    assert np.array_equal(np.isnan(got), np.isnan(emg))
    ok = ~np.isnan(emg)
    if fmt == "EDF+":
        assert np.array_equal(got[ok], emg[ok])
    else:
        assert np.all(np.abs(got[ok] - emg[ok]) <= EMG_TOL[fmt])

    # Chunk contract: consecutive, and ACC rows ceil(t0*acc_fs)..ceil(t1*acc_fs)-1.
    step = max(1, round(read_s * emg_fs))
    pos = 0
    for c in chunks:
        assert c.start_sample == pos
        assert c.emg_uv.size == min(step, n - pos)
        end = pos + c.emg_uv.size
        want_rows = _ceil_div(end, 100, emg_fs) - _ceil_div(pos, 100, emg_fs) if with_acc else 0
        assert c.acc_g.shape == (want_rows, 3)
        pos = end

    if with_acc:
        assert acc is not None
        assert tuple(c.label for c in info.acc) == ("ACC X", "ACC Y", "ACC Z")
        assert all(c.fs_hz == 100 and c.n_samples == n_acc for c in info.acc)
        got_acc = np.concatenate([np.zeros((0, 3)), *(c.acc_g for c in chunks)])
        # ACC row k (at k/100 s) lies in EMG sample floor(k * emg_fs / 100): NaN there => NaN.
        in_gap = np.isnan(emg[np.arange(n_acc) * emg_fs // 100])
        assert np.array_equal(np.isnan(got_acc).any(axis=1), in_gap)
        keep = ~in_gap
        assert np.all(np.abs(got_acc[keep] - acc[keep]) <= ACC_TOL[fmt])
    else:
        assert info.acc == ()


@pytest.mark.parametrize("fmt", ["EDF+", "BDF+", "CSV"])
def test_many_short_gaps_and_annotations_survive(tmp_path: Path, fmt: str) -> None:
    """More annotations than 1-s records (80 gaps in 1.5 s) must all be kept."""
    emg = np.arange(1500, dtype=np.float64) * 0.5
    for a in range(0, 1500, 18):
        emg[a : a + 5] = np.nan
    path = tmp_path / f"gappy{SUFFIX[fmt]}"
    w = RecordingWriter(path, emg_fs=1000, acc_fs=None, start=START, file_format=fmt)
    w.write(SignalChunk(0, emg, np.zeros((0, 3))))
    for k in range(12):
        w.annotate(0.1 * k, None if k % 2 else 0.05, f"note {k}")
    w.close()
    _, got = _read_all(path, 0.3)
    assert got.size == 1500
    assert np.array_equal(np.isnan(got), np.isnan(emg))
    assert np.array_equal(got[~np.isnan(emg)], emg[~np.isnan(emg)])
    info = open_recording(path).info
    notes = [a for a in info.annotations if a.text.startswith("note")]
    assert [a.text for a in notes] == [f"note {k}" for k in range(12)]
    assert [a.duration_s is None for a in notes] == [k % 2 == 1 for k in range(12)]
    assert [a.onset_s for a in notes] == pytest.approx([0.1 * k for k in range(12)])
    if fmt != "CSV":
        gaps = [a for a in info.annotations if a.text == "crampwatch:gap"]
        assert len(gaps) == len(range(0, 1500, 18))


@pytest.mark.parametrize("fmt", ["EDF+", "BDF+", "CSV"])
def test_values_outside_the_range_are_clipped_and_counted(tmp_path: Path, fmt: str) -> None:
    emg = np.array([0.0, 20000.0, -20000.0, 16383.5, -16384.0, 5.0] * 100)
    acc = np.tile([[40.0, -40.0, 1.0]], (30, 1))
    path = tmp_path / f"clip{SUFFIX[fmt]}"
    w = _write(path, fmt, emg, acc, emg_fs=1000, acc_fs=50, sizes=[600])
    assert w.clipped_emg == 200
    assert w.clipped_acc == 60
    assert w.clipped == 260
    chunks, got = _read_all(path, 10.0)
    expected = np.clip(emg, -16384.0, 16383.5)
    assert np.all(np.abs(got - expected) <= EMG_TOL[fmt])
    got_acc = np.concatenate([c.acc_g for c in chunks])
    assert np.all(np.abs(got_acc - np.clip(acc, -32.768, 32.767)) <= ACC_TOL[fmt])


def test_edf_scales_band_counts_bit_exactly(tmp_path: Path) -> None:
    """0.5 uV/LSB: every 16-bit band count maps to one digital value and back."""
    counts = np.arange(-32768, 32768, dtype=np.int64)
    path = tmp_path / "counts.edf"
    _write(path, "EDF+", counts * 0.5, None, emg_fs=2000, acc_fs=None, sizes=[5000])
    reader = pyedflib.EdfReader(str(path))
    try:
        digital = reader.readSignal(0, 0, counts.size, digital=True)
        assert reader.getPhysicalMinimum(0) == -16384.0
        assert reader.getPhysicalMaximum(0) == 16383.5
    finally:
        reader.close()
    assert np.array_equal(digital, counts)


def test_start_time_and_anonymous_header(tmp_path: Path) -> None:
    path = tmp_path / "hdr.edf"
    _write(path, "EDF+", np.zeros(10), None, emg_fs=1000, acc_fs=None, sizes=[10])
    assert open_recording(path).info.start == START
    reader = pyedflib.EdfReader(str(path))
    try:
        assert reader.getPatientName() in {"", "X"}
        assert reader.getPatientCode() in {"", "X"}
    finally:
        reader.close()


def test_csv_with_different_rates_follows_the_documented_layout(tmp_path: Path) -> None:
    """Hand-written file per docs/recordings.md: ACC on the rows its samples fall in."""
    path = tmp_path / "hand.csv"
    path.write_text(
        "# crampwatch-csv 1\n"
        "# start=2024-05-01T22:00:00+00:00\n"
        "# emg_fs=4\n"
        "# acc_fs=2\n"
        "t_s,emg_uv,acc_x_g,acc_y_g,acc_z_g\n"
        "0.00,1.5,0.1,0.2,0.3\n"
        "0.25,2.5,,,\n"
        "0.50,,0.4,0.5,0.6\n"
        "0.75,-3,,,\n"
        "1.00,4,0.7,0.8,0.9\n"
        "# annotation=0.5,0.25,lost sample\n"
    )
    info = open_recording(path).info
    assert info.emg.n_samples == 5
    assert info.acc[0].n_samples == 3
    assert info.start == datetime(2024, 5, 1, 22, tzinfo=UTC)
    assert [(a.onset_s, a.duration_s, a.text) for a in info.annotations] == [
        (0.5, 0.25, "lost sample")
    ]
    chunks, emg = _read_all(path, 0.5)
    assert np.array_equal(emg, [1.5, 2.5, np.nan, -3.0, 4.0], equal_nan=True)
    assert [c.acc_g.shape[0] for c in chunks] == [1, 1, 1]
    acc = np.concatenate([c.acc_g for c in chunks])
    # the ACC sample at 0.5 s falls on the EMG gap row: it is part of the gap
    assert np.array_equal(acc, [[0.1, 0.2, 0.3], [np.nan] * 3, [0.7, 0.8, 0.9]], equal_nan=True)


# --------------------------------------------------------------------------- shared data


@needs_shared
def test_emggo_sample_opens_with_readme_facts() -> None:
    path = SHARED / "emggo_sample" / "emggo_sample_ta.edf"
    reader = open_recording(path)
    info = reader.info
    assert info.file_format == "EDF+"
    assert info.emg.label == "EMG Tibialis Ant"
    assert info.emg.unit == "uV"
    assert info.emg.fs_hz == 250
    assert info.emg.n_samples == 137420
    assert info.duration_s == pytest.approx(549.68)
    assert info.emg_scale_to_uv == 1.0
    assert info.acc == ()
    assert info.start == datetime(1985, 1, 1)
    emg = np.concatenate([c.emg_uv for c in reader.chunks(60.0)])
    assert emg.size == 137420
    # README: range -1728.5..+1994.2 uV, within half a quantisation step of 0.057 uV
    assert emg.min() == pytest.approx(-1728.5, abs=0.1)
    assert emg.max() == pytest.approx(1994.2, abs=0.1)


@needs_shared
@pytest.mark.parametrize("path", sorted((SHARED / "simulated_onsets").glob("*.edf")), ids=str)
def test_simulated_onsets_are_unscaled_au(path: Path) -> None:
    info = open_recording(path).info
    assert info.emg.label == "EMG Simulated"
    assert info.emg.unit == "a.u."
    assert info.emg_scale_to_uv is None
    assert info.emg.fs_hz == 1000
    # README: real lengths 20589-23946 samples, 1-2 trailing samples dropped in 6 files
    assert 20589 - 2 <= info.emg.n_samples <= 23946
    assert [a.text for a in info.annotations] == ["burst onset"] * 5


@needs_shared
@pytest.mark.parametrize("path", sorted((SHARED / "elderly_isometric").glob("*.edf")), ids=str)
def test_elderly_isometric_lists_all_channels(path: Path) -> None:
    info = open_recording(path).info
    assert [c.label for c in info.channels] == [
        "EMG Vastus Lat",
        "EMG Biceps Fem",
        "EMG Tibialis Ant",
        "EMG Gastroc Lat",
        "Force load cell",
    ]
    assert info.emg.label == "EMG Vastus Lat"  # the first EMG channel
    assert info.emg.unit == "uV"
    assert info.emg.fs_hz == 2000
    assert info.emg.n_samples == 20001
    assert info.duration_s == pytest.approx(10.0005)


# --------------------------------------------------------------------------- errors


def _assert_error(path: Path, *, stream: bool = False, match: str = "") -> RecordingError:
    with pytest.raises(RecordingError) as err:
        reader = open_recording(path)
        if stream:
            for _ in reader.chunks(1.0):
                pass
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message
    assert match in message
    return err.value


def _edf_with(path: Path, label: str, unit: str) -> Path:
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders(
        [
            {
                "label": label,
                "dimension": unit,
                "sample_frequency": 100,
                "physical_max": 100.0,
                "physical_min": -100.0,
                "digital_max": 32767,
                "digital_min": -32768,
            }
        ]
    )
    w.writeSamples([np.zeros(300)])
    w.close()
    return path


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.edf", match="no such file")


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.edf"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _assert_error(path)


def test_garbage_after_an_edf_version_field(tmp_path: Path) -> None:
    path = tmp_path / "garbage2.edf"
    path.write_bytes(b"0       " + bytes(range(256)) * 8)
    _assert_error(path)


def test_edf_truncated_mid_record(tmp_path: Path) -> None:
    whole = tmp_path / "whole.edf"
    _write(whole, "EDF+", np.arange(5000) * 0.5, None, emg_fs=1000, acc_fs=None, sizes=[5000])
    data = whole.read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: len(data) - 777])  # inside the last 1-s record (2000+ bytes)
    _assert_error(cut, match="truncated")


@needs_shared
def test_shared_edf_truncated_mid_record(tmp_path: Path) -> None:
    data = (SHARED / "emggo_sample" / "emggo_sample_ta.edf").read_bytes()
    cut = tmp_path / "emggo_cut.edf"
    cut.write_bytes(data[: len(data) // 2 + 7])
    _assert_error(cut, match="truncated")


def test_header_only_file(tmp_path: Path) -> None:
    whole = _edf_with(tmp_path / "w.edf", "EMG Calf", "uV")
    data = whole.read_bytes()
    header_bytes = int(data[184:192])
    path = tmp_path / "header_only.edf"
    path.write_bytes(data[:header_bytes])
    _assert_error(path, match="truncated")
    short = tmp_path / "short_header.edf"
    short.write_bytes(data[:200])
    _assert_error(short, match="header")


def test_edf_without_emg_channel(tmp_path: Path) -> None:
    path = _edf_with(tmp_path / "ecg.edf", "ECG Lead II", "uV")
    _assert_error(path, match="no EMG channel")


def test_emg_in_unknown_unit(tmp_path: Path) -> None:
    path = _edf_with(tmp_path / "kg.edf", "EMG Calf", "kg")
    err = _assert_error(path, match="'kg'")
    assert "EMG Calf" in str(err)


@pytest.mark.parametrize(("unit", "scale"), [("uV", 1.0), ("mV", 1000.0), ("V", 1e6), ("", None)])
def test_emg_units_are_scaled_to_uv(tmp_path: Path, unit: str, scale: float | None) -> None:
    path = _edf_with(tmp_path / "u.edf", "EMG Calf", unit)
    assert open_recording(path).info.emg_scale_to_uv == scale


def test_edf_with_incomplete_acc(tmp_path: Path) -> None:
    path = tmp_path / "acc2.edf"
    w = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDFPLUS)
    headers: list[dict[str, str | int | float | None]] = [
        {"label": lab, "dimension": unit, "sample_frequency": 100, "physical_max": 10.0,
         "physical_min": -10.0, "digital_max": 32767, "digital_min": -32768}
        for lab, unit in [("EMG Calf", "uV"), ("ACC X", "g")]
    ]  # fmt: skip
    w.setSignalHeaders(headers)
    w.writeSamples([np.zeros(100), np.zeros(100)])
    w.close()
    _assert_error(path, match="ACC")


CSV_HEAD = "# crampwatch-csv 1\n# start=2024-05-01T22:00:00\n# emg_fs=4\n"


@pytest.mark.parametrize(
    ("name", "text", "stream"),
    [
        ("no_magic", "t_s,emg_uv\n0,1\n", False),
        ("no_rate", "# crampwatch-csv 1\n# start=2024-05-01T22:00:00\nt_s,emg_uv\n0,1\n", False),
        ("bad_columns", CSV_HEAD + "time,emg\n0,1\n", False),
        ("no_header_row", CSV_HEAD, False),
        ("ragged", CSV_HEAD + "t_s,emg_uv\n0,1\n0.25,2,3\n", True),
        ("not_a_number", CSV_HEAD + "t_s,emg_uv\n0,1\n0.25,abc\n", True),
        ("missing_row", CSV_HEAD + "t_s,emg_uv\n0,1\n0.5,2\n", True),
    ],
)
def test_malformed_csv(tmp_path: Path, name: str, text: str, stream: bool) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    _assert_error(path, stream=stream)


def test_writer_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emg_label"):
        RecordingWriter(tmp_path / "a.edf", emg_fs=2000, acc_fs=None, start=START,
                        emg_label="EMG Gastrocnemius Left")  # fmt: skip
    with pytest.raises(ValueError, match="file_format"):
        RecordingWriter(tmp_path / "a.xyz", emg_fs=2000, acc_fs=None, start=START,
                        file_format="GDF")  # fmt: skip
    with pytest.raises(ValueError, match="emg_fs"):
        RecordingWriter(tmp_path / "a.edf", emg_fs=2000.5, acc_fs=None, start=START)
    w = RecordingWriter(tmp_path / "b.edf", emg_fs=2000.0, acc_fs=None, start=START)
    w.write(SignalChunk(0, np.zeros(10), np.zeros((0, 3))))
    with pytest.raises(RecordingError, match="expected 10"):
        w.write(SignalChunk(20, np.zeros(10), np.zeros((0, 3))))
    w.close()
    assert open_recording(tmp_path / "b.edf").info.emg.n_samples == 10


def test_empty_recording_reads_back_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.edf"
    RecordingWriter(path, emg_fs=1000, acc_fs=100, start=START).close()
    info = open_recording(path).info
    assert info.emg.n_samples == 0
    assert info.duration_s == 0.0
    assert list(open_recording(path).chunks()) == []


def test_late_acc_is_padded_with_nan(tmp_path: Path) -> None:
    """A writer fed EMG without its ACC rows keeps memory bounded and marks ACC missing."""
    path = tmp_path / "noacc.edf"
    w = RecordingWriter(path, emg_fs=1000, acc_fs=10, start=START)
    for k in range(5):
        w.write(SignalChunk(k * 1000, np.ones(1000), np.zeros((0, 3))))
    w.close()
    chunks, emg = _read_all(path, 1.0)
    assert np.array_equal(emg, np.ones(5000))
    acc = np.concatenate([c.acc_g for c in chunks])
    assert acc.shape == (50, 3)
    assert np.isnan(acc).all()
    assert math.isclose(open_recording(path).info.duration_s, 5.0)
