"""Conditioning filters and envelope features of :mod:`cramp_signal` on synthetic arrays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal as ss

from cramp_signal.errors import ConfigurationError
from cramp_signal.features import (
    WindowSums,
    median_and_percentile,
    median_frequency,
    run_lengths,
    variance_change_point,
    window_counts,
)
from cramp_signal.filters import MainsDetector, SosStream, bandpass_sos, fill_gaps, notch_sos


def _gain(sos: np.ndarray, f: float, fs: float) -> float:
    _, h = ss.sosfreqz(sos, worN=[f], fs=fs)
    return float(np.abs(h[0]))


def test_bandpass_passes_emg_band_and_rejects_dc_and_ecg_band() -> None:
    sos = bandpass_sos(2000.0, 20.0, 450.0, 3)
    assert _gain(sos, 150.0, 2000.0) == pytest.approx(1.0, abs=0.02)
    assert _gain(sos, 2.0, 2000.0) < 1e-3
    assert _gain(sos, 900.0, 2000.0) < 0.01


def test_bandpass_upper_edge_clamped_below_nyquist_at_250_hz() -> None:
    sos = bandpass_sos(250.0, 20.0, 450.0, 3)  # 450 Hz does not exist at 250 Hz
    assert _gain(sos, 60.0, 250.0) == pytest.approx(1.0, abs=0.05)
    # -3 dB edge at 0.9 x 125 Hz = 112.5 Hz
    assert _gain(sos, 112.5, 250.0) == pytest.approx(1 / np.sqrt(2), abs=0.02)


def test_bandpass_refuses_band_that_cannot_fit() -> None:
    with pytest.raises(ConfigurationError):
        bandpass_sos(30.0, 20.0, 450.0, 3)  # Nyquist 15 Hz < low edge


def test_stream_filter_is_chunking_invariant() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=3000) + 40.0
    sos = bandpass_sos(1000.0, 20.0, 450.0, 3)
    whole = SosStream(sos).process(x)
    stream = SosStream(sos)
    cuts = [0, 1, 2, 17, 500, 501, 2999, 3000]
    parts = [stream.process(x[a:b]) for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_stream_filter_matches_scipy_and_appended_sections_start_at_rest() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=4000)
    bp = bandpass_sos(2000.0, 20.0, 450.0, 3)
    notch = notch_sos(2000.0, (50.0, 100.0), 30.0)
    stream = SosStream(bp)
    first = stream.process(x[:1000])
    stream.append(notch)
    second = stream.process(x[1000:])
    zi = ss.sosfilt_zi(bp) * x[0]
    ref1, zf = ss.sosfilt(bp, x[:1000], zi=zi)
    zi2 = np.concatenate([zf, np.zeros((2, 2))])
    ref2, _ = ss.sosfilt(np.vstack([bp, notch]), x[1000:], zi=zi2)
    np.testing.assert_array_equal(first, ref1)
    np.testing.assert_array_equal(second, ref2)


def test_stream_filter_primed_on_first_sample_has_no_startup_transient() -> None:
    x = np.full(2000, 1500.0)  # a 1.5 mV electrode offset, no signal
    y = SosStream(bandpass_sos(2000.0, 20.0, 450.0, 3)).process(x)
    assert np.max(np.abs(y)) < 1e-6


def test_notch_comb_removes_mains_and_harmonic_keeps_other_frequencies() -> None:
    fs = 2000.0
    t = np.arange(int(fs * 4)) / fs
    sos = notch_sos(fs, (50.0, 150.0), 30.0)
    assert sos.shape == (2, 6)
    for f, expect_small in ((50.0, True), (150.0, True), (80.0, False)):
        y = SosStream(sos).process(np.sin(2 * np.pi * f * t))
        rms = np.sqrt(np.mean(y[-2000:] ** 2))
        assert (rms < 0.01) if expect_small else (rms > 0.65)


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_mains_detector_tells_50_from_60_hz(mains: float) -> None:
    fs, n = 2000.0, 2000
    rng = np.random.default_rng(2)
    t = np.arange(n) / fs
    x = rng.normal(scale=10.0, size=n) + 30.0 * np.sin(2 * np.pi * mains * t + 0.3)
    x += 8.0 * np.sin(2 * np.pi * 3 * mains * t)
    det = MainsDetector(fs, n, (50.0, 60.0), 3, 10.0)
    found = det.analyse(x)
    assert found is not None
    f0, lines = found
    assert f0 == mains
    assert mains in lines
    assert 3 * mains in lines


def test_mains_detector_silent_on_broadband_noise() -> None:
    rng = np.random.default_rng(3)
    det = MainsDetector(1000.0, 1000, (50.0, 60.0), 3, 10.0)
    assert det.analyse(rng.normal(size=1000)) is None


def test_fill_gaps_holds_last_value_and_carries_it() -> None:
    x = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan])
    filled, gap, last = fill_gaps(x, 7.0)
    np.testing.assert_array_equal(filled, [7.0, 1.0, 1.0, 1.0, 4.0, 4.0])
    np.testing.assert_array_equal(gap, [True, False, True, True, False, True])
    assert last == 4.0


def test_window_sums_do_not_depend_on_where_the_window_sits() -> None:
    rng = np.random.default_rng(4)
    v = rng.random(300) * 1e3
    ws = WindowSums(10, 8)
    whole = ws.sums(v)
    assert whole.size == 291
    assert whole[5] == pytest.approx(v[5:15].sum())
    # the same windows computed from any sub-array are bit-identical
    for a, b in ((0, 10), (3, 40), (17, 300), (250, 261)):
        np.testing.assert_array_equal(ws.sums(v[a:b]), whole[a : b - 9])
    assert ws.sums(v[:9]).size == 0


def test_window_counts_are_exact() -> None:
    b = np.random.default_rng(6).random(50) > 0.5
    counts = window_counts(b, 5)
    assert counts.size == 46
    assert all(counts[i] == b[i : i + 5].sum() for i in range(46))


def test_median_and_percentile_match_numpy() -> None:
    v = np.random.default_rng(7).random(201)
    med, p99 = median_and_percentile(v, 99.0)
    assert med == pytest.approx(np.median(v), rel=1e-12)
    assert p99 == pytest.approx(np.percentile(v, 99.0), rel=1e-12)
    assert median_and_percentile(np.array([1.0, 3.0]), 50.0) == (2.0, 2.0)


def test_run_lengths_with_carry() -> None:
    b = np.array([True, True, False, True])
    np.testing.assert_array_equal(run_lengths(b, 3), [4, 5, 0, 1])


def test_variance_change_point_finds_step_in_power() -> None:
    rng = np.random.default_rng(5)
    e = np.concatenate([rng.chisquare(10, 60) / 10, 25 * rng.chisquare(10, 20) / 10])
    assert abs(variance_change_point(e, 1.0) - 60) <= 1


def test_median_frequency_of_a_single_tone() -> None:
    freqs = np.arange(0.0, 500.0, 1.0)
    psd = np.zeros_like(freqs)
    psd[120] = 1.0
    assert median_frequency(psd, freqs) == 120.0
    assert np.isnan(median_frequency(np.zeros(3), freqs[:3]))
