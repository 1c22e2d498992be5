"""The streaming cramp detector on signals synthesised here (exact truth by construction)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramp_signal.detector import CrampDetector, DetectorConfig, DetectorEvent, detect_array
from cramp_signal.errors import ConfigurationError, SignalError
from cramp_signal.features import page_cusum, page_cusum_bound

NOISE_UV = 5.0


def _emg(
    fs: float,
    seconds: float,
    bursts: list[tuple[float, float, float]],
    seed: int = 0,
) -> np.ndarray:
    """Gaussian background plus Gaussian 'EMG' bursts ``(onset_s, end_s, rms_uv)``."""
    rng = np.random.default_rng(seed)
    n = round(fs * seconds)
    x = rng.normal(scale=NOISE_UV, size=n)
    for on, end, rms in bursts:
        a, b = round(on * fs), round(end * fs)
        x[a:b] += rng.normal(scale=rms, size=b - a)
    return x


def _types(events: list[DetectorEvent]) -> list[str]:
    return [e.type for e in events if e.type != "signal_quality"]


def _one(events: list[DetectorEvent], kind: str) -> DetectorEvent:
    found = [e for e in events if e.type == kind]
    assert len(found) == 1, [e.type for e in events]
    return found[0]


def test_short_burst_is_a_cleared_spasm_with_accurate_fast_onset() -> None:
    x = _emg(2000.0, 8.0, [(3.0, 5.0, 60.0)])
    events = detect_array(x, 2000.0)
    assert _types(events) == ["spasm_onset", "spasm_cleared"]
    onset = _one(events, "spasm_onset")
    assert abs(onset.t_s - 3.0) <= 0.02
    assert onset.emitted_at_s - 3.0 <= 0.3
    cleared = _one(events, "spasm_cleared")
    assert abs(cleared.t_s - 5.0) <= 0.1
    assert cleared.episode == onset.episode == 1


def test_sustained_contraction_is_confirmed_then_ended_with_description() -> None:
    x = _emg(2000.0, 40.0, [(5.0, 30.0, 80.0)])
    events = detect_array(x, 2000.0)
    assert _types(events) == ["spasm_onset", "cramp_confirmed", "cramp_end"]
    onset, conf, end = (_one(events, k) for k in ("spasm_onset", "cramp_confirmed", "cramp_end"))
    assert {onset.episode, conf.episode, end.episode} == {1}
    assert conf.t_s == onset.t_s
    assert conf.emitted_at_s == pytest.approx(onset.t_s + 12.0, abs=0.01)
    assert abs(end.t_s - 30.0) <= 0.1
    # emitted once 80 % of the last 2 s were quiet
    assert end.emitted_at_s == pytest.approx(31.6, abs=0.1)
    d = end.details
    assert d["duration_s"] == pytest.approx(25.0, abs=0.15)
    # background band-passed RMS ~ 5 * sqrt(430/1000) = 3.3 uV; burst adds 80 uV white
    # noise of which the 20-450 Hz band keeps the same fraction
    band = np.sqrt(430.0 / 1000.0)
    assert d["mean_rms_uv"] == pytest.approx(np.hypot(80.0, 5.0) * band, rel=0.1)
    assert d["intensity_vs_baseline"] == pytest.approx(np.hypot(80.0, 5.0) / 5.0, rel=0.25)
    # white noise band-limited to 20-450 Hz has its median frequency near 235 Hz
    assert d["median_frequency_hz"] == pytest.approx(235.0, abs=20.0)
    assert d["severity"] == 2  # 25 s, intensity ~16x baseline
    assert d["quality_ok_fraction"] == pytest.approx(1.0)
    assert d["limb_still_fraction"] is None  # no accelerometer
    assert end.to_json()["duration_s"] == d["duration_s"]


def test_ten_second_voluntary_contraction_is_not_a_cramp() -> None:
    x = _emg(2000.0, 25.0, [(5.0, 15.0, 150.0)])
    assert _types(detect_array(x, 2000.0)) == ["spasm_onset", "spasm_cleared"]


def test_waxing_waning_plateau_with_short_dip_is_one_cramp() -> None:
    bursts = [(5.0, 20.0, 80.0), (20.0, 21.0, 3.0), (21.0, 40.0, 60.0)]
    events = detect_array(_emg(2000.0, 50.0, bursts), 2000.0)
    assert _types(events) == ["spasm_onset", "cramp_confirmed", "cramp_end"]
    assert abs(_one(events, "cramp_end").t_s - 40.0) <= 0.15


def test_periodic_limb_movements_are_never_confirmed() -> None:
    # AASM PLM: 0.5-10 s movements every 5-90 s
    bursts = [(t, t + d, 100.0) for t, d in ((3.0, 2.0), (25.0, 8.0), (50.0, 5.0))]
    events = detect_array(_emg(1000.0, 70.0, bursts, seed=3), 1000.0)
    assert _types(events) == ["spasm_onset", "spasm_cleared"] * 3
    assert [e.episode for e in events if e.type == "spasm_onset"] == [1, 2, 3]


def test_finish_closes_an_open_cramp() -> None:
    det = CrampDetector(1000.0)
    events = det.process(_emg(1000.0, 20.0, [(2.0, 20.0, 80.0)]))
    assert _types(events) == ["spasm_onset", "cramp_confirmed"]
    assert det.state == "cramp"
    closing = det.finish()
    assert [e.type for e in closing] == ["cramp_end"]
    assert closing[0].emitted_at_s == pytest.approx(20.0)


def test_low_rate_input_250_hz_works() -> None:
    events = detect_array(_emg(250.0, 10.0, [(4.0, 6.0, 60.0)]), 250.0)
    assert abs(_one(events, "spasm_onset").t_s - 4.0) <= 0.03


def test_prelude_spikes_reported_before_the_onset() -> None:
    fs = 2000.0
    x = _emg(fs, 30.0, [(20.0, 27.0, 80.0)], seed=5)
    spike = 400.0 * np.sin(2 * np.pi * 150.0 * np.arange(13) / fs)  # biphasic, 6.5 ms
    for t in (16.5, 17.5, 18.6, 19.3):  # isolated fasciculation-like potentials
        i = int(t * fs)
        x[i : i + spike.size] += spike
    events = detect_array(x, fs)
    kinds = _types(events)
    assert kinds[:2] == ["prelude", "spasm_onset"]
    prelude, onset = events[kinds.index("prelude")], _one(events, "spasm_onset")
    assert prelude.episode == onset.episode
    assert abs(onset.t_s - 20.0) <= 0.03
    assert 16.4 <= prelude.t_s <= 16.6


def test_gap_keeps_timeline_and_is_a_quality_event_not_a_spasm() -> None:
    fs = 1000.0
    x = _emg(fs, 12.0, [(9.0, 10.0, 60.0)])
    x[3000:4500] = np.nan
    events = detect_array(x, fs)
    assert _types(events) == ["spasm_onset", "spasm_cleared"]
    assert abs(_one(events, "spasm_onset").t_s - 9.0) <= 0.03
    quality = [e.details["quality"] for e in events if e.type == "signal_quality"]
    assert quality[0] == "gap" and quality[-1] == "ok"


def test_saturation_and_lead_off_are_quality_events_never_cramps() -> None:
    fs = 1000.0
    x = _emg(fs, 60.0, [])
    x[5000:25000] = 16384.0  # railed for 20 s
    x[35000:55000] = 0.0  # lead-off: flat for 20 s
    events = detect_array(x, fs)
    assert not [t for t in _types(events) if t in ("cramp_confirmed", "cramp_end")]
    quality = [e.details["quality"] for e in events if e.type == "signal_quality"]
    assert "saturated" in quality
    assert "lead_off" in quality


def test_electrode_pops_are_artefacts_not_spasms() -> None:
    fs = 2000.0
    x = _emg(fs, 20.0, [])
    for t, step in ((5.0, 8000.0), (9.0, -8000.0), (13.0, 7000.0)):
        x[int(t * fs) :] += step  # baseline steps of 7-8 mV
    events = detect_array(x, fs)
    assert "spasm_onset" not in _types(events)
    assert "artefact" in [e.details["quality"] for e in events if e.type == "signal_quality"]


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_mains_frequency_found_and_hum_does_not_open_episodes(mains: float) -> None:
    fs = 2000.0
    t = np.arange(int(30 * fs)) / fs
    hum = 60.0 * np.sin(2 * np.pi * mains * t) + 15.0 * np.sin(2 * np.pi * 3 * mains * t)
    det = CrampDetector(fs)
    events = det.process(_emg(fs, 30.0, []) + hum) + det.finish()
    assert det.mains_hz == mains
    assert "spasm_onset" not in _types(events)


def test_accelerometer_describes_still_cramp_and_stretch_after() -> None:
    fs, acc_fs = 1000.0, 100.0
    x = _emg(fs, 40.0, [(5.0, 25.0, 80.0)])
    n_acc = 40 * 100
    rng = np.random.default_rng(9)
    acc = np.tile([0.0, 0.0, 1.0], (n_acc, 1)) + rng.normal(scale=0.002, size=(n_acc, 3))
    acc[2510:2700] += rng.normal(scale=0.3, size=(190, 3))  # stretching after the cramp
    events = detect_array(x, fs, acc, acc_fs)
    d = _one(events, "cramp_end").details
    assert d["limb_still_fraction"] == pytest.approx(1.0)
    assert d["stretch_after"] is True


def _split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, i = [], 0
    for s in sizes:
        out.append(x[i : i + s])
        i += s
    out.append(x[i:])
    return out


def _stream(x: np.ndarray, fs: float, sizes: list[int]) -> tuple[list[object], list[object]]:
    det = CrampDetector(fs)
    events = []
    summaries = []
    for part in _split(x, sizes):
        events.extend(det.process(part))
        summaries.extend(det.drain_summaries())
    events.extend(det.finish())
    summaries.extend(det.drain_summaries())
    return [e.to_json() for e in events], [s.to_json() for s in summaries]


SHORT = _emg(1000.0, 3.0, [(0.9, 1.6, 60.0), (2.2, 2.6, 40.0)], seed=11)
SHORT[1200:1210] = np.nan
SHORT_REF = _stream(SHORT, 1000.0, [])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=400))
def test_events_identical_with_tiny_chunks_incl_single_samples(sizes: list[int]) -> None:
    # mostly 1-sample chunks, some empty, some up to 40 samples
    sizes = [1 if s > 30 else s for s in sizes] + [1] * 300
    assert _stream(SHORT, 1000.0, sizes) == SHORT_REF
    assert any(e["type"] == "spasm_onset" for e in SHORT_REF[0])  # type: ignore[index]


LONG = _emg(2000.0, 45.0, [(3.0, 4.5, 50.0), (10.0, 30.0, 70.0), (33.0, 34.0, 300.0)], seed=12)
LONG[int(31.0 * 2000) : int(31.2 * 2000)] = np.nan
LONG[int(36.0 * 2000) :] += 9000.0  # electrode pop
LONG_REF = _stream(LONG, 2000.0, [])


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20000), min_size=1, max_size=60))
def test_events_and_summaries_identical_with_random_chunk_sizes(sizes: list[int]) -> None:
    assert _stream(LONG, 2000.0, sizes) == LONG_REF
    kinds = [e["type"] for e in LONG_REF[0]]  # type: ignore[index]
    assert "cramp_confirmed" in kinds
    assert len(LONG_REF[1]) == 45


def test_empty_and_single_sample_calls() -> None:
    det = CrampDetector(2000.0)
    assert det.process(np.zeros(0)) == []
    assert det.process(np.array([3.0])) == []
    assert det.samples_seen == 1
    assert det.baseline_uv is None


def test_summaries_one_per_second_with_floor_and_state() -> None:
    det = CrampDetector(1000.0)
    det.process(_emg(1000.0, 20.0, [(5.0, 19.0, 80.0)]))
    summaries = det.drain_summaries()
    assert [s.t_s for s in summaries] == pytest.approx(list(range(1, 21)))
    band_noise = NOISE_UV * np.sqrt(430.0 / 500.0)
    assert summaries[3].noise_floor_uv == pytest.approx(band_noise, rel=0.2)
    assert summaries[3].state == "idle"
    assert summaries[10].state == "spasm"
    assert summaries[18].state == "cramp"
    assert summaries[18].quality == "ok"
    assert det.drain_summaries() == []


def test_invalid_inputs_raise_signal_errors() -> None:
    with pytest.raises(ConfigurationError):
        DetectorConfig(off_ratio=3.0, on_ratio=2.0)
    with pytest.raises(ConfigurationError):
        DetectorConfig(cusum_h=-1.0)
    with pytest.raises(ConfigurationError):
        DetectorConfig(cusum_drift=3.0)  # not below the clip
    with pytest.raises(ConfigurationError):
        DetectorConfig(cusum_memory_s=0.0)
    with pytest.raises(ConfigurationError):
        CrampDetector(0.0)
    with pytest.raises(SignalError):
        CrampDetector(1000.0, 100.0).process(np.zeros(10), np.zeros((1, 2)))
    assert dataclasses.is_dataclass(DetectorConfig)


def _muap_pairs(x: np.ndarray, fs: float, start: float, stop: float, every: float) -> None:
    """Add pairs of biphasic spikes 20 ms apart (fasciculation-like) from ``start`` to ``stop``."""
    spike = 300.0 * np.sin(2 * np.pi * 150.0 * np.arange(13) / fs)
    for t in np.arange(start, stop, every):
        for dt in (0.0, 0.02):
            i = int((t + dt) * fs)
            x[i : i + spike.size] += spike


def test_prelude_spikes_bridged_into_the_cramp_do_not_set_its_onset() -> None:
    fs = 2000.0
    x = _emg(fs, 40.0, [(12.0, 32.0, 80.0)], seed=21)
    _muap_pairs(x, fs, 10.0, 11.9, 0.25)  # pauses of ~0.18 s: one candidate, restarted
    events = detect_array(x, fs)
    assert _types(events)[-3:] == ["spasm_onset", "cramp_confirmed", "cramp_end"]
    onset, conf, end = (_one(events, k) for k in ("spasm_onset", "cramp_confirmed", "cramp_end"))
    assert onset.t_s < 10.2  # the candidate opened on the spikes ...
    assert abs(conf.t_s - 12.0) <= 0.03  # ... the cramp's onset is its sustained start
    assert conf.details["spasm_onset_s"] == onset.t_s
    assert conf.emitted_at_s == pytest.approx(conf.t_s + 12.0, abs=0.01)
    assert end.details["prelude_s"] == pytest.approx(conf.t_s - onset.t_s)
    assert end.details["duration_s"] == pytest.approx(20.0, abs=0.15)


def _twitches_then_cramp() -> np.ndarray:
    fs = 2000.0
    x = _emg(fs, 40.0, [(20.0, 35.0, 80.0)], seed=23)
    _muap_pairs(x, fs, 15.5, 19.0, 1.0)  # 4 twitches 1 s apart, each its own candidate
    return x


def test_short_cleared_candidates_before_an_onset_are_its_prelude() -> None:
    x = _twitches_then_cramp()
    events = detect_array(x, 2000.0)
    cleared = [e for e in events if e.type == "spasm_cleared"]
    assert [round(e.t_s) for e in cleared] == [16, 17, 18, 19]  # every twitch cleared
    assert all(float(e.details["duration_s"]) < 0.5 for e in cleared)  # type: ignore[arg-type]
    conf = _one(events, "cramp_confirmed")
    preludes = [e for e in events if e.type == "prelude"]
    (prelude,) = [e for e in preludes if e.episode == conf.episode]
    assert prelude.details["n_spikes"] == 4  # the four twitches
    assert abs(conf.t_s - 20.0) <= 0.03
    end = _one(events, "cramp_end")
    assert end.details["prelude_s"] == pytest.approx(conf.t_s - 15.5, abs=0.02)
    # the fourth twitch already had a prelude starting at the first: each prelude event
    # starts at a spike no earlier one started at (InfluxDB keys events by time)
    assert [e.episode for e in preludes] == [4, conf.episode]
    assert [round(e.t_s, 1) for e in preludes] == [15.5, 16.5]
    # without the rule, the twitches' candidates hide them: no prelude for the cramp
    off = detect_array(x, 2000.0, config=DetectorConfig(prelude_spike_max_s=0.0))
    assert not [e for e in off if e.type == "prelude" and e.episode == conf.episode]
    assert _one(off, "cramp_end").details["prelude_s"] is None


def test_a_longer_burst_among_the_twitches_neither_counts_nor_resets_the_prelude() -> None:
    fs = 2000.0
    x = _emg(fs, 40.0, [(17.2, 18.0, 60.0), (20.0, 35.0, 80.0)], seed=24)
    _muap_pairs(x, fs, 15.5, 17.0, 1.0)  # twitches at 15.5 and 16.5
    _muap_pairs(x, fs, 18.7, 18.8, 1.0)  # and at 18.7, after a 0.8-s burst
    events = detect_array(x, fs)
    cleared = [float(e.details["duration_s"]) for e in events if e.type == "spasm_cleared"]  # type: ignore[arg-type]
    assert len(cleared) == 4 and sorted(cleared)[-1] == pytest.approx(0.8, abs=0.1)
    conf = _one(events, "cramp_confirmed")
    (prelude,) = [e for e in events if e.type == "prelude" and e.episode == conf.episode]
    assert prelude.details["n_spikes"] == 3
    assert _one(events, "cramp_end").details["prelude_s"] == pytest.approx(
        conf.t_s - 15.5, abs=0.02
    )


@pytest.mark.parametrize("chunk", [1, 37, 1999, 7919])
def test_prelude_from_cleared_candidates_is_chunk_invariant(chunk: int) -> None:
    x = _twitches_then_cramp()
    whole = [e.to_json() for e in detect_array(x, 2000.0)]
    det = CrampDetector(2000.0)
    parts = [e.to_json() for k in range(0, x.size, chunk) for e in det.process(x[k : k + chunk])]
    assert parts + [e.to_json() for e in det.finish()] == whole
    assert "prelude" in [e["type"] for e in whole]


def test_bursts_with_short_pauses_never_add_up_to_a_cramp() -> None:
    # 1.5-s bursts 0.22 s apart for 25 s: one candidate (pauses < clear_relax_s) that
    # keeps restarting (pauses >= restart_pause_s), so it is never confirmed
    bursts = [(t, t + 1.5, 100.0) for t in np.arange(5.0, 30.0, 1.72)]
    events = detect_array(_emg(2000.0, 40.0, bursts, seed=22), 2000.0)
    assert _types(events) == ["spasm_onset", "spasm_cleared"]


def test_lead_off_flat_line_does_not_drag_the_noise_floor_down() -> None:
    fs = 2000.0
    x = _emg(fs, 120.0, [], seed=23) + 30.0  # 30-uV electrode offset
    x[int(30 * fs) : int(90 * fs)] = 0.0  # the band sends zeros while the lead is off
    det = CrampDetector(fs)
    events = det.process(x) + det.finish()
    summaries = det.drain_summaries()
    assert "spasm_onset" not in _types(events)
    quality = [e.details["quality"] for e in events if e.type == "signal_quality"]
    assert quality == ["lead_off", "ok"]
    assert summaries[-1].noise_floor_uv == pytest.approx(summaries[25].noise_floor_uv, rel=0.2)


def test_all_mains_harmonics_notched_even_if_weak_when_found() -> None:
    fs = 2000.0
    t = np.arange(int(40 * fs)) / fs
    hum = 20.0 * np.sin(2 * np.pi * 50.0 * t)
    hum[int(15 * fs) :] += 400.0 * np.sin(2 * np.pi * 100.0 * t[int(15 * fs) :])  # appliance on
    det = CrampDetector(fs)
    events = det.process(_emg(fs, 40.0, [], seed=24) + hum) + det.finish()
    assert det.mains_notches_hz == (50.0, 100.0, 150.0)
    assert "cramp_confirmed" not in _types(events)


class _GeneralPathOnly(CrampDetector):
    """The detector without its shortcuts: every segment takes the general path."""

    def _decide(  # noqa: PLR0917
        self,
        g0: int,
        i0: int,
        e: np.ndarray,
        env: np.ndarray,
        hi: float,
        lo: float,
        fl: np.ndarray | None,
        events: list[DetectorEvent],
    ) -> None:
        self._general(g0, i0, e, env, lo, fl, events)


def _with_acc(fs: float, acc_fs: float, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = round(seconds * acc_fs)
    acc = np.tile([0.0, 0.0, 1.0], (n, 1)) + rng.normal(scale=0.002, size=(n, 3))
    acc[round(20 * acc_fs) : round(22 * acc_fs)] += rng.normal(
        scale=0.2, size=(round(2 * acc_fs), 3)
    )
    acc[round(30 * acc_fs) :] = [0.0, 1.0, 0.0]  # rolled onto the side
    return LONG, acc


@pytest.mark.parametrize("chunk", [37, 2000, 90000])
def test_shortcuts_take_the_same_decisions_as_the_general_path(chunk: int) -> None:
    emg, acc = _with_acc(2000.0, 100.0, 45.0, 25)
    runs = []
    for cls in (CrampDetector, _GeneralPathOnly):
        det = cls(2000.0, 100.0)
        out = []
        for k in range(0, emg.size, chunk):
            out += [
                e.to_json()
                for e in det.process(emg[k : k + chunk], acc[k // 20 : (k + chunk) // 20])
            ]
        out += [e.to_json() for e in det.finish()]
        runs.append((out, [s.to_json() for s in det.drain_summaries()]))
    assert runs[0] == runs[1]
    assert "cramp_end" in [e["type"] for e in runs[0][0]]


def _stream_acc(
    emg: np.ndarray, acc: np.ndarray, sizes: list[int]
) -> tuple[list[object], list[object]]:
    det = CrampDetector(2000.0, 100.0)
    events: list[object] = []
    summaries: list[object] = []
    a = 0
    for part_start, part in zip(np.cumsum([0, *sizes]), _split(emg, sizes), strict=True):
        b = -(-(int(part_start) + part.size) * 100 // 2000)  # SignalChunk contract: ceil
        events += [e.to_json() for e in det.process(part, acc[a:b])]
        summaries += [s.to_json() for s in det.drain_summaries()]
        a = b
    events += [e.to_json() for e in det.finish()]
    return events, summaries


ACC_EMG, ACC = _with_acc(2000.0, 100.0, 45.0, 26)
ACC_REF = _stream_acc(ACC_EMG, ACC, [])


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30000), min_size=1, max_size=40))
def test_accelerometer_figures_identical_with_random_chunk_sizes(sizes: list[int]) -> None:
    assert _stream_acc(ACC_EMG, ACC, sizes) == ACC_REF
    acts = [s["acc_activity_g"] for s in ACC_REF[1]]  # type: ignore[index]
    assert acts[5] == pytest.approx(np.sqrt(ACC[500:600].var(axis=0).sum()), rel=1e-6)
    assert max(acts) > 0.1  # the 2-s movement at 20 s
    tilts = [s["tilt_deg"] for s in ACC_REF[1]]  # type: ignore[index]
    mean = ACC[500:600].mean(axis=0)  # the 6th second: up along +z, i.e. away from -z
    assert tilts[5] == pytest.approx(np.degrees(np.arccos(-mean[2] / np.linalg.norm(mean))))
    assert tilts[5] > 179.0
    assert tilts[40] == pytest.approx(90.0)  # rolled onto the side at 30 s


def test_tilt_is_the_angle_to_minus_z_and_null_in_gaps_or_without_accelerometer() -> None:
    fs, acc_fs = 1000.0, 100.0
    x = _emg(fs, 6.0, [])
    angles = np.radians([0.0, 30.0, 90.0, 150.0, 180.0, 45.0])
    acc = np.zeros((600, 3))
    for k, a in enumerate(angles):  # each second turned by a about the y axis from -z
        acc[100 * k : 100 * (k + 1)] = [np.sin(a), 0.0, -np.cos(a)]
    acc[520:530] = np.nan  # an accelerometer gap in the last second
    det = CrampDetector(fs, acc_fs)
    det.process(x, acc)
    tilts = [s.to_json()["tilt_deg"] for s in det.drain_summaries()]
    assert tilts[:5] == pytest.approx([0.0, 30.0, 90.0, 150.0, 180.0], abs=1e-9)
    assert tilts[5] is None
    bare = CrampDetector(fs)
    bare.process(x)
    assert {s.tilt_deg for s in bare.drain_summaries()} == {None}


def test_heart_beats_after_a_cramp_do_not_keep_it_open() -> None:
    fs = 2000.0
    x = _emg(fs, 50.0, [(5.0, 25.0, 80.0)], seed=27)
    rng = np.random.default_rng(27)
    for beat in np.arange(25.5, 50.0, 0.9):  # a QRS-like 60-ms burst every 0.9 s
        i = int(beat * fs)
        x[i : i + 120] += rng.normal(scale=8.0, size=120)
    events = detect_array(x, fs)
    assert _types(events) == ["spasm_onset", "cramp_confirmed", "cramp_end"]
    assert abs(_one(events, "cramp_end").t_s - 25.0) <= 0.2
    strict = detect_array(x, fs, config=DetectorConfig(end_quiet_fraction=1.0))
    assert _one(strict, "cramp_end").t_s > 40.0  # a strict 2-s quiet run never came


@pytest.mark.parametrize(
    ("rms_uv", "moving", "confirmed"),
    [(40.0, True, False), (40.0, False, True), (200.0, True, True)],
)
def test_moving_limb_needs_clear_emg_to_confirm(
    rms_uv: float, moving: bool, confirmed: bool
) -> None:
    # 15 s of sustained activity, 8 x / 40 x the 5-uV background
    fs, acc_fs = 1000.0, 100.0
    x = _emg(fs, 30.0, [(5.0, 20.0, rms_uv)], seed=28)
    rng = np.random.default_rng(28)
    acc = np.tile([0.0, 0.0, 1.0], (3000, 1)) + rng.normal(scale=0.002, size=(3000, 3))
    if moving:  # stretching the leg all along
        acc[500:2000] += rng.normal(scale=0.15, size=(1500, 3))
    kinds = _types(detect_array(x, fs, acc, acc_fs))
    assert kinds == (
        ["spasm_onset", "cramp_confirmed", "cramp_end"]
        if confirmed
        else ["spasm_onset", "spasm_cleared"]
    )


def test_a_spasm_cut_off_by_a_long_gap_is_not_confirmed_inside_the_gap() -> None:
    """A link stall right after a spasm opened: what was not seen cannot confirm a cramp."""
    fs = 1000.0
    x = _emg(fs, 60.0, [(9.0, 10.5, 60.0)])
    x[10_000:40_000] = np.nan  # 30 s missing while the burst still goes on
    events = detect_array(x, fs)
    assert _types(events) == ["spasm_onset", "spasm_cleared"]


@pytest.mark.parametrize("chunk", [1, 173, 5000])
def test_confirmation_needs_confirm_s_of_observed_signal(chunk: int) -> None:
    """Missing frames inside a candidate postpone its confirmation by as long as they last."""
    fs = 1000.0
    x = _emg(fs, 50.0, [(5.0, 40.0, 80.0)])
    clean = _one(detect_array(x, fs), "cramp_confirmed")
    x[8_000:11_000] = np.nan  # 3 s lost, 3 s after the onset
    det = CrampDetector(fs)
    events = [e for k in range(0, x.size, chunk) for e in det.process(x[k : k + chunk])]
    events += det.finish()
    gapped = _one(events, "cramp_confirmed")
    assert gapped.t_s == clean.t_s  # the same onset
    assert gapped.emitted_at_s == pytest.approx(clean.emitted_at_s + 3.0, abs=0.01)
    assert _types(events) == ["spasm_onset", "cramp_confirmed", "cramp_end"]


def _slow_ramp(fs: float, seed: int, rise_s: float = 0.7, rms_uv: float = 25.0) -> np.ndarray:
    """20 s of noise; from 10 s a contraction whose RMS rises linearly to ``rms_uv``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=NOISE_UV, size=round(20.0 * fs))
    a, b = round(10.0 * fs), round(16.0 * fs)
    ramp = np.minimum(np.arange(b - a) / fs / rise_s, 1.0)
    x[a:b] += rng.normal(size=b - a) * rms_uv * ramp
    return x


