"""Streaming night-time calf-cramp detector on surface EMG (+ optional accelerometer).

Pipeline (details and parameters: docs/detector.md, :class:`DetectorConfig`):

1. conditioning, per sample, vectorised: gap hold, causal Butterworth band-pass
   (20-450 Hz, clamped below Nyquist), 50/60 Hz notch comb once mains is found
   (:mod:`cramp_signal.filters`);
2. 5-ms frames: energy, peak, quality flags (gap, saturation, electrode pop, flat);
3. envelope: 50-ms moving RMS; noise floor from idle, good seconds only
   (fast fall, slow rise), so it does not climb during long contractions;
4. double threshold (Bonato et al. 1998): envelope above ``on_ratio`` x floor in
   80 % of the last 60 ms opens a candidate; the onset is refined backwards with a
   likelihood-ratio change point (Staude et al. 2001); hysteresis ``off_ratio`` and
   relaxation times close it;
5. episode state machine: ``spasm_onset`` -> ``cramp_confirmed`` (>= 12 s sustained)
   -> ``cramp_end``; or ``spasm_onset`` -> ``spasm_cleared``.

The frame and block logic loops over *events and 1-s blocks*, never over samples,
and every decision is taken at a fixed frame index, so events do not depend on
how the stream is cut into chunks.

References
----------
.. [1] G. Bonato, T. D'Alessio, M. Knaflitz, IEEE Trans. Biomed. Eng. 45 (1998) 287-299.
.. [2] G. Staude et al., EURASIP J. Appl. Signal Process. 2001(2) 67-81.
.. [3] A. Solnik et al., Eur. J. Appl. Physiol. 110 (2010) 489-498.
.. [4] X. Li, P. Zhou, A. S. Aruin, Ann. Biomed. Eng. 35 (2007) 1532-1538.
.. [5] R. E. Allen, K. A. Kirby, "Nocturnal leg cramps", Am. Fam. Physician 86
   (2012) 350-355.
.. [6] AASM scoring manual v2.6 (2020), periodic limb movements: 0.5-10 s.
"""

from __future__ import annotations

import math
from collections import deque
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from cramp_signal.config import DetectorConfig
from cramp_signal.errors import SignalError
from cramp_signal.events import (
    CRAMP_CONFIRMED,
    CRAMP_END,
    PRELUDE,
    SIGNAL_QUALITY,
    SPASM_CLEARED,
    SPASM_ONSET,
    DetailValue,
    DetectorEvent,
    EnvelopeSummary,
)
from cramp_signal.features import (
    MovingCount,
    MovingMean,
    median_frequency,
    run_lengths,
    since_last,
    variance_change_point,
)
from cramp_signal.filters import MainsDetector, SosStream, bandpass_sos, fill_gaps, notch_sos

__all__ = [
    "CrampDetector",
    "DetectorConfig",
    "DetectorEvent",
    "EnvelopeSummary",
    "detect_array",
]

FloatArray = NDArray[np.float64]

IDLE, SPASM, CRAMP = "idle", "spasm", "cramp"

#: The default parameters (shared, immutable).
DEFAULT_CONFIG = DetectorConfig()


