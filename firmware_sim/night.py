"""A synthetic night of one calf band (surface EMG + accelerometer) with ground truth.

Pure NumPy/SciPy, no I/O.  :class:`SyntheticNight` scripts the whole night from the
seed when it is created (which episodes happen when, with which parameters) and
fills in the samples only while :meth:`SyntheticNight.chunks` is iterated, in
fixed 10-s blocks: memory stays bounded and the samples do not depend on the
chunk size.  The model, its parameters and the physiology behind them are
described in docs/simulator.md.

Example::

    night = SyntheticNight(NightConfig(hours=8.0, seed=1, profile="typical"))
    night.truth.onsets_s          # cramp onsets (s from the first sample)
    for chunk in night.chunks(10.0):
        chunk.emg_uv, chunk.acc_g  # µV in 0.5-µV steps, g in 1-mg steps
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import fft as spfft
from scipy import signal as spsignal

from sensor_gateway.errors import SimulationError
from sensor_gateway.recordings import EMG_PHYS_RANGE, SignalChunk
from sensor_gateway.truth import GroundTruth, TruthEvent

FloatArray = NDArray[np.float64]

__all__ = [
    "ACC_LSB_G",
    "BLOCK_S",
    "DEFAULT_START",
    "EMG_LSB_UV",
    "PROFILES",
    "NightConfig",
    "SyntheticNight",
]

#: Night profiles (docs/simulator.md, "Profiles").
PROFILES = ("typical", "plm_heavy", "artefact_heavy", "low_snr", "quiet")
#: Samples are generated in blocks of this many seconds (the unit of chunk independence).
BLOCK_S = 10
#: EMG quantisation step (µV), as the band's int16 at 0.5 µV/LSB.
EMG_LSB_UV = 0.5
#: Accelerometer quantisation step (g), as the band's int16 at 1 mg/LSB.
ACC_LSB_G = 0.001
#: Wall-clock time of the first sample when :attr:`NightConfig.start` is ``None``.
DEFAULT_START = datetime(2025, 1, 1, 23, 0, 0)
MAX_HOURS = 24.0
EMG_RATES = (1000, 2000)
ACC_RATE_RANGE = (20, 1000)

_EMG_LO, _EMG_HI = EMG_PHYS_RANGE
_GRID_HZ = 4  # rate of the slow curves (drift, gains, breathing, heart rate)
_START_MARGIN_S = 20.0  # no episode in the first 20 s (a detector learns its floor)
_END_MARGIN_S = 5.0
_CRAMP_GUARD_S = 20.0  # quiet time around a cramp cluster (prelude + cramp + stretch)
_EVENT_GUARD_S = 3.0  # quiet time between any two other episodes
_CRAMP_S = (15.0, 180.0)
_ACC_NOISE_G = 0.002
_POSTURES = {"supine": 0.0, "left": 90.0, "prone": 180.0, "right": -90.0}
# Skarpsno et al. 2017: 54 % of time in bed on the side, 37.5 % supine, 7.3 % prone.
_POSTURE_P = {"supine": 0.375, "left": 0.27, "prone": 0.085, "right": 0.27}

# RNG streams: every random number comes from SeedSequence(seed, spawn_key=(stream, ...)).
_S_SCHEDULE, _S_CURVES, _S_NOISE, _S_ACC, _S_EVENT = range(5)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass(frozen=True)
class _Profile:
    """Rates (per hour) and amplitude ranges of one night profile."""

    baseline_uv: tuple[float, float]  # RMS of the 20-450 Hz resting noise
    cramp_snr_db: tuple[float, float]  # cramp plateau RMS over the resting noise RMS
    cramps_per_h: float
    min_cramps: int
    max_cramps: int | None
    muscle_gain: float  # scales every non-cramp muscle signal (tissue / contact)
    posture_per_h: float
    voluntary_per_h: float
    plm_series_per_h: float
    plm_per_series: tuple[int, int]
    pops_per_h: float
    lead_off_per_h: float
    mains_burst_per_h: float
    saturation_per_h: float
    mains_uv: tuple[float, float]  # amplitude of the mains fundamental
    ecg_uv: tuple[float, float]  # R-wave amplitude of the ECG pickup


_TYPICAL = _Profile(
    baseline_uv=(2.0, 4.0),
    cramp_snr_db=(36.0, 52.0),
    cramps_per_h=0.3,
    min_cramps=1,
    max_cramps=None,
    muscle_gain=1.0,
    posture_per_h=2.0,
    voluntary_per_h=3.0,
    plm_series_per_h=0.25,
    plm_per_series=(4, 15),
    pops_per_h=0.8,
    lead_off_per_h=0.1,
    mains_burst_per_h=0.2,
    saturation_per_h=0.15,
    mains_uv=(3.0, 20.0),
    ecg_uv=(8.0, 25.0),
)
_PARAMS: dict[str, _Profile] = {
    "typical": _TYPICAL,
    "plm_heavy": replace(_TYPICAL, plm_series_per_h=1.2, plm_per_series=(10, 40)),
    "artefact_heavy": replace(
        _TYPICAL,
        posture_per_h=3.0,
        voluntary_per_h=4.0,
        pops_per_h=8.0,
        lead_off_per_h=1.0,
        mains_burst_per_h=2.0,
        saturation_per_h=2.0,
        mains_uv=(5.0, 40.0),
    ),
    "low_snr": replace(
        _TYPICAL,
        baseline_uv=(7.0, 12.0),
        cramp_snr_db=(14.0, 22.0),
        muscle_gain=0.3,
        mains_uv=(10.0, 40.0),
        ecg_uv=(15.0, 40.0),
    ),
    "quiet": replace(
        _TYPICAL,
        baseline_uv=(1.5, 3.0),
        cramps_per_h=0.1,
        min_cramps=0,
        max_cramps=1,
        posture_per_h=1.0,
        voluntary_per_h=1.0,
        plm_series_per_h=0.0,
        pops_per_h=0.2,
        lead_off_per_h=0.0,
        mains_burst_per_h=0.0,
        saturation_per_h=0.0,
    ),
}


@dataclass(frozen=True)
class NightConfig:
    """What night to simulate.

    Parameters
    ----------
    hours
        Length of the night, ``0 < hours <= 24``.
    seed
        Non-negative integer; the same seed (and settings) gives the same night.
    emg_fs
        EMG rate, 1000 or 2000 Hz.
    acc_fs
        Accelerometer rate, a whole number of Hz in 20..1000, at most ``emg_fs``.
    mains_hz
        Mains frequency, 50 or 60 Hz; ``None`` lets the seed choose.
    profile
        One of :data:`PROFILES`.
    start
        Wall-clock time of the first sample (``None``: :data:`DEFAULT_START`).

    Raises
    ------
    SimulationError
        If a value is out of range; the message names the field.
    """

    hours: float = 8.0
    seed: int = 0
    emg_fs: int = 2000
    acc_fs: int = 100
    mains_hz: int | None = 50
    profile: str = "typical"
    start: datetime | None = None

    def __post_init__(self) -> None:
        h = self.hours
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 < h <= MAX_HOURS:
            raise SimulationError(f"hours must be a number in (0, {MAX_HOURS:g}], got {h!r}")
        s = self.seed
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise SimulationError(f"seed must be a non-negative integer, got {s!r}")
        if isinstance(self.emg_fs, bool) or self.emg_fs not in EMG_RATES:
            raise SimulationError(f"emg_fs must be 1000 or 2000 Hz, got {self.emg_fs!r}")
        a = self.acc_fs
        lo, hi = ACC_RATE_RANGE
        if (
            isinstance(a, bool)
            or not isinstance(a, int | float)
            or not math.isfinite(a)
            or a != int(a)
            or not lo <= a <= min(hi, self.emg_fs)
        ):
            raise SimulationError(
                f"acc_fs must be a whole number of Hz in {lo}..{hi}, at most emg_fs, got {a!r}"
            )
        if self.mains_hz is not None and (
            isinstance(self.mains_hz, bool) or self.mains_hz not in (50, 60)
        ):
            raise SimulationError(f"mains_hz must be 50, 60 or None, got {self.mains_hz!r}")
        if self.profile not in PROFILES:
            raise SimulationError(
                f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}"
            )
        if self.start is not None and not isinstance(self.start, datetime):
            raise SimulationError(f"start must be a datetime or None, got {self.start!r}")


# --------------------------------------------------------------------------- waveforms


def _semg_psd(f: FloatArray, f_h: float) -> FloatArray:
    """Surface-EMG power spectrum shape (Shwedyk et al. 1977), ``f_l = 0.3 f_h``."""
    f_l = 0.3 * f_h
    f2 = f * f
    out: FloatArray = f2 * f_h**4 / ((f2 + f_l**2) * (f2 + f_h**2) ** 2)
    return out


def _median_frequency(psd: FloatArray, f: FloatArray) -> float:
    cum = np.cumsum(psd)
    return float(f[int(np.searchsorted(cum, cum[-1] / 2.0))])


_F_GRID = np.arange(0.0, 1000.0, 0.25)
#: median frequency / f_h of :func:`_semg_psd` (scale invariant up to the Nyquist cut-off).
_SEMG_KAPPA = _median_frequency(_semg_psd(_F_GRID, 100.0), _F_GRID) / 100.0


def _coloured(
    rng: np.random.Generator, n: int, fs: float, psd: Callable[[FloatArray], FloatArray]
) -> FloatArray:
    """``n`` samples of unit-RMS Gaussian noise whose power spectrum has the shape ``psd``."""
    if n == 0:
        return np.zeros(0)
    nfft = spfft.next_fast_len(n, real=True)
    spec = spfft.rfft(rng.standard_normal(nfft))
    spec *= np.sqrt(psd(spfft.rfftfreq(nfft, 1.0 / fs)))
    x: FloatArray = spfft.irfft(spec, nfft)[:n]
    rms = float(np.sqrt(np.mean(x * x)))
    return x / rms if rms > 0 else x


def _lowpass_psd(fc: float, order: int) -> Callable[[FloatArray], FloatArray]:
    def psd(f: FloatArray) -> FloatArray:
        out: FloatArray = 1.0 / (1.0 + (f / fc) ** (2 * order))
        return out

    return psd


def _motion_psd(fc: float) -> Callable[[FloatArray], FloatArray]:
    """Limb motion: 0.3 Hz high-pass (no gravity offset) to ``fc`` low-pass."""

    def psd(f: FloatArray) -> FloatArray:
        hp = (f / 0.3) ** 2
        out: FloatArray = hp / (1.0 + hp) / (1.0 + (f / fc) ** 4)
        return out

    return psd


def _ramps(n: int, fs: float, rise_s: float, fall_s: float) -> FloatArray:
    """1 inside, raised-cosine ramps of ``rise_s`` / ``fall_s`` at the ends (0 = abrupt)."""
    env = np.ones(n)
    r = min(n, round(rise_s * fs))
    d = min(n, round(fall_s * fs))
    if r:
        env[:r] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
    if d:
        env[n - d :] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(d) + 1) / d)
    return env


def _cramp_envelope(t: FloatArray, p: dict[str, Any]) -> FloatArray:
    """Relative RMS of a cramp at times ``t`` (s from onset): ramps × waxing/waning."""
    dur, rise, decay = p["dur"], p["rise"], p["decay"]
    wave = np.zeros_like(t)
    for w, f, ph in zip(p["mod_w"], p["mod_f"], p["mod_ph"], strict=True):
        wave += w * np.sin(2.0 * np.pi * f * t + ph)
    env: FloatArray = 1.0 + p["depth"] * wave
    up = t < rise
    env[up] *= 0.5 - 0.5 * np.cos(np.pi * t[up] / rise)
    down = t > dur - decay
    env[down] *= 0.5 + 0.5 * np.cos(np.pi * np.minimum(t[down] - (dur - decay), decay) / decay)
    return env


def _muap(t: FloatArray, lam: float) -> FloatArray:
    """Biphasic motor-unit action potential, first-order Hermite-Rodriguez (peak 1)."""
    u = t / lam
    out: FloatArray = u * np.exp(-(u * u)) * math.sqrt(2.0 * math.e)
    return out


def _ecg_template(fs: int) -> tuple[FloatArray, int]:
    """One P-QRS-T complex (R peak 1) and the sample index of the R peak in it."""
    lead = round(0.25 * fs)
    t = (np.arange(round(0.70 * fs)) - lead) / fs
    waves = (  # (amplitude, centre s, width s)
        (0.10, -0.16, 0.025),
        (-0.15, -0.025, 0.008),
        (1.00, 0.0, 0.009),
        (-0.30, 0.028, 0.010),
        (0.25, 0.25, 0.045),
    )
    x = np.zeros_like(t)
    for a, c, w in waves:
        x += a * np.exp(-0.5 * ((t - c) / w) ** 2)
    return x, lead


# --------------------------------------------------------------------------- schedule


@dataclass
class _Episode:
    """One scripted episode: its sample span, drawn parameters and truth attributes."""

    kind: str
    s0: int
    s1: int
    p: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, float | str] = field(default_factory=dict)


@dataclass
class _Rendered:
    """An episode's samples: additive EMG over ``[s0, s1)``, additive ACC rows from ``a0``,
    or a constant that replaces the EMG (lead-off)."""

    a0: int
    emg: FloatArray | None = None
    acc: FloatArray | None = None
    hold: float | None = None


class _Timeline:
    """Occupied spans in seconds, each with its guard time, for non-overlapping placement."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.spans: list[tuple[float, float, float]] = []

    def place(self, rng: np.random.Generator, length: float, guard: float) -> float | None:
        """A random free start for a span of ``length`` s (reserved), or ``None``."""
        if length > self.hi - self.lo:
            return None
        for _ in range(100):
            a = float(rng.uniform(self.lo, self.hi - length))
            b = a + length
            if all(b + max(guard, g) <= a2 or a - max(guard, g) >= b2 for a2, b2, g in self.spans):
                self.spans.append((a, b, guard))
                return a
        return None