def test_page_cusum_is_the_recursion_with_reset() -> None:
    rng = np.random.default_rng(3)
    e = rng.chisquare(3, size=80) / 3 * np.linspace(1.0, 3.0, 80)
    drift, clip, memory = 1.4, 3.0, 200
    s, ref = 0.0, []
    for v in e:  # Page (1954): S_k = max(0, S_{k-1} + z_k)
        s = max(0.0, s + min(v, clip) - drift)
        ref.append(s)
    # memory covers all frames: frames before the first one (zero energy) never
    # raise a suffix sum, so the finite-memory statistic is the recursion's
    padded = np.concatenate([np.zeros(memory - 1), e])
    got = page_cusum(
        padded, np.arange(memory - 1, padded.size), memory, noise_power=1.0, drift=drift, clip=clip
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=2, max_value=80))
def test_page_cusum_bound_is_never_below_the_statistic(seed: int, memory: int) -> None:
    rng = np.random.default_rng(seed)
    e = rng.chisquare(10, size=300) / 10 * rng.uniform(0.5, 4.0)  # noise, then maybe more
    e[150:] *= rng.uniform(1.0, 3.0)
    kw = {"noise_power": 1.0, "drift": 1.4, "clip": 3.0}
    exact = page_cusum(e, np.arange(memory - 1, e.size), memory, **kw)
    assert page_cusum_bound(e, memory, **kw) >= exact.max() - 1e-9
    # and it is tight where all increments in the window are positive
    assert page_cusum_bound(np.full(memory, 5.0), memory, **kw) == pytest.approx(1.6 * memory)


