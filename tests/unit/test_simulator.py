"""The synthetic night (firmware_sim.night) and ``crampwatch simulate``."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import signal

from firmware_sim.night import PROFILES, NightConfig, SyntheticNight
from sensor_gateway.cli import main
from sensor_gateway.errors import SimulationError
from sensor_gateway.recordings import open_recording
from sensor_gateway.truth import EVENT_KINDS, GroundTruth, load_truth

Float = NDArray[np.float64]


def samples(night: SyntheticNight, seconds: float = 60.0) -> tuple[Float, Float]:
    """The whole night as one EMG array and one (n, 3) ACC array."""
    parts = list(night.chunks(seconds))
    return np.concatenate([c.emg_uv for c in parts]), np.concatenate([c.acc_g for c in parts])


@cache
def night_with(profile: str, *, stretch: bool, prelude: bool, mains: int = 50) -> SyntheticNight:
    """The first 0.1-h night (by seed) whose first cramp has the wanted stretch/prelude."""
    for seed in range(200):
        night = SyntheticNight(NightConfig(hours=0.1, seed=seed, profile=profile, mains_hz=mains))
        cramps = night.truth.of_kind("cramp")
        if (
            cramps
            and (cramps[0].attrs["stretch"] == "yes") == stretch
            and (cramps[0].attrs["prelude"] == "yes") == prelude
        ):
            return night
    raise AssertionError("no such night among 200 seeds")


@cache
def night_samples(profile: str, stretch: bool, prelude: bool) -> tuple[Float, Float]:
    return samples(night_with(profile, stretch=stretch, prelude=prelude))


def bandpassed(emg: Float, fs: int, mains: int) -> Float:
    """20-450 Hz band with the mains harmonics notched, zero phase (for measuring)."""
    sos = signal.butter(4, [20.0, 450.0], btype="bandpass", fs=fs, output="sos")
    y = signal.sosfiltfilt(sos, emg)
    for h in (1, 2, 3):
        b, a = signal.iirnotch(h * mains, 30.0, fs)
        y = signal.filtfilt(b, a, y)
    out: Float = y
    return out


def rms(x: Float) -> float:
    return float(np.sqrt(np.mean(x * x)))


def quiet_windows(truth: GroundTruth, duration_s: float, length: float) -> list[float]:
    """Starts of windows of ``length`` s at least 5 s away from every scripted episode."""
    busy = [(e.start_s - 5.0, e.end_s + 5.0) for e in truth.events]
    starts = np.arange(1.0, duration_s - length - 1.0, length)
    return [float(t) for t in starts if all(t + length <= a or t >= b for a, b in busy)]


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize(("profile", "fs"), [("artefact_heavy", 2000), ("plm_heavy", 1000)])
def test_chunks_are_identical_for_any_chunk_length(profile: str, fs: int) -> None:
    night = SyntheticNight(NightConfig(hours=0.1, seed=4, emg_fs=fs, mains_hz=60, profile=profile))
    emg_ref, acc_ref = samples(night, 10.0)
    assert emg_ref.size == night.n_samples == round(0.1 * 3600 * fs)
    assert acc_ref.shape == (night.n_acc, 3) == (round(0.1 * 3600 * 100), 3)
    for seconds in (0.05, 0.0173, 1.0, 7.3, 3600.0):
        chunks = list(night.chunks(seconds))
        step = max(1, round(seconds * fs))
        assert [c.start_sample for c in chunks] == list(range(0, night.n_samples, step))
        for c in chunks:  # the SignalChunk contract for ACC rows
            a, b = c.start_sample, c.start_sample + c.emg_uv.size
            assert c.acc_g.shape[0] == math.ceil(b * 100 / fs) - math.ceil(a * 100 / fs)
        assert np.array_equal(np.concatenate([c.emg_uv for c in chunks]), emg_ref)
        assert np.array_equal(np.concatenate([c.acc_g for c in chunks]), acc_ref)


def test_a_night_is_generated_lazily_in_bounded_memory() -> None:
    tracemalloc.start()
    try:
        night = SyntheticNight(NightConfig(hours=8.0, seed=1))
        it = night.chunks(10.0)
        for _ in range(6):
            next(it)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40e6  # the whole night would be 460 MB of EMG alone


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_night_other_seed_other_night() -> None:
    cfg = NightConfig(hours=0.05, seed=11, profile="artefact_heavy")
    a, b = SyntheticNight(cfg), SyntheticNight(cfg)
    assert a.truth == b.truth and a.truth.meta == b.truth.meta
    assert [e.attrs for e in a.truth.events] == [e.attrs for e in b.truth.events]
    emg_a, acc_a = samples(a)
    emg_b, acc_b = samples(b)
    assert np.array_equal(emg_a, emg_b) and np.array_equal(acc_a, acc_b)
    # iterating again restarts the night from its first sample
    assert np.array_equal(samples(a)[0], emg_a)
    other = SyntheticNight(NightConfig(hours=0.05, seed=12, profile="artefact_heavy"))
    emg_c, acc_c = samples(other)
    assert not np.array_equal(emg_a, emg_c) and not np.array_equal(acc_a, acc_c)
    eight = [SyntheticNight(NightConfig(hours=8.0, seed=s)).truth.events for s in (1, 2)]
    assert eight[0] != eight[1]


def test_mains_none_is_chosen_by_the_seed_and_leaves_the_schedule_alone() -> None:
    chosen = {
        SyntheticNight(NightConfig(hours=0.05, seed=s, mains_hz=None)).mains_hz for s in range(12)
    }
    assert chosen == {50, 60}
    auto = SyntheticNight(NightConfig(hours=1.0, seed=3, mains_hz=None))
    fixed = SyntheticNight(NightConfig(hours=1.0, seed=3, mains_hz=110 - auto.mains_hz))
    assert auto.truth.meta["mains_hz"] == auto.mains_hz
    assert auto.truth.events == fixed.truth.events


# --------------------------------------------------------------------------- quantisation


def test_samples_are_quantised_like_the_band() -> None:
    emg, acc = samples(SyntheticNight(NightConfig(hours=0.25, seed=2, profile="artefact_heavy")))
    assert np.array_equal(np.rint(emg * 2.0) / 2.0, emg)
    assert emg.min() >= -16384.0 and emg.max() <= 16383.5
    assert np.array_equal(np.rint(acc * 1000.0) / 1000.0, acc)
    assert not np.isnan(emg).any() and not np.isnan(acc).any()


# --------------------------------------------------------------------------- truth


def _check_truth(night: SyntheticNight) -> None:
    truth, dur = night.truth, night.duration_s
    assert truth.label_kind == "cramp"
    events = truth.events
    assert [e.start_s for e in events] == sorted(e.start_s for e in events)
    for e in events:
        assert e.kind in EVENT_KINDS
        assert 0.0 <= e.start_s < e.end_s <= dur
    for x, y in itertools.pairwise(events):  # no two episodes overlap
        assert x.end_s <= y.start_s
    cramps = truth.of_kind("cramp")
    assert truth.onsets_s == tuple(c.start_s for c in cramps)
    assert truth.offsets_s == tuple(c.end_s for c in cramps)
    own = {"cramp", "fasciculation_prelude", "stretch"}
    for c in cramps:
        assert 15.0 - 1e-9 <= c.end_s - c.start_s <= 180.0 + 1e-9
        assert float(c.attrs["peak_rms_uv"]) >= float(c.attrs["mean_rms_uv"]) > 0
        for e in events:  # ≥ 20 s between a cramp's cluster and any other episode
            if e.kind not in own:
                assert e.end_s <= c.start_s - 20.0 or e.start_s >= c.end_s + 20.0
        preludes = [p for p in truth.of_kind("fasciculation_prelude") if p.end_s == c.start_s]
        assert len(preludes) == (c.attrs["prelude"] == "yes")
        stretches = [s for s in truth.of_kind("stretch") if 0 < s.start_s - c.end_s < 10.0]
        assert len(stretches) == (c.attrs["stretch"] == "yes")
    series: dict[float, list[float]] = defaultdict(list)
    for p in truth.of_kind("plm"):
        assert 0.5 - 1e-9 <= p.end_s - p.start_s <= 10.0 + 1e-9  # AASM leg movement
        series[float(p.attrs["series"])].append(p.start_s)
    for onsets in series.values():  # AASM PLM series: ≥ 4 movements, 5-90 s onset to onset
        assert len(onsets) >= 4
        gaps = np.diff(onsets)
        assert gaps.min() >= 5.0 - 1e-9 and gaps.max() <= 90.0 + 1e-9


@pytest.mark.parametrize("profile", PROFILES)
def test_truth_is_consistent_for_every_profile(profile: str) -> None:
    counts = []
    for seed in range(8):
        night = SyntheticNight(NightConfig(hours=8.0, seed=seed, profile=profile))
        _check_truth(night)
        counts.append(len(night.truth.onsets_s))
        assert night.truth.meta["seed"] == seed and night.truth.meta["profile"] == profile
    if profile == "quiet":
        assert max(counts) <= 1
    else:
        assert min(counts) >= 1 and max(counts) <= 8
    if profile == "plm_heavy":
        plm = SyntheticNight(NightConfig(hours=8.0, seed=0, profile=profile)).truth.of_kind("plm")
        assert len(plm) >= 40


def test_short_typical_nights_still_have_a_cramp() -> None:
    for seed in range(30):
        night = SyntheticNight(NightConfig(hours=0.1, seed=seed))
        _check_truth(night)
        assert len(night.truth.onsets_s) >= 1


def test_distractor_profiles_hold_their_distractors() -> None:
    def kinds(profile: str) -> set[str]:
        return {
            e.kind
            for e in SyntheticNight(NightConfig(hours=8.0, seed=5, profile=profile)).truth.events
        }

    assert {"electrode_pop", "lead_off", "mains_burst", "saturation"} <= kinds("artefact_heavy")
    assert "plm" in kinds("plm_heavy")
    assert not {"plm", "lead_off", "mains_burst", "saturation"} & kinds("quiet")


# --------------------------------------------------------------------------- physics


def test_resting_baseline_is_a_few_microvolts_with_mains_at_the_chosen_frequency() -> None:
    for mains in (50, 60):
        night = SyntheticNight(NightConfig(hours=0.1, seed=7, profile="quiet", mains_hz=mains))
        emg, _ = samples(night)
        fs, base = night.emg_fs, float(night.truth.meta["baseline_rms_uv"])
        y = bandpassed(emg, fs, mains)
        windows = quiet_windows(night.truth, night.duration_s, 10.0)
        assert len(windows) >= 5
        levels = [rms(y[int(t * fs) : int((t + 10) * fs)]) for t in windows]
        assert min(levels) >= 1.0 and max(levels) <= 10.0  # "a few µV"
        assert 0.6 * base <= float(np.median(levels)) <= 1.6 * base
        t = windows[0]
        f, pxx = signal.welch(emg[int(t * fs) : int((t + 10) * fs)], fs, nperseg=fs)
        peak = float(f[5 + int(np.argmax(pxx[5:200]))])  # strongest line 5-200 Hz
        assert peak == mains
        near = (np.abs(f - mains) >= 4) & (np.abs(f - mains) <= 8)
        assert 10 * np.log10(pxx[f == mains][0] / pxx[near].mean()) >= 10.0


@pytest.mark.parametrize(("profile", "min_ratio"), [("typical", 30.0), ("low_snr", 2.0)])
def test_cramps_stand_far_out_of_the_baseline(profile: str, min_ratio: float) -> None:
    night = night_with(profile, stretch=True, prelude=False)
    emg, acc = night_samples(profile, True, False)
    fs = night.emg_fs
    y = bandpassed(emg, fs, night.mains_hz)
    (cramp, *_) = night.truth.of_kind("cramp")
    t = quiet_windows(night.truth, night.duration_s, 10.0)[0]
    base = rms(y[int(t * fs) : int((t + 10) * fs)])
    inner = y[int((cramp.start_s + 1.0) * fs) : int((cramp.end_s - 5.0) * fs)]
    seconds = inner[: inner.size // fs * fs].reshape(-1, fs)
    level = np.sqrt(np.mean(seconds**2, axis=1))
    assert level.min() >= min_ratio * base  # every second of the plateau (≥ 6 dB for low_snr)
    before = y[int((cramp.start_s - 1.5) * fs) : int((cramp.start_s - 0.5) * fs)]
    assert rms(before) <= 1.5 * base  # abrupt onset: resting until the truth onset
    assert rms(inner) == pytest.approx(float(cramp.attrs["mean_rms_uv"]), rel=0.3)
    f, pxx = signal.welch(inner, fs, nperseg=1024)
    cum = np.cumsum(pxx)
    mdf = float(f[np.searchsorted(cum, cum[-1] / 2)])
    assert 40.0 <= mdf <= 160.0  # sEMG-like spectrum
    # the limb is still during the cramp (accelerometer noise only) and ≈ 1 g at rest
    a0, a1 = int(cramp.start_s * 100), int(cramp.end_s * 100)
    still = acc[a0:a1]
    assert still.std(axis=0).max() < 0.005
    assert np.linalg.norm(still, axis=1).mean() == pytest.approx(1.0, abs=0.01)
    (stretch,) = [s for s in night.truth.of_kind("stretch") if s.start_s > cramp.end_s][:1]
    moving = acc[int(stretch.start_s * 100) : int(stretch.end_s * 100)]
    assert moving.std(axis=0).max() > 0.05  # the stretch moves the leg


def test_a_prelude_holds_isolated_spikes_before_an_abrupt_cramp() -> None:
    night = night_with("typical", stretch=False, prelude=True)
    emg, _ = night_samples("typical", False, True)
    fs = night.emg_fs
    y = bandpassed(emg, fs, night.mains_hz)
    (prelude,) = night.truth.of_kind("fasciculation_prelude")[:1]
    seg = np.abs(y[int(prelude.start_s * fs) : int(prelude.end_s * fs)])
    t = quiet_windows(night.truth, night.duration_s, 5.0)[0]
    base = rms(y[int(t * fs) : int((t + 5) * fs)])
    above = seg > 8.0 * base
    assert above.any()
    assert above.mean() < 0.05  # scattered spikes, not a contraction
    assert float(prelude.attrs["n_spikes"]) >= 3


def test_lead_off_is_flat_or_at_a_rail() -> None:
    for seed in range(100):
        night = SyntheticNight(NightConfig(hours=0.25, seed=seed, profile="artefact_heavy"))
        if night.truth.of_kind("lead_off"):
            break
    emg, _ = samples(night)
    for e in night.truth.of_kind("lead_off"):
        seg = emg[round(e.start_s * night.emg_fs) : round(e.end_s * night.emg_fs)]
        want = {"flat": 0.0, "rail_high": 16383.5, "rail_low": -16384.0}[str(e.attrs["mode"])]
        assert np.all(seg == want)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": 0.0}, "hours"),
        ({"hours": -1.0}, "hours"),
        ({"hours": float("nan")}, "hours"),
        ({"hours": 25.0}, "hours"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"emg_fs": 500}, "emg_fs"),
        ({"acc_fs": 5}, "acc_fs"),
        ({"acc_fs": 99.5}, "acc_fs"),
        ({"mains_hz": 55}, "mains_hz"),
        ({"profile": "nightmare"}, "typical, plm_heavy"),
    ],
)
def test_bad_settings_raise_simulation_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        NightConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_chunk_length_raises_at_once(seconds: float) -> None:
    night = SyntheticNight(NightConfig(hours=0.01, seed=0))
    with pytest.raises(SimulationError, match="chunk length"):
        night.chunks(seconds)


# --------------------------------------------------------------------------- the command


def test_simulate_command_round_trips_through_edf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "night.edf"
    args = ["simulate", "--hours", "0.05", "--seed", "2", "--mains", "60", "--out", str(out)]
    assert main([*args, "--start", "2024-05-01T23:30:00"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "cramps" in text and "x real time" in text
    night = SyntheticNight(NightConfig(hours=0.05, seed=2, mains_hz=60))
    emg, acc = samples(night)
    with open_recording(out) as reader:
        info = reader.info
        got = list(reader.chunks(60.0))
    assert info.file_format == "EDF+" and info.emg.label == "EMG Gastroc L"
    assert info.start.isoformat() == "2024-05-01T23:30:00"
    assert np.array_equal(np.concatenate([c.emg_uv for c in got]), emg)
    acc_read = np.concatenate([c.acc_g for c in got])
    assert np.array_equal(np.rint(acc_read * 1000), np.rint(acc * 1000))  # the same 1-mg steps
    assert np.abs(acc_read - acc).max() < 1e-12  # up to pyedflib's float scaling
    notes = [a for a in info.annotations if a.text.startswith("truth:")]
    assert [a.text for a in notes] == [f"truth:{e.kind}" for e in night.truth.events]
    for a, e in zip(notes, night.truth.events, strict=True):
        assert a.onset_s == pytest.approx(e.start_s, abs=1e-4)
        assert a.duration_s == pytest.approx(e.end_s - e.start_s, abs=1e-4)
    truth = load_truth(out)
    assert truth == night.truth
    assert truth is not None and truth.meta["mains_hz"] == 60


@pytest.mark.parametrize("name", ["n.csv", "n.bdf"])
def test_simulate_command_writes_csv_and_bdf(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert (
        main(["simulate", "--hours", "0.01", "--seed", "1", "--emg-fs", "1000", "--out", str(out)])
        == 0
    )
    night = SyntheticNight(NightConfig(hours=0.01, seed=1, emg_fs=1000, mains_hz=None))
    emg, _ = samples(night)
    with open_recording(out) as reader:
        assert np.array_equal(np.concatenate([c.emg_uv for c in reader.chunks(10.0)]), emg)
    assert load_truth(out) == night.truth


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--profile", "nightmare"], "unknown profile 'nightmare'"),
        (["--hours", "30"], "hours must be"),
        (["--format", "CSV", "--hours", "25"], "hours must be"),
    ],
)
def test_simulate_command_refuses_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "n.edf"
    assert main(["simulate", "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crampwatch: ") and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_simulate_command_refuses_unknown_suffix_and_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--hours", "0.01", "--out", str(tmp_path / "n.dat")]) == 1
    assert "cannot infer the format" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "n.edf"
    assert main(["simulate", "--hours", "0.01", "--out", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing.parent) in err and "cannot write" in err
    assert list(tmp_path.iterdir()) == []