#: What a distractor's draw returns: duration (s), renderer parameters, truth attributes.
_Draw = tuple[float, dict[str, Any], dict[str, float | str]]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class _Scheduler:
    """Draws every episode of the night from the schedule RNG stream."""

    def __init__(self, night: SyntheticNight, rng: np.random.Generator) -> None:
        self.n = night
        self.rng = rng
        self.fs = night.emg_fs
        self.prof = night._prof
        self.timeline = _Timeline(_START_MARGIN_S, night.duration_s - _END_MARGIN_S)
        self.episodes: list[_Episode] = []

    def _count(self, per_h: float) -> int:
        return int(self.rng.poisson(per_h * self.n.config.hours))

    def _add(self, kind: str, start: float, length: float, **p: Any) -> _Episode:
        ep = _Episode(kind, round(start * self.fs), round((start + length) * self.fs), p)
        self.episodes.append(ep)
        return ep

    def run(self) -> list[_Episode]:
        prof = self.prof
        n_cramps = max(prof.min_cramps, self._count(prof.cramps_per_h))
        if prof.max_cramps is not None:
            n_cramps = min(n_cramps, prof.max_cramps)
        for _ in range(n_cramps):
            self._cramp()
        for _ in range(self._count(prof.plm_series_per_h)):
            self._plm_series()
        simple: list[tuple[str, float, Callable[[], _Draw]]] = [
            ("lead_off", prof.lead_off_per_h, self._lead_off),
            ("mains_burst", prof.mains_burst_per_h, self._mains_burst),
            ("posture_change", prof.posture_per_h, self._posture),
            ("voluntary", prof.voluntary_per_h, self._voluntary),
            ("saturation", prof.saturation_per_h, self._saturation),
            ("electrode_pop", prof.pops_per_h, self._pop),
        ]
        for kind, per_h, draw in simple:
            for _ in range(self._count(per_h)):
                dur, p, attrs = draw()
                start = self.timeline.place(self.rng, dur, _EVENT_GUARD_S)
                if start is not None:
                    self._add(kind, start, dur, **p).attrs = attrs
        self.episodes.sort(key=lambda e: (e.s0, e.kind))
        return self.episodes

    # ----------------------------------------------------------- cramps

    def _cramp(self) -> None:
        rng, prof, base = self.rng, self.prof, self.n.baseline_rms_uv
        dur = _log_uniform(rng, *_CRAMP_S)
        prelude_s = float(rng.uniform(3.0, 30.0)) if rng.random() < 0.5 else 0.0
        stretch = rng.random() < 0.8
        gap, stretch_s = float(rng.uniform(2.5, 6.0)), float(rng.uniform(5.0, 15.0))
        # a short night keeps room for its guards (and for other episodes) around the cramp
        room = self.timeline.hi - self.timeline.lo - 2.0 * _CRAMP_GUARD_S

        def total() -> float:
            return prelude_s + dur + (gap + stretch_s if stretch else 0.0)

        if total() > room:
            dur = max(_CRAMP_S[0], dur - (total() - room))
        if total() > room:
            stretch = False
        if total() > room:
            prelude_s = 0.0
        start = self.timeline.place(rng, total(), _CRAMP_GUARD_S)
        if start is None:
            return
        onset = start + prelude_s
        snr_db = float(rng.uniform(*prof.cramp_snr_db))
        n_mod = 3
        weights = rng.uniform(0.5, 1.0, n_mod)
        p: dict[str, Any] = {
            "dur": dur,
            "rms": min(2500.0, base * 10.0 ** (snr_db / 20.0)),
            "rise": float(rng.uniform(0.1, 0.8)),
            "decay": float(rng.uniform(1.0, min(5.0, dur / 4.0))),
            "depth": float(rng.uniform(0.15, 0.35)),
            "mod_w": weights / weights.sum(),
            "mod_f": rng.uniform(0.03, 0.4, n_mod),
            "mod_ph": rng.uniform(0.0, 2.0 * np.pi, n_mod),
            "mdf0": float(rng.uniform(70.0, 130.0)),
        }
        p["mdf1"] = p["mdf0"] * float(rng.uniform(0.75, 0.95))
        env = _cramp_envelope(np.arange(0.0, dur, 0.01), p)
        ep = self._add("cramp", onset, dur, **p)
        has_prelude = prelude_s > 0
        if has_prelude:
            self._prelude(onset, prelude_s)
        ep.attrs = {
            "peak_rms_uv": round(p["rms"] * float(env.max()), 1),
            "mean_rms_uv": round(p["rms"] * float(np.sqrt(np.mean(env * env))), 1),
            "snr_db": round(20.0 * math.log10(p["rms"] / base), 1),
            "median_frequency_start_hz": round(self._mdf(p["mdf0"]), 1),
            "median_frequency_end_hz": round(self._mdf(p["mdf1"]), 1),
            "rise_s": round(p["rise"], 3),
            "prelude": "yes" if has_prelude else "no",
            "stretch": "yes" if stretch else "no",
        }
        if stretch:
            self._stretch(onset + dur + gap, stretch_s)

    def _mdf(self, target_hz: float) -> float:
        """Median frequency the cramp EMG really has (the spectrum is cut at Nyquist)."""
        f = _F_GRID[: int(np.searchsorted(_F_GRID, self.fs / 2, side="right"))]
        return _median_frequency(_semg_psd(f, target_hz / _SEMG_KAPPA), f)

    def _prelude(self, onset: float, length: float) -> None:
        """Fasciculations before a cramp: a Poisson train whose rate climbs 0.3 → 3 /s."""
        rng = self.rng
        r_max = 3.0
        cand = np.sort(rng.uniform(0.0, length, rng.poisson(r_max * length)))
        rate = 0.3 + (r_max - 0.3) * (cand / length) ** 2
        keep = cand[rng.random(cand.size) < rate / r_max]
        times = [0.01]  # the prelude starts with its first fasciculation
        for t in keep:  # refractory 80 ms: keep the spikes isolated
            if t - times[-1] >= 0.08:
                times.append(float(t))
        times = [t for t in times if length - t >= 0.05]
        first = onset - length
        amp = np.exp(rng.uniform(math.log(30.0), math.log(200.0), len(times)))
        amp *= self.prof.muscle_gain
        sign = rng.choice((-1.0, 1.0), len(times))
        ep = self._add(
            "fasciculation_prelude",
            first,
            onset - first,
            spikes=np.asarray(times),
            amp=amp * sign,
            lam=rng.uniform(0.0015, 0.0035, len(times)),
        )
        ep.attrs = {"n_spikes": float(len(times)), "max_spike_uv": round(float(amp.max()), 1)}

    def _stretch(self, start: float, length: float) -> None:
        rng, gain = self.rng, self.prof.muscle_gain
        bursts: list[tuple[float, float, float]] = []
        t = float(rng.uniform(1.0, 2.0))
        for _ in range(int(rng.integers(1, 5))):
            d = float(rng.uniform(0.3, 1.5))
            if t + d > length - 0.5:
                break
            bursts.append((t, d, float(rng.uniform(20.0, 150.0)) * gain))
            t += d + float(rng.uniform(0.8, 2.0))
        ep = self._add(
            "stretch",
            start,
            length,
            bursts=bursts,
            artefact_uv=float(rng.uniform(50.0, 300.0)),
            acc_g=float(rng.uniform(0.08, 0.3)),
            pitch=float(rng.uniform(35.0, 80.0)),
            up=float(rng.uniform(1.0, 2.0)),
            down=float(rng.uniform(1.0, 2.0)),
            new_posture=rng.random() < 0.5,
        )
        ep.attrs = {"n_bursts": float(len(bursts)), "acc_rms_g": round(ep.p["acc_g"], 3)}

    # ----------------------------------------------------------- distractors

    def _plm_series(self) -> None:
        rng = self.rng
        lo, hi = self.prof.plm_per_series
        n = int(rng.integers(lo, hi + 1))
        durs = np.clip(rng.lognormal(math.log(2.0), 0.5, n), 0.5, 10.0)
        imis = np.clip(rng.lognormal(math.log(25.0), 0.4, n - 1), 5.0, 90.0)
        imis = np.clip(np.maximum(imis, durs[:-1] + 2.0), 5.0, 90.0)
        offsets = np.concatenate(([0.0], np.cumsum(imis)))
        start = self.timeline.place(rng, float(offsets[-1] + durs[-1]), _EVENT_GUARD_S)
        if start is None:
            return
        series = float(sum(e.kind == "plm" and e.p["index"] == 0 for e in self.episodes))
        for i, (off, d) in enumerate(zip(offsets, durs, strict=True)):
            rms = float(rng.uniform(15.0, 120.0)) * self.prof.muscle_gain
            ep = self._add(
                "plm",
                start + float(off),
                float(d),
                index=i,
                rms=rms,
                rise=float(rng.uniform(0.1, 0.3)),
                fall=float(rng.uniform(0.2, 0.5)),
                mdf=float(rng.uniform(80.0, 140.0)),
                acc_g=float(rng.uniform(0.005, 0.03)),
            )
            ep.attrs = {
                "series": series,
                "index_in_series": float(i),
                "series_length": float(n),
                "rms_uv": round(rms, 1),
            }

    def _movement(
        self, rms: tuple[float, float], art: tuple[float, float], acc: tuple[float, float]
    ) -> tuple[dict[str, Any], dict[str, float | str]]:
        """Parameters of a movement burst: muscle RMS, motion artefact, limb acceleration."""
        rng = self.rng
        p = {
            "rms": float(rng.uniform(*rms)) * self.prof.muscle_gain,
            "artefact_uv": float(rng.uniform(*art)),
            "mdf": float(rng.uniform(80.0, 130.0)),
            "acc_g": float(rng.uniform(*acc)),
        }
        attrs: dict[str, float | str] = {
            "rms_uv": round(p["rms"], 1),
            "artefact_uv": round(p["artefact_uv"], 1),
            "acc_rms_g": round(p["acc_g"], 3),
        }
        return p, attrs

    def _posture(self) -> _Draw:
        p, attrs = self._movement((40.0, 250.0), (100.0, 600.0), (0.05, 0.3))
        return float(self.rng.uniform(1.0, 3.0)), p, attrs

    def _voluntary(self) -> _Draw:
        p, attrs = self._movement((50.0, 400.0), (20.0, 150.0), (0.03, 0.15))
        return float(self.rng.uniform(0.5, 3.0)), p, attrs

    def _lead_off(self) -> _Draw:
        rng = self.rng
        flat = rng.random() < 0.6
        hold = 0.0 if flat else (_EMG_HI if rng.random() < 0.5 else _EMG_LO)
        mode = "flat" if flat else ("rail_high" if hold > 0 else "rail_low")
        return _log_uniform(rng, 5.0, 300.0), {"hold": hold}, {"mode": mode}

    def _mains_burst(self) -> _Draw:
        rng = self.rng
        amp = _log_uniform(rng, 150.0, 1500.0)
        return _log_uniform(rng, 10.0, 180.0), {"amp": amp}, {"amplitude_uv": round(amp, 1)}

    def _saturation(self) -> _Draw:
        rng = self.rng
        amp = float(rng.uniform(10000.0, 40000.0))
        p = {"amp": amp, "acc_g": float(rng.uniform(0.3, 1.0))}
        return float(rng.uniform(0.5, 4.0)), p, {"overload_rms_uv": round(amp, 0)}

    def _pop(self) -> _Draw:
        rng = self.rng
        n = int(rng.integers(1, 5))
        at = np.sort(np.concatenate(([0.0], rng.uniform(0.0, 3.0, n - 1))))
        steps = np.array([_log_uniform(rng, 500.0, 8000.0) for _ in range(n)])
        steps *= rng.choice((-1.0, 1.0), n)
        tau = rng.uniform(0.05, 0.5, n)
        attrs: dict[str, float | str] = {
            "n_pops": float(n),
            "max_step_uv": round(float(np.abs(steps).max()), 1),
        }
        p = {"at": at, "steps": steps, "tau": tau}
        return float(np.max(at + 7.0 * tau)), p, attrs