@pytest.mark.parametrize("seed", range(6))
def test_cusum_announces_a_slow_weak_ramp_earlier_at_the_same_onset(seed: int) -> None:
    x = _slow_ramp(2000.0, seed)
    plain = _one(detect_array(x, 2000.0, config=DetectorConfig(cusum_h=0.0)), "spasm_onset")
    onset = _one(detect_array(x, 2000.0), "spasm_onset")
    assert onset.emitted_at_s <= plain.emitted_at_s - 0.01
    assert 9.95 <= onset.t_s <= 10.2
    assert onset.emitted_at_s - 10.0 <= 0.3


@pytest.mark.parametrize("beat_uv", [15.0, 25.0, 40.0])
def test_cusum_opens_nothing_more_on_noise_with_heart_beat_spikes(beat_uv: float) -> None:
    rng = np.random.default_rng(8)
    fs = 2000.0
    x = rng.normal(scale=NOISE_UV, size=round(120.0 * fs))
    qrs = np.hanning(round(0.08 * fs)) * beat_uv  # 80-ms complexes, 0.9 s apart
    for t in np.arange(0.3, 118.0, 0.9):
        i = round(t * fs)
        x[i : i + qrs.size] += qrs * np.sin(np.arange(qrs.size) * 2 * np.pi * 30 / fs)
    plain = detect_array(x, fs, config=DetectorConfig(cusum_h=0.0))
    assert detect_array(x, fs) == plain


@pytest.mark.parametrize("rate", [250.0, 1000.0, 2000.0])
def test_cusum_opens_nothing_on_white_noise(rate: float) -> None:
    noise = np.random.default_rng(9).normal(scale=NOISE_UV, size=round(300.0 * rate))
    assert "spasm_onset" not in _types(detect_array(noise, rate))


RAMP = _slow_ramp(2000.0, 0)
RAMP_REF = _stream(RAMP, 2000.0, [])


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=60))
def test_cusum_onset_identical_with_random_chunk_sizes(sizes: list[int]) -> None:
    assert _stream(RAMP, 2000.0, sizes) == RAMP_REF