class CrampDetector:
    """Causal, stateful cramp detector; feed it chunks with :meth:`process`.

    Parameters
    ----------
    emg_fs
        EMG sampling rate in Hz (2000, 1000, 250, ...).
    acc_fs
        Accelerometer rate in Hz, or ``None`` without accelerometer.
    config
        Detector parameters.

    Raises
    ------
    ConfigurationError
        If a rate is not positive or the filters do not fit the rate.
    """

    def __init__(
        self, emg_fs: float, acc_fs: float | None = None, config: DetectorConfig = DEFAULT_CONFIG
    ) -> None:
        from cramp_signal.errors import ConfigurationError  # noqa: PLC0415

        if not (emg_fs > 0 and math.isfinite(emg_fs)):
            raise ConfigurationError(f"emg_fs must be a positive number, got {emg_fs!r}")
        if acc_fs is not None and not (acc_fs > 0 and math.isfinite(acc_fs)):
            raise ConfigurationError(f"acc_fs must be a positive number, got {acc_fs!r}")
        c = config
        self.config = c
        self.emg_fs = float(emg_fs)
        self.acc_fs = None if acc_fs is None else float(acc_fs)
        self._F = max(1, int(self.emg_fs * c.frame_s))  # samples per frame
        self._dt = self._F / self.emg_fs  # frame duration
        self._fpb = max(1, round(1.0 / self._dt))  # frames per ~1-s block
        self._bs = self._fpb * self._F  # samples per block
        self._bp = SosStream(bandpass_sos(emg_fs, c.band_low_hz, c.band_high_hz, c.band_order,
                                          c.band_max_fraction))  # fmt: skip
        self._notch: SosStream | None = None
        self._mains: MainsDetector | None = None
        if c.mains_detect:
            self._mains = MainsDetector(self.emg_fs, self._bs, c.mains_candidates_hz,
                                        c.mains_harmonics, c.mains_line_ratio)  # fmt: skip
        self._mains_every = max(1, round(c.mains_check_s / (self._fpb * self._dt)))
        self.mains_hz: float | None = None
        self.mains_notches_hz: tuple[float, ...] = ()
        # frame-level helpers
        self._na = max(1, round(c.fast_window_s / self._dt))
        self._env = MovingMean(self._na)
        m_on = max(1, round(c.onset_hold_s / self._dt))
        self._hold = MovingCount(m_on)
        self._hold_need = max(1, math.ceil(c.onset_hold_fraction * m_on - 1e-9))
        self._clear_n = max(1, round(c.clear_relax_s / self._dt))
        self._end_n = max(1, round(c.end_relax_s / self._dt))
        self._guard_n = round(c.artefact_guard_s / self._dt)
        self._back_n = round(c.onset_backtrack_s / self._dt)
        self._look_n = max(2, round(c.onset_lookback_s / self._dt))
        self._init_frames = max(self._na, round(c.floor_init_s / self._dt))
        # sample-level carries
        self._n_samples = 0
        self._last_raw: float | None = None
        self._prev_raw: float | None = None
        self._started = False
        self._left_raw = np.zeros(0)
        self._left_y = np.zeros(0)
        self._left_yb = np.zeros(0)
        self._left_gap = np.zeros(0, dtype=bool)
        self._left_pop = np.zeros(0, dtype=bool)
        # frame-level carries
        self._n_frames = 0
        self._e_ring = np.zeros(0)
        self._since_art = 1 << 30
        self._run = 0
        self._prev_ind = False
        self._floor: float | None = None
        self._noise_peak = 0.0
        self._init_vals: list[FloatArray] = []
        # block accumulators
        self._blk_y = np.zeros(self._bs)
        self._blk_yb = np.zeros(self._bs)
        self._blk_frames = 0
        self._blk_ebuf = np.zeros(self._fpb)
        self._blk_peak = 0.0
        self._blk_gap = False
        self._blk_sat = False
        self._blk_art = False
        self._blk_idle: list[FloatArray] = []
        self._blk_idle_n = 0
        self._n_blocks = 0
        self._quality = "ok"
        self._summaries: list[EnvelopeSummary] = []
        freqs = np.fft.rfftfreq(self._bs, 1.0 / self.emg_fs)
        self._psd_freqs: FloatArray = np.asarray(freqs, dtype=np.float64)
        self._psd_band = (freqs >= c.band_low_hz) & (freqs <= min(c.band_high_hz,
                                                                  0.5 * self.emg_fs))  # fmt: skip
        self._hann = np.hanning(self._bs)
        # accelerometer
        self._acc_buf = np.zeros((0, 3))
        self._acc_base = 0
        self._acc_prev_mean: FloatArray | None = None
        self._acc_recent: deque[tuple[float, float, bool]] = deque(maxlen=16)
        # episode
        self._state = IDLE
        self._ep = 0
        self._ep_onset_t = 0.0
        self._ep_confirm_frame = 0
        self._ep_young_frame = 0
        self._ep_e: list[FloatArray] = []
        self._ep_ok = 0
        self._ep_peak = 0.0
        self._ep_blocks = 0
        self._ep_acc: list[tuple[float, bool]] = []
        self._ep_posture = 0
        self._ep_psd = np.zeros(freqs.size)
        self._ep_prelude_s: float | None = None
        self._ep_floor = 1.0
        self._last_end_frame = 0
        self._spikes: deque[float] = deque(maxlen=64)

    # ------------------------------------------------------------------ properties

    @property
    def samples_seen(self) -> int:
        """EMG samples processed so far (gaps included)."""
        return self._n_samples

    @property
    def baseline_uv(self) -> float | None:
        """Current noise floor (RMS of the resting envelope, uV); ``None`` until known."""
        return self._floor

    @property
    def state(self) -> str:
        """``"idle"``, ``"spasm"`` (unconfirmed candidate) or ``"cramp"``."""
        return self._state

    @property
    def frame_s(self) -> float:
        """Duration of one envelope frame (the onset time resolution)."""
        return self._dt

    # ------------------------------------------------------------------ public API

    def process(
        self, emg_uv: NDArray[np.float64], acc_g: NDArray[np.float64] | None = None
    ) -> list[DetectorEvent]:
        """Consume the next EMG samples (and accelerometer rows); return new events.

        Parameters
        ----------
        emg_uv
            Next EMG samples in uV, any length (0 and 1 included); NaN marks a
            missing sample (the timeline stays true).
        acc_g
            Accelerometer rows ``(n, 3)`` in g that follow the SignalChunk timing
            contract (sample ``k`` at ``k / acc_fs``); ignored without ``acc_fs``.

        Returns
        -------
        list of DetectorEvent
            Events decided while processing these samples, in stream order.
        """
        x = np.asarray(emg_uv, dtype=np.float64).reshape(-1)
        if acc_g is not None and self.acc_fs is not None:
            a = np.asarray(acc_g, dtype=np.float64)
            if a.size:
                if a.ndim != 2 or a.shape[1] != 3:
                    raise SignalError(f"acc_g must have shape (n, 3), got {a.shape}")
                self._acc_buf = np.concatenate([self._acc_buf, a]) if self._acc_buf.size else a
        events: list[DetectorEvent] = []
        while x.size:
            n = x.size
            if self._mains is not None and self.mains_hz is None:
                # stop at the next mains check so the notch starts at a fixed sample
                blocks_to_check = self._mains_every - (self._n_blocks % self._mains_every)
                done = self._n_samples - (self._n_blocks * self._bs)
                n = min(n, blocks_to_check * self._bs - done)
            self._process_samples(x[:n], events)
            x = x[n:]
        return events

    def finish(self) -> list[DetectorEvent]:
        """End of stream: close an open episode (``cramp_end`` or ``spasm_cleared``)."""
        events: list[DetectorEvent] = []
        if self._state != IDLE:
            g = self._n_frames - 1
            end_frame = g - self._run + 1 if self._run > 0 else g + 1
            self._close(end_frame, g, self._n_samples / self.emg_fs, events)
        return events

    def drain_summaries(self) -> list[EnvelopeSummary]:
        """Return and forget the per-second summaries produced so far."""
        out, self._summaries = self._summaries, []
        return out

    # ------------------------------------------------------------------ sample stage

    def _process_samples(self, raw: FloatArray, events: list[DetectorEvent]) -> None:
        c = self.config
        self._n_samples += raw.size
        filled, gap, self._last_raw = fill_gaps(raw, self._last_raw)
        y = np.zeros(raw.size)
        yb = y
        start = 0
        if not self._started:
            finite = np.flatnonzero(np.isfinite(filled))
            start = int(finite[0]) if finite.size else raw.size
            self._started = start < raw.size
            gap[:start] = True
        if start < raw.size:
            body = filled[start:]
            yb_body = self._bp.process(body)
            y_body = self._notch.process(yb_body) if self._notch is not None else yb_body
            if start:
                y[start:] = y_body
                yb = y.copy()
                yb[start:] = yb_body
            else:
                y, yb = y_body, yb_body
        prev = filled[:1] if self._prev_raw is None else np.array([self._prev_raw])
        step = np.abs(np.diff(np.concatenate([prev, filled]))) > c.pop_step_uv
        self._prev_raw = float(filled[-1])
        pop = step | (np.abs(filled) >= c.saturation_uv)
        # framing with leftover carry
        fr = self._F
        if self._left_raw.size:
            filled = np.concatenate([self._left_raw, filled])
            y = np.concatenate([self._left_y, y])
            yb = np.concatenate([self._left_yb, yb])
            gap = np.concatenate([self._left_gap, gap])
            pop = np.concatenate([self._left_pop, pop])
        nf = y.size // fr
        cut = nf * fr
        self._left_raw, self._left_y, self._left_yb = filled[cut:], y[cut:], yb[cut:]
        self._left_gap, self._left_pop = gap[cut:], pop[cut:]
        if nf == 0:
            return
        ym = y[:cut].reshape(nf, fr)
        e = np.einsum("ij,ij->i", ym, ym) / fr
        peak = np.abs(ym).max(axis=1)
        gap_f = np.asarray(gap[:cut].reshape(nf, fr).any(axis=1))
        raw_abs_max = np.abs(filled[:cut]).reshape(nf, fr).max(axis=1) if fr > 1 else np.abs(
            filled[:cut])  # fmt: skip
        sat_f = np.asarray(raw_abs_max >= c.saturation_uv)
        pop_f = np.asarray(pop[:cut].reshape(nf, fr).any(axis=1))
        env = np.sqrt(self._env.process(e))
        flat_f = env < c.lead_off_rms_uv
        art_f = np.asarray(pop_f | gap_f | flat_f)
        since = since_last(art_f, self._since_art)
        self._since_art = int(since[-1])
        okon = np.asarray(since > self._guard_n)
        valid = np.logical_not(gap_f)
        self._frames(e, env, peak, valid, okon, gap_f, sat_f, pop_f, y[:cut], yb[:cut], events)

    # ------------------------------------------------------------------ frame stage

    def _frames(  # noqa: PLR0917
        self,
        e: FloatArray,
        env: FloatArray,
        peak: FloatArray,
        valid: NDArray[np.bool_],
        okon: NDArray[np.bool_],
        gap_f: NDArray[np.bool_],
        sat_f: NDArray[np.bool_],
        pop_f: NDArray[np.bool_],
        y: FloatArray,
        yb: FloatArray,
        events: list[DetectorEvent],
    ) -> None:
        nf = e.size
        g0 = self._n_frames
        e_ring_before = self._e_ring
        a = 0
        while a < nf:
            g = g0 + a
            # next boundary: block end, or the floor initialisation frame
            b_end = (g // self._fpb + 1) * self._fpb
            if self._floor is None and g < self._init_frames:
                b_end = min(b_end, self._init_frames)
            b = min(nf, b_end - g0)
            self._segment(a, b, g0, e, env, valid, okon, e_ring_before, events)
            # block accumulators
            pos = (g % self._fpb) * self._F
            k = (b - a) * self._F
            self._blk_y[pos : pos + k] = y[a * self._F : b * self._F]
            if self._mains is not None and self.mains_hz is None:
                self._blk_yb[pos : pos + k] = yb[a * self._F : b * self._F]
            self._blk_frames += b - a
            self._blk_ebuf[g % self._fpb : g % self._fpb + b - a] = e[a:b]
            self._blk_peak = max(self._blk_peak, float(peak[a:b].max()))
            self._blk_gap |= bool(gap_f[a:b].any())
            self._blk_sat |= bool(sat_f[a:b].any())
            self._blk_art |= bool(pop_f[a:b].any())
            gb = g0 + b
            if self._floor is None and gb == self._init_frames:
                self._init_floor()
            if gb % self._fpb == 0:
                self._end_block(gb, events)
            a = b
        self._n_frames = g0 + nf
        self._e_ring = np.concatenate([e_ring_before, e])[-self._look_n :]

    def _segment(  # noqa: PLR0917
        self,
        a: int,
        b: int,
        g0: int,
        e: FloatArray,
        env: FloatArray,
        valid: NDArray[np.bool_],
        okon: NDArray[np.bool_],
        e_ring_before: FloatArray,
        events: list[DetectorEvent],
    ) -> None:
        """Run the state machine over frames ``a..b-1`` (constant thresholds)."""
        env_s = env[a:b]
        val_s = valid[a:b]
        floor = self._floor
        on_thr, off_thr = self._thresholds()
        if floor is None:
            ind = np.zeros(b - a, dtype=bool)
            below = np.zeros(b - a, dtype=bool)
            self._init_vals.append(env_s[val_s])
        else:
            ind = (env_s > on_thr) & okon[a:b]
            below = (env_s < off_thr) & val_s
        hold = self._hold.process(ind)
        run = run_lengths(below, self._run)
        self._run = int(run[-1])
        prev = np.concatenate([[self._prev_ind], ind[:-1]])
        edges = ind & ~prev
        self._prev_ind = bool(ind[-1])
        n = b - a
        j = 0
        while j < n:
            if self._state == IDLE:
                if floor is None:
                    break
                hits = np.flatnonzero(hold[j:] >= self._hold_need)
                k = j + int(hits[0]) if hits.size else n
                sel = val_s[j:k]
                idle_env = env_s[j:k][sel]
                if idle_env.size:
                    self._blk_idle.append(idle_env)
                    self._blk_idle_n += idle_env.size
                spikes = np.flatnonzero(edges[j:k])
                if spikes.size:
                    self._spikes.extend(((g0 + a + j + spikes + 1) * self._dt).tolist())
                if k >= n:
                    break
                self._open(g0 + a + k, e, a + k, e_ring_before, g0, env_s[k], events)
                j = k + 1
            else:
                need = self._clear_n if self._state == SPASM else self._end_n
                ends = np.flatnonzero(run[j:] >= need)
                k_end = j + int(ends[0]) if ends.size else n
                k_conf = n
                if self._state == SPASM:
                    p0 = max(j, self._ep_confirm_frame - (g0 + a))
                    if p0 < n:
                        ok = np.flatnonzero(~below[p0:k_end])
                        k_conf = p0 + int(ok[0]) if ok.size else n
                k = min(k_end, k_conf)
                stop = min(k + 1, n)
                if self._state == SPASM:
                    # young candidates still count as rest for the noise statistics
                    young = min(stop, self._ep_young_frame - (g0 + a))
                    if young > j:
                        vals = env_s[j:young][val_s[j:young]]
                        self._blk_idle.append(vals)
                        self._blk_idle_n += vals.size
                self._ep_e.append(e[a + j : a + stop])
                self._ep_ok += int(okon[a + j : a + stop].sum())
                if stop > j:
                    self._ep_peak = max(self._ep_peak, float(env_s[j:stop].max()))
                if k >= n:
                    break
                g = g0 + a + k
                if k == k_conf and k_conf < k_end:
                    self._state = CRAMP
                    events.append(
                        DetectorEvent(CRAMP_CONFIRMED, self._ep, self._ep_onset_t,
                                      (g + 1) * self._dt,
                                      MappingProxyType({"floor_uv": self._ep_floor}))
                    )  # fmt: skip
                else:
                    self._close(g - need + 1, g, (g + 1) * self._dt, events)
                j = k + 1

    # ------------------------------------------------------------------ episodes

    def _open(  # noqa: PLR0917
        self,
        g: int,
        e: FloatArray,
        k_local: int,
        e_ring_before: FloatArray,
        g0: int,
        env_now: float,
        events: list[DetectorEvent],
    ) -> None:
        """Open an episode detected at global frame ``g``; refine the onset backwards."""
        floor = self._floor
        assert floor is not None
        win = np.concatenate([e_ring_before, e[: k_local + 1]])[-self._look_n :]
        first = g - win.size + 1
        if first < self._last_end_frame:
            win = win[self._last_end_frame - first :]
            first = self._last_end_frame
        cp = variance_change_point(win, floor * floor)
        back = win[max(0, cp - self._back_n) : cp]
        quiet = np.flatnonzero(back <= floor * floor)
        cp -= back.size - (int(quiet[-1]) + 1 if quiet.size else 0)
        onset_frame = first + cp
        onset_t = onset_frame * self._dt
        now = (g + 1) * self._dt
        self._ep += 1
        self._state = SPASM
        self._ep_onset_t = onset_t
        conf = math.ceil((onset_t + self.config.confirm_s) / self._dt - 1.0 - 1e-9)
        self._ep_confirm_frame = max(conf, g + 1)
        self._ep_young_frame = math.ceil((onset_t + self.config.noise_young_s) / self._dt)
        act = win[cp:]
        self._ep_e = [act]
        self._ep_ok = act.size
        self._ep_peak = float(env_now)
        self._ep_blocks = self._ep_posture = 0
        self._ep_acc = []
        self._ep_psd = np.zeros(self._psd_freqs.size)
        self._ep_floor = floor
        pw = self.config.prelude_window_s
        spikes = [t for t in self._spikes if onset_t - pw <= t < onset_t - 0.05]
        self._ep_prelude_s = None
        if len(spikes) >= self.config.prelude_min_spikes:
            self._ep_prelude_s = onset_t - spikes[0]
            events.append(
                DetectorEvent(PRELUDE, self._ep, spikes[0], now,
                              MappingProxyType({"n_spikes": len(spikes)}))
            )  # fmt: skip
        self._spikes.clear()
        events.append(
            DetectorEvent(SPASM_ONSET, self._ep, onset_t, now,
                          MappingProxyType({"floor_uv": floor, "env_uv": float(env_now)}))
        )  # fmt: skip

    def _close(self, end_frame: int, g: int, now: float, events: list[DetectorEvent]) -> None:
        """Close the open episode; its activity ended at frame ``end_frame``."""
        c = self.config
        end_t = max(self._ep_onset_t, (end_frame + 1) * self._dt - 0.5 * self._na * self._dt)
        duration = end_t - self._ep_onset_t
        energies = np.concatenate(self._ep_e) if self._ep_e else np.zeros(0)
        n_frames = energies.size
        sum_e = math.fsum(energies.tolist())  # exact: independent of the chunking
        self._ep_e = []
        mean_rms = math.sqrt(sum_e / n_frames) if n_frames else 0.0
        details: dict[str, DetailValue] = {
            "duration_s": duration,
            "peak_rms_uv": self._ep_peak,
            "mean_rms_uv": mean_rms,
            "intensity_vs_baseline": mean_rms / self._ep_floor,
        }
        if self._state == CRAMP:
            intensity = mean_rms / self._ep_floor
            severity = 1
            if duration >= c.moderate_duration_s or intensity >= c.moderate_intensity:
                severity = 2
            if duration >= c.severe_duration_s or intensity >= c.severe_intensity:
                severity = 3
            # seconds of the contraction itself (the relaxation tail is not the cramp)
            during = [still for (t, still) in self._ep_acc if t <= end_t + 0.5] or [
                still for (_t, still) in self._ep_acc
            ]
            has_acc = self.acc_fs is not None and bool(during)
            stretch: bool | None = None
            if self.acc_fs is not None:
                after = [moved for (t, _act, moved) in self._acc_recent if t > end_t]
                stretch = any(after) if after else None
            details.update(
                median_frequency_hz=median_frequency(self._ep_psd[self._psd_band],
                                                     self._psd_freqs[self._psd_band]),
                severity=severity,
                quality_ok_fraction=self._ep_ok / n_frames if n_frames else 0.0,
                limb_still_fraction=sum(during) / len(during) if has_acc else None,
                posture_changes=self._ep_posture if has_acc else None,
                stretch_after=stretch,
                prelude_s=self._ep_prelude_s,
            )  # fmt: skip
            kind = CRAMP_END
        else:
            kind = SPASM_CLEARED
        events.append(DetectorEvent(kind, self._ep, end_t, now, MappingProxyType(details)))
        self._state = IDLE
        self._last_end_frame = g + 1

    # ------------------------------------------------------------------ blocks

    def _thresholds(self) -> tuple[float, float]:
        """Current onset and release thresholds (NaN before the floor is known)."""
        c = self.config
        if self._floor is None:
            return float("nan"), float("nan")
        return (
            max(c.on_ratio * self._floor, c.peak_on_ratio * self._noise_peak),
            max(c.off_ratio * self._floor, c.peak_off_ratio * self._noise_peak),
        )

    def _init_floor(self) -> None:
        vals = np.concatenate(self._init_vals) if self._init_vals else np.zeros(0)
        if vals.size * 2 >= self._init_frames:
            med, top = np.percentile(vals, [50.0, self.config.noise_peak_percentile])
            self._floor = max(float(med), self.config.min_floor_uv)
            self._noise_peak = max(float(top), self._floor)
            self._init_vals = []

    def _end_block(self, gb: int, events: list[DetectorEvent]) -> None:
        c = self.config
        t_end = gb * self._dt
        t_start = t_end - self._fpb * self._dt
        rms = math.sqrt(float(self._blk_ebuf[: self._blk_frames].mean()))
        if self._blk_gap:
            quality = "gap"
        elif rms < c.lead_off_rms_uv:
            quality = "lead_off"
        elif self._blk_sat:
            quality = "saturated"
        elif self._blk_art:
            quality = "artefact"
        else:
            quality = "ok"
        if self._floor is None and gb > self._init_frames:
            self._init_floor()
        floor = self._floor
        on_thr = self._thresholds()[0]
        # noise floor: idle, good seconds only; fast fall, slow rise
        if (
            floor is not None
            and quality == "ok"
            and self._blk_idle_n * 2 >= self._fpb
            and self._state == IDLE
        ):
            med, top = np.percentile(
                np.concatenate(self._blk_idle), [50.0, c.noise_peak_percentile]
            )
            m = min(float(med), c.on_ratio * floor)
            w = c.floor_fall if m < floor else c.floor_rise
            self._floor = max(floor + w * (m - floor), c.min_floor_uv)
            p = min(float(top), 2.0 * self._noise_peak)
            w = c.floor_fall if p < self._noise_peak else c.floor_rise
            self._noise_peak = max(self._noise_peak + w * (p - self._noise_peak), self._floor)
        # mains check on the pre-notch block
        self._n_blocks += 1
        if (
            self._mains is not None
            and self.mains_hz is None
            and self._n_blocks % self._mains_every == 0
        ):
            found = self._mains.analyse(self._blk_yb)
            if found is not None:
                self.mains_hz, self.mains_notches_hz = found
                self._notch = SosStream(notch_sos(self.emg_fs, found[1], c.mains_notch_q))
        # accelerometer
        acc_act: float | None = None
        if self.acc_fs is not None:
            acc_act = self._acc_block(t_end)
        if self._state != IDLE:
            spec = np.abs(np.fft.rfft(self._blk_y * self._hann)) ** 2
            self._ep_psd += spec
            self._ep_blocks += 1
            if acc_act is not None:
                self._ep_acc.append((t_end, acc_act < c.still_acc_g))
        if quality != self._quality:
            events.append(
                DetectorEvent(SIGNAL_QUALITY, 0, t_start, t_end,
                              MappingProxyType({"quality": quality, "previous": self._quality}))
            )  # fmt: skip
            self._quality = quality
        nan = float("nan")
        self._summaries.append(
            EnvelopeSummary(
                t_s=t_end,
                rms_uv=rms,
                peak_uv=self._blk_peak,
                noise_floor_uv=nan if floor is None else floor,
                on_threshold_uv=on_thr,
                quality=quality,
                acc_activity_g=acc_act,
                state=self._state,
            )
        )
        self._blk_frames = 0
        self._blk_peak = 0.0
        self._blk_gap = self._blk_sat = self._blk_art = False
        self._blk_idle = []
        self._blk_idle_n = 0

    def _acc_block(self, t_end: float) -> float | None:
        """Dynamic acceleration (g RMS, all axes) over the block ending at ``t_end``."""
        assert self.acc_fs is not None
        upto = math.ceil(t_end * self.acc_fs - 1e-9)
        take = max(0, min(upto - self._acc_base, self._acc_buf.shape[0]))
        rows = self._acc_buf[:take]
        self._acc_buf = self._acc_buf[take:]
        self._acc_base += take
        if rows.shape[0] < 2:
            return None
        act = float(np.sqrt(rows.var(axis=0).sum()))
        mean = rows.mean(axis=0)
        posture = False
        prev = self._acc_prev_mean
        if prev is not None:
            denom = float(np.linalg.norm(mean) * np.linalg.norm(prev))
            if denom > 0:
                cosang = float(np.clip(mean @ prev / denom, -1.0, 1.0))
                posture = math.degrees(math.acos(cosang)) > self.config.posture_change_deg
        self._acc_prev_mean = mean
        if posture and self._state != IDLE:
            self._ep_posture += 1
        moved = act >= self.config.still_acc_g or posture
        self._acc_recent.append((t_end, act, moved))
        return act


def detect_array(
    emg_uv: NDArray[np.float64],
    emg_fs: float,
    acc_g: NDArray[np.float64] | None = None,
    acc_fs: float | None = None,
    config: DetectorConfig = DEFAULT_CONFIG,
) -> list[DetectorEvent]:
    """Run a fresh :class:`CrampDetector` over a whole recording held in memory.

    Equivalent to streaming the same samples in chunks of any size, then
    :meth:`CrampDetector.finish`.
    """
    det = CrampDetector(emg_fs, acc_fs if acc_g is not None else None, config)
    events = det.process(emg_uv, acc_g)
    events.extend(det.finish())
    return events