def _orientation_knots(
    episodes: list[_Episode], rng: np.random.Generator, duration_s: float, fs: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Knots (t, roll, pitch in radians) of the leg's orientation through the night.

    Posture changes turn the leg about its long axis to a new lying posture along a
    minimum-jerk path; a stretch lifts it (pitch) and lays it down again.  Also
    fills in the ``from``/``to`` attributes of posture changes.
    """
    names = list(_POSTURES)

    def pick(exclude: str | None) -> str:
        probs = np.array([0.0 if n == exclude else _POSTURE_P[n] for n in names])
        return names[int(rng.choice(len(names), p=probs / probs.sum()))]

    def lie(name: str, roll_now: float) -> tuple[float, float]:
        target = _POSTURES[name] + float(rng.uniform(-15.0, 15.0))
        delta = (target - roll_now + 180.0) % 360.0 - 180.0
        return roll_now + delta, float(rng.uniform(-5.0, 15.0))

    tau = np.linspace(0.0, 1.0, 17)
    mj = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    posture = pick(None)
    roll, pitch = lie(posture, 0.0)
    kt, kr, kp = [0.0], [roll], [pitch]

    def move(t0: float, t1: float, r1: float, p1: float) -> None:
        r0, p0 = kr[-1], kp[-1]
        kt.extend((t0 + (t1 - t0) * tau).tolist())
        kr.extend((r0 + (r1 - r0) * mj).tolist())
        kp.extend((p0 + (p1 - p0) * mj).tolist())

    for ep in episodes:
        t0, t1 = ep.s0 / fs, ep.s1 / fs
        if ep.kind == "posture_change":
            new = pick(posture)
            r1, p1 = lie(new, kr[-1])
            ep.attrs.update({"from": posture, "to": new, "roll_change_deg": round(r1 - kr[-1], 1)})
            move(t0, t1, r1, p1)
            posture = new
        elif ep.kind == "stretch":
            p = ep.p
            up_r = kr[-1] + float(rng.uniform(-30.0, 30.0))
            move(t0, t0 + p["up"], up_r, p["pitch"])
            new = pick(posture) if p["new_posture"] else posture
            r1, p1 = lie(new, kr[-1])
            move(t1 - p["down"], t1, r1, p1)
            ep.attrs["pitch_deg"] = round(p["pitch"], 1)
            ep.attrs["posture_after"] = new
            posture = new
    kt.append(max(duration_s, kt[-1]) + 1.0)
    kr.append(kr[-1])
    kp.append(kp[-1])
    return np.asarray(kt), np.radians(kr), np.radians(kp)


# --------------------------------------------------------------------------- the night


class SyntheticNight:
    """One scripted night: ground truth at once, samples on demand.

    Parameters
    ----------
    config
        What to simulate.

    Attributes
    ----------
    config
        The settings it was made from.
    truth
        The ground truth (cramp onsets/ends and every scripted episode).
    emg_fs, acc_fs
        Sample rates (Hz).
    mains_hz
        The mains frequency actually used (chosen from the seed if the config says ``None``).
    n_samples
        EMG samples in the night, ``round(hours * 3600 * emg_fs)``.
    n_acc
        Accelerometer rows in the night, ``ceil(n_samples * acc_fs / emg_fs)``.
    duration_s
        ``n_samples / emg_fs``.
    start
        Wall-clock time of the first sample.
    baseline_rms_uv
        RMS of the resting 20-450 Hz noise (before its slow ±15 % wander).
    """

    def __init__(self, config: NightConfig) -> None:
        self.config = config
        self._prof = _PARAMS[config.profile]
        self.emg_fs = int(config.emg_fs)
        self.acc_fs = int(config.acc_fs)
        self.n_samples = max(1, round(config.hours * 3600.0 * self.emg_fs))
        self.n_acc = -((-self.n_samples * self.acc_fs) // self.emg_fs)
        self.duration_s = self.n_samples / self.emg_fs
        self.start = config.start if config.start is not None else DEFAULT_START
        seed = int(config.seed)
        self._seed = seed
        sched = _rng(seed, _S_SCHEDULE)
        curves = _rng(seed, _S_CURVES)
        drawn_mains = int(sched.choice((50, 60)))  # drawn always: the schedule stays the same
        self.mains_hz = config.mains_hz or drawn_mains
        self.baseline_rms_uv = float(curves.uniform(*self._prof.baseline_uv))
        self._init_curves(curves)
        self._episodes = _Scheduler(self, sched).run()
        self._knots = _orientation_knots(self._episodes, sched, self.duration_s, self.emg_fs)
        self.truth = self._make_truth()

    # ----------------------------------------------------------- set-up

    def _init_curves(self, rng: np.random.Generator) -> None:
        """Night-level constants and the slow curves on a 4-Hz grid."""
        fs, prof = self.emg_fs, self._prof
        self._grid_step = fs // _GRID_HZ
        n_grid = -(-self.n_samples // self._grid_step) + 2
        t = np.arange(n_grid) / _GRID_HZ
        self._grid_t = t

        def wander(every_s: float) -> FloatArray:
            """Smooth zero-mean unit-SD random curve with knots every ``every_s``."""
            k = np.arange(int(t[-1] // every_s) + 2) * every_s
            return np.interp(t, k, rng.standard_normal(k.size))

        drift_uv = float(rng.uniform(10.0, 40.0))
        drift = drift_uv * (0.4 * wander(2.0) + 0.9 * wander(20.0))
        gain = np.exp(0.15 * wander(600.0))
        mains_uv = float(rng.uniform(*prof.mains_uv))
        mains = mains_uv * np.exp(0.4 * wander(120.0))
        self._slow = np.stack((gain, mains, drift))
        self._frac = np.arange(self._grid_step) / self._grid_step
        self._meta_extra: dict[str, float] = {
            "baseline_rms_uv": round(self.baseline_rms_uv, 3),
            "drift_uv": round(drift_uv, 2),
            "mains_uv": round(mains_uv, 2),
        }

        # Baseline: white noise through a 20-450 Hz Butterworth band-pass, unit RMS.
        self._sos = spsignal.butter(2, [20.0, 450.0], btype="bandpass", fs=fs, output="sos")
        impulse = np.zeros(fs)
        impulse[0] = 1.0
        h = spsignal.sosfilt(self._sos, impulse)
        self._base_scale = self.baseline_rms_uv / float(np.sqrt(np.sum(h * h)))

        # Mains: fundamental + 2nd + 3rd harmonic, one period of P samples, tiled per block.
        period = fs // math.gcd(fs, self.mains_hz)
        amps = (1.0, float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.2, 0.6)))
        phases = rng.uniform(0.0, 2.0 * np.pi, 3)
        harmonic = np.arange(1, 4)[:, None]
        arg = 2.0 * np.pi * harmonic * self.mains_hz * np.arange(period) / fs + phases[:, None]
        self._mains_period = period
        self._mains_template = np.asarray(amps) @ np.sin(arg)
        self._mains_block = np.tile(self._mains_template, BLOCK_S * fs // period)

        # Breathing (12-16 /min, slowly varying) and heart beats (HR with LF and RSA).
        breath_hz = float(rng.uniform(12.0, 16.0)) / 60.0 * np.exp(0.08 * wander(60.0))
        self._breath_phase = np.cumsum(breath_hz) / _GRID_HZ
        hr0, rsa = float(rng.uniform(52.0, 68.0)), float(rng.uniform(2.0, 5.0))
        hr_bpm = hr0 + 2.0 * wander(20.0) + rsa * np.sin(2.0 * np.pi * self._breath_phase)
        beat_phase = np.cumsum(hr_bpm / 60.0) / _GRID_HZ
        beat_t = np.interp(np.arange(1.0, float(beat_phase[-1])), beat_phase, t)
        ecg_uv = float(rng.uniform(*prof.ecg_uv)) * float(rng.choice((-1.0, 1.0)))
        breath_at_beat = np.interp(beat_t, t, self._breath_phase)
        self._beat_amp = ecg_uv * (1.0 + 0.08 * np.sin(2.0 * np.pi * breath_at_beat))
        self._ecg, lead = _ecg_template(fs)
        self._beat_first = np.round(beat_t * fs).astype(np.int64) - lead
        self._meta_extra.update(ecg_uv=round(abs(ecg_uv), 2), heart_rate_bpm=round(hr0, 1))

        # Accelerometer: breathing micro-motion (~0.3-1 mg) along a random direction.
        d = rng.standard_normal(3)
        self._breath_acc = d / np.linalg.norm(d) * float(rng.uniform(0.0003, 0.001))

    def _make_truth(self) -> GroundTruth:
        fs = self.emg_fs
        events = tuple(
            TruthEvent(e.kind, e.s0 / fs, e.s1 / fs, dict(e.attrs)) for e in self._episodes
        )
        cramps = [e for e in events if e.kind == "cramp"]
        cfg = self.config
        meta: dict[str, Any] = {
            "simulator": "firmware_sim.night",
            "seed": int(cfg.seed),
            "profile": cfg.profile,
            "hours": float(cfg.hours),
            "mains_hz": self.mains_hz,
            "emg_fs": self.emg_fs,
            "acc_fs": self.acc_fs,
            "start": self.start.isoformat(),
            "duration_s": self.duration_s,
            **self._meta_extra,
        }
        return GroundTruth(
            label_kind="cramp",
            onsets_s=tuple(e.start_s for e in cramps),
            offsets_s=tuple(e.end_s for e in cramps),
            events=events,
            meta=meta,
        )

    # ----------------------------------------------------------- samples

    def chunks(self, seconds: float) -> Iterator[SignalChunk]:
        """Stream the night from its start, ``seconds`` of EMG per chunk.

        Parameters
        ----------
        seconds
            Chunk length; every chunk but the last holds ``round(seconds * emg_fs)``
            EMG samples (at least one).  Concatenated chunks are identical for any
            chunk length.

        Returns
        -------
        Iterator[SignalChunk]
            EMG in µV (multiples of 0.5 µV within −16384…16383.5), accelerometer
            rows in g (multiples of 0.001 g) following the :class:`SignalChunk`
            contract.

        Raises
        ------
        SimulationError
            If ``seconds`` is not a positive finite number.
        """
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not (math.isfinite(seconds) and seconds > 0)
        ):
            raise SimulationError(f"chunk length must be a positive number of seconds: {seconds!r}")
        return self._chunks(max(1, round(seconds * self.emg_fs)))

    def _chunks(self, step: int) -> Iterator[SignalChunk]:
        blocks = self._blocks()
        e_parts: list[FloatArray] = []
        a_parts: list[FloatArray] = []
        e_pos = a_pos = e_have = 0  # global index of e_parts[0][0] / a_parts[0][0]
        for s0 in range(0, self.n_samples, step):
            s1 = min(s0 + step, self.n_samples)
            k0 = -((-s0 * self.acc_fs) // self.emg_fs)
            k1 = -((-s1 * self.acc_fs) // self.emg_fs)
            while e_have < s1:
                e, a = next(blocks)
                e_parts.append(e)
                a_parts.append(a)
                e_have += e.size
            emg = e_parts[0] if len(e_parts) == 1 else np.concatenate(e_parts)
            acc = a_parts[0] if len(a_parts) == 1 else np.concatenate(a_parts)
            yield SignalChunk(
                s0, emg[s0 - e_pos : s1 - e_pos].copy(), acc[k0 - a_pos : k1 - a_pos].copy()
            )
            e_parts, a_parts = [emg[s1 - e_pos :]], [acc[k1 - a_pos :]]
            e_pos, a_pos = s1, k1

    def _upsample(self, first: int, n: int) -> FloatArray:
        """The slow curves (gain, mains amplitude, drift) linearly interpolated to samples
        ``first .. first + n - 1`` (``first`` is a multiple of the grid step)."""
        g = self._grid_step
        i0, m = first // g, -(-n // g)
        v0 = self._slow[:, i0 : i0 + m]
        dv = self._slow[:, i0 + 1 : i0 + m + 1] - v0
        out: FloatArray = v0[:, :, None] + dv[:, :, None] * self._frac
        return out.reshape(3, m * g)[:, :n]

    def _add_ecg(self, emg: FloatArray, b0: int) -> None:
        b1 = b0 + emg.size
        width = self._ecg.size
        lo = int(np.searchsorted(self._beat_first, b0 - width, side="right"))
        hi = int(np.searchsorted(self._beat_first, b1, side="left"))
        for first, amp in zip(self._beat_first[lo:hi], self._beat_amp[lo:hi], strict=True):
            a, b = max(int(first), b0), min(int(first) + width, b1)
            emg[a - b0 : b - b0] += amp * self._ecg[a - first : b - first]

    def _acc_block(self, k: int, c0: int, m: int) -> FloatArray:
        t = (c0 + np.arange(m)) / self.acc_fs
        kt, kr, kp = self._knots
        roll, pitch = np.interp(t, kt, kr), np.interp(t, kt, kp)
        cp = np.cos(pitch)
        acc = np.stack((np.sin(pitch), -cp * np.sin(roll), -cp * np.cos(roll)), axis=1)
        breath = np.sin(2.0 * np.pi * np.interp(t, self._grid_t, self._breath_phase))
        acc += breath[:, None] * self._breath_acc
        acc += _rng(self._seed, _S_ACC, k).standard_normal((m, 3)) * _ACC_NOISE_G
        return acc

    def _blocks(self) -> Iterator[tuple[FloatArray, FloatArray]]:
        """Quantised ``(emg, acc)`` per 10-s block, in order, filter state carried."""
        fs, afs = self.emg_fs, self.acc_fs
        n_block, m_block = BLOCK_S * fs, BLOCK_S * afs
        zi = np.zeros((self._sos.shape[0], 2))
        episodes = self._episodes
        cache: dict[int, _Rendered] = {}
        nxt = 0
        for k in range(-(-self.n_samples // n_block)):
            b0 = k * n_block
            b1 = min(b0 + n_block, self.n_samples)
            n = b1 - b0
            c0 = k * m_block
            c1 = min(c0 + m_block, self.n_acc)
            white = _rng(self._seed, _S_NOISE, k).standard_normal(n)
            emg, zi = spsignal.sosfilt(self._sos, white, zi=zi)
            gain, mains, drift = self._upsample(b0, n)
            emg *= gain * self._base_scale
            emg += drift
            emg += self._mains_block[:n] * mains
            self._add_ecg(emg, b0)
            acc = self._acc_block(k, c0, c1 - c0)
            while nxt < len(episodes) and episodes[nxt].s0 < b1:
                cache[nxt] = self._render(nxt)
                nxt += 1
            holds: list[tuple[int, int, float]] = []
            for i, r in cache.items():
                ep = episodes[i]
                lo, hi = max(ep.s0, b0), min(ep.s1, b1)
                if r.emg is not None:
                    emg[lo - b0 : hi - b0] += r.emg[lo - ep.s0 : hi - ep.s0]
                if r.acc is not None:
                    alo, ahi = max(r.a0, c0), min(r.a0 + r.acc.shape[0], c1)
                    if ahi > alo:
                        acc[alo - c0 : ahi - c0] += r.acc[alo - r.a0 : ahi - r.a0]
                if r.hold is not None:
                    holds.append((lo - b0, hi - b0, r.hold))
            for i in [i for i in cache if episodes[i].s1 <= b1]:
                del cache[i]
            emg *= 2.0
            np.rint(emg, out=emg)
            emg *= EMG_LSB_UV
            np.clip(emg, _EMG_LO, _EMG_HI, out=emg)
            for lo, hi, value in holds:
                emg[lo:hi] = value
            acc = np.rint(acc / ACC_LSB_G) / 1000.0
            yield emg, acc

    # ----------------------------------------------------------- episodes

    def _render(self, i: int) -> _Rendered:
        """The samples of episode ``i`` (its own RNG stream, independent of the blocks)."""
        ep = self._episodes[i]
        rng = _rng(self._seed, _S_EVENT, i)
        fs, afs = self.emg_fs, self.acc_fs
        n = ep.s1 - ep.s0
        a0 = -((-ep.s0 * afs) // fs)
        m = -((-ep.s1 * afs) // fs) - a0
        p = ep.p
        out = _Rendered(a0=a0)
        if ep.kind == "cramp":
            out.emg = self._cramp_emg(rng, n, p)
        elif ep.kind == "fasciculation_prelude":
            out.emg = self._spikes(n, p)
        elif ep.kind == "stretch":
            emg = self._artefact(rng, n, p["artefact_uv"])
            for t, d, rms in p["bursts"]:
                s = round(t * fs)
                burst = self._burst(rng, round(d * fs), rms, 100.0, rise=0.1, fall=0.2)
                emg[s : s + burst.size] += burst[: n - s]
            out.emg = emg
            out.acc = self._motion(rng, m, p["acc_g"], 3.0)
        elif ep.kind == "plm":
            out.emg = self._burst(rng, n, p["rms"], p["mdf"], rise=p["rise"], fall=p["fall"])
            out.acc = self._motion(rng, m, p["acc_g"], 4.0)
        elif ep.kind in ("voluntary", "posture_change"):
            emg = self._burst(rng, n, p["rms"], p["mdf"], rise=0.15, fall=0.25)
            emg += self._artefact(rng, n, p["artefact_uv"])
            out.emg = emg
            out.acc = self._motion(rng, m, p["acc_g"], 4.0)
        elif ep.kind == "electrode_pop":
            out.emg = self._pops(n, p)
        elif ep.kind == "lead_off":
            out.hold = p["hold"]
        elif ep.kind == "mains_burst":
            idx = (ep.s0 + np.arange(n)) % self._mains_period
            out.emg = self._mains_template[idx] * p["amp"] * _ramps(n, fs, 0.3, 0.3)
        elif ep.kind == "saturation":
            lf = _coloured(rng, n, fs, _lowpass_psd(2.0, 2))
            out.emg = lf * p["amp"] * _ramps(n, fs, 0.05, 0.2)
            out.acc = self._motion(rng, m, p["acc_g"], 8.0)
        return out

    def _cramp_emg(self, rng: np.random.Generator, n: int, p: dict[str, Any]) -> FloatArray:
        """sEMG noise whose median frequency falls from ``mdf0`` to ``mdf1`` (fatigue)."""
        fs = self.emg_fs
        f0, f1 = p["mdf0"] / _SEMG_KAPPA, p["mdf1"] / _SEMG_KAPPA
        a = _coloured(rng, n, fs, lambda f: _semg_psd(f, f0))
        b = _coloured(rng, n, fs, lambda f: _semg_psd(f, f1))
        w = np.arange(n) / max(n - 1, 1)
        x = np.sqrt(1.0 - w) * a + np.sqrt(w) * b
        x *= p["rms"] * _cramp_envelope(np.arange(n) / fs, p)
        return x

    def _burst(
        self, rng: np.random.Generator, n: int, rms: float, mdf: float, *, rise: float, fall: float
    ) -> FloatArray:
        """A short contraction: sEMG noise of ``rms`` µV with raised-cosine ramps."""
        fs = self.emg_fs
        f_h = mdf / _SEMG_KAPPA
        x = _coloured(rng, n, fs, lambda f: _semg_psd(f, f_h))
        return x * rms * _ramps(n, fs, min(rise, n / fs / 3), min(fall, n / fs / 3))

    def _artefact(self, rng: np.random.Generator, n: int, amp_uv: float) -> FloatArray:
        """Electrode motion artefact: mostly below 10 Hz (De Luca et al. 2010)."""
        fs = self.emg_fs
        x = _coloured(rng, n, fs, _lowpass_psd(4.0, 3))
        return x * amp_uv * _ramps(n, fs, 0.2, 0.3)

    def _motion(self, rng: np.random.Generator, m: int, rms_g: float, fc: float) -> FloatArray:
        """Dynamic acceleration of the moving limb, ``(m, 3)`` g, tapered at both ends."""
        afs = self.acc_fs
        env = _ramps(m, afs, 0.2, 0.3) * rms_g
        return np.stack([_coloured(rng, m, afs, _motion_psd(fc)) * env for _ in range(3)], 1)

    def _spikes(self, n: int, p: dict[str, Any]) -> FloatArray:
        fs = self.emg_fs
        x = np.zeros(n)
        for t, amp, lam in zip(p["spikes"], p["amp"], p["lam"], strict=True):
            c = round(float(t) * fs)
            half = round(5.0 * lam * fs)
            lo, hi = max(0, c - half), min(n, c + half + 1)
            x[lo:hi] += amp * _muap((np.arange(lo, hi) - c) / fs, float(lam))
        return x

    def _pops(self, n: int, p: dict[str, Any]) -> FloatArray:
        """Steps that decay back (electrode-skin potential re-settling), tapered at the end."""
        fs = self.emg_fs
        t = np.arange(n) / fs
        x = np.zeros(n)
        for at, step, tau in zip(p["at"], p["steps"], p["tau"], strict=True):
            s = round(float(at) * fs)
            e = min(n, s + round(7.0 * float(tau) * fs))
            seg = step * np.exp(-(t[s:e] - t[s]) / tau)
            seg *= _ramps(e - s, fs, 0.0, float(tau))  # abrupt step, smooth return
            x[s:e] += seg
        return x
