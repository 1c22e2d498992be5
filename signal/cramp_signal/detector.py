"""Streaming night-time calf-cramp detector on surface EMG (+ optional accelerometer).

Pipeline (details and parameters: docs/detector.md, :class:`DetectorConfig`):

1. conditioning, per sample, vectorised: gap hold, one causal SOS cascade of a
   Butterworth band-pass (20-450 Hz, clamped below Nyquist) and, once mains is
   found, notches at 50/60 Hz and two harmonics (:mod:`cramp_signal.filters`);
2. 5-ms frames: energy and quality flags (gap, saturation, electrode pop, flat);
3. envelope: 50-ms moving RMS; noise floor and 99th percentile from idle, good
   seconds only (fast fall, slow rise), so they do not climb during contractions;
4. double threshold (Bonato et al. 1998): envelope above the onset threshold, and
   above the hold threshold in 80 % of the last 90 ms, opens a candidate; the
   onset is refined backwards (likelihood-ratio change point, Staude et al. 2001,
   then the rising edge extrapolated to rest); a 0.1-s pause restarts an
   unconfirmed candidate and re-anchors its onset;
5. episode state machine: ``spasm_onset`` -> ``cramp_confirmed`` (>= 12 s sustained;
   on a moving limb only with clear EMG) -> ``cramp_end`` (2 s mostly below the
   release threshold); or ``spasm_onset`` -> ``spasm_cleared`` (0.3 s below).

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
from cramp_signal.errors import ConfigurationError, SignalError
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
    WindowSums,
    median_and_percentile,
    median_frequency,
    page_cusum,
    page_cusum_bound,
    rising_edge_start,
    run_lengths,
    since_last,
    variance_change_point,
    window_counts,
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

#: Accelerometer summary of one block: dynamic RMS (g), posture changed, tilt (degrees).
AccBlock = tuple[float, bool, float]

#: Per-sample artefact flags: missing sample, electrode-pop step, saturation.
_GAP, _STEP, _SAT = np.uint8(1), np.uint8(2), np.uint8(4)

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

    Notes
    -----
    Samples are written into a buffer holding the current 1-s block and filtered
    there in place; complete 5-ms frames are processed as they fill.  For the
    common case (no artefact in the frames, idle with the envelope below the onset
    threshold, or active with it above the release threshold) a few array
    reductions decide everything; anything else takes the general vectorised path.
    Both paths take the same decisions at the same frame indices.
    """

    def __init__(
        self, emg_fs: float, acc_fs: float | None = None, config: DetectorConfig = DEFAULT_CONFIG
    ) -> None:
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
        self._filter = SosStream(bandpass_sos(emg_fs, c.band_low_hz, c.band_high_hz,
                                              c.band_order, c.band_max_fraction))  # fmt: skip
        self._mains: MainsDetector | None = None
        if c.mains_detect:
            self._mains = MainsDetector(self.emg_fs, self._bs, c.mains_candidates_hz,
                                        c.mains_harmonics, c.mains_line_ratio)  # fmt: skip
        self._mains_every = max(1, round(c.mains_check_s / (self._fpb * self._dt)))
        self.mains_hz: float | None = None
        self.mains_notches_hz: tuple[float, ...] = ()
        # frame-level constants
        self._na = max(1, round(c.fast_window_s / self._dt))
        self._m_on = max(1, round(c.onset_hold_s / self._dt))
        self._hold_need = max(1, math.ceil(c.onset_hold_fraction * self._m_on - 1e-9))
        self._clear_n = max(1, round(c.clear_relax_s / self._dt))
        self._pause_n = max(1, round(c.restart_pause_s / self._dt))
        self._end_n = max(1, round(c.end_relax_s / self._dt))
        self._end_need = max(1, math.ceil(c.end_quiet_fraction * self._end_n - 1e-9))
        self._guard_n = round(c.artefact_guard_s / self._dt)
        self._back_n = round(c.onset_backtrack_s / self._dt)
        self._look_n = max(2, round(c.onset_lookback_s / self._dt))
        self._init_frames = max(self._na, round(c.floor_init_s / self._dt))
        self._cus_n = max(2, round(c.cusum_memory_s / self._dt))
        self._cus_live = False  # CUSUM in use (after the first noise update)
        self._win = WindowSums(self._na, self._fpb)
        # sample level: the current block, filtered in place, and its artefact flags
        self._n_samples = 0
        self._last_raw: float | None = None
        self._started = False
        self._pos = 0  # samples of the current, incomplete block (at the buffer's front)
        self._buf = np.zeros(2 * self._bs)
        self._flags = np.zeros(self._buf.size, dtype=np.uint8)
        self._dirty = False  # some flag is set in _flags
        self._blk_flat = False
        # frame level: energy and onset-indicator history, frame g at index g + _h_off
        # frames kept: look-back, windows, the current block, the end window
        self._pad = max(self._look_n, self._na, self._m_on, self._fpb, self._end_n, self._cus_n)
        self._eh = np.zeros(self._pad + 8 * self._fpb)
        self._ih = np.zeros(self._eh.size, dtype=bool)  # above the hold threshold
        self._bh = np.zeros(self._eh.size, dtype=bool)  # below release (in episodes only)
        self._h_off = self._pad
        self._n_frames = 0
        self._prev_on = False  # last frame above the onset threshold (spike edges)
        self._since_art = 1 << 30
        self._run = 0
        self._floor: float | None = None
        self._noise_peak = 0.0
        self._n_updates = 1  # noise statistics estimated so far (the initial one included)
        self._on_thr = self._off_thr = self._hold_thr = math.nan
        self._cus_ref = math.nan  # resting power of the CUSUM
        self._flat_thr = c.lead_off_rms_uv
        self._init_vals: list[FloatArray] = []
        # block accumulators
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
        self._acc_parts: list[FloatArray] = []
        self._acc_base = 0
        self._acc_prev_mean: FloatArray | None = None
        self._acc_recent: deque[tuple[float, float, bool]] = deque(maxlen=16)
        # episode
        self._state = IDLE
        self._ep = 0
        self._ep_onset_t = 0.0
        self._ep_first_t = 0.0
        self._ep_rearm = False
        self._ep_pause_start = 0
        self._ep_confirm_frame = 0
        self._ep_young_frame = 0
        self._ep_e: list[FloatArray] = []
        self._ep_ok = 0
        self._ep_peak = 0.0
        self._ep_acc: list[tuple[float, bool]] = []
        self._ep_posture = 0
        self._ep_psd = np.zeros(freqs.size)
        self._ep_prelude_s: float | None = None
        self._ep_prelude_t: float | None = None  # first spike of the prelude event, if any
        self._ep_floor = 1.0
        self._last_end_frame = 0
        # times of isolated spikes and of short cleared candidates since the last episode
        self._spikes: deque[float] = deque(maxlen=64)
        self._last_prelude_t = -math.inf  # time of the last prelude event

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
        x = np.asarray(emg_uv, dtype=np.float64)
        if x.ndim != 1:
            x = x.reshape(-1)
        if acc_g is not None and self.acc_fs is not None:
            a = np.array(acc_g, dtype=np.float64)  # a copy: the caller may reuse its buffer
            if a.size:
                if a.ndim != 2 or a.shape[1] != 3:
                    raise SignalError(f"acc_g must have shape (n, 3), got {a.shape}")
                self._acc_parts.append(a)
        events: list[DetectorEvent] = []
        n = x.size
        i = 0
        while i < n:
            k = n - i
            if self._mains is not None and self.mains_hz is None:
                # stop at the next mains check, so a notch starts at a fixed sample
                left = self._mains_every - self._n_blocks % self._mains_every
                k = min(k, left * self._bs - self._pos)
            self._samples(x[i : i + k], events)
            i += k
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

    def _samples(self, raw: FloatArray, events: list[DetectorEvent]) -> None:
        """Condition and flag the next samples, then process the frames they complete."""
        c = self.config
        k = raw.size
        pos = self._pos
        end = pos + k
        if end > self._buf.size:
            grown = np.zeros(end + self._bs)
            grown[:pos] = self._buf[:pos]
            flags = np.zeros(grown.size, dtype=np.uint8)
            flags[:pos] = self._flags[:pos]
            self._buf, self._flags = grown, flags
        self._n_samples += k
        buf = self._buf[pos:end]
        prev = self._last_raw
        hi = float(np.maximum.reduce(raw))  # NaN (a gap) propagates, so does inf
        lo = float(np.minimum.reduce(raw))
        if self._started and math.isfinite(hi) and math.isfinite(lo):  # no gap (common case)
            buf[:] = raw
            assert prev is not None
            hi, lo = max(hi, prev), min(lo, prev)
            if hi - lo > c.pop_step_uv or hi >= c.saturation_uv or -lo >= c.saturation_uv:
                self._flag(raw, prev, pos, None)
            self._last_raw = float(raw[-1])
            self._filter.filter_inplace(buf)
        else:
            filled, gap, self._last_raw = fill_gaps(raw, prev)
            start = 0
            if not self._started:
                finite = np.flatnonzero(np.isfinite(filled))
                start = int(finite[0]) if finite.size else k
                self._started = start < k
                gap[:start] = True
            buf[:start] = 0.0
            buf[start:] = filled[start:]
            self._flag(filled, filled[0] if prev is None else prev, pos, gap)
            self._filter.filter_inplace(buf[start:])
        f0, f1 = pos // self._F, end // self._F
        if f1 > f0:
            self._frames(f0, f1, events)
        done = end // self._bs * self._bs  # samples of the blocks completed now
        if done:  # keep the incomplete block at the front of the buffer
            rest = end - done
            self._buf[:rest] = self._buf[done:end]
            if self._dirty:
                self._flags[:rest] = self._flags[done:end]
                self._flags[rest:end] = 0
                self._dirty = bool(self._flags[:rest].any())
            end = rest
        self._pos = end

    def _flag(self, x: FloatArray, prev: float, pos: int, gap: NDArray[np.bool_] | None) -> None:
        """Record per-sample gap / electrode-pop step / saturation flags of ``x`` at ``pos``."""
        c = self.config
        step = np.abs(np.diff(x, prepend=prev)) > c.pop_step_uv
        sat = np.abs(x) >= c.saturation_uv
        flags = step * _STEP | sat * _SAT
        if gap is not None:
            flags |= gap * _GAP
        if flags.any():
            self._flags[pos : pos + x.size] = flags
            self._dirty = True

    # ------------------------------------------------------------------ frame stage

    def _frames(self, f0: int, f1: int, events: list[DetectorEvent]) -> None:
        """Process the complete frames ``f0..f1-1`` of the buffer (frame 0 starts a block).

        Energies and envelope are computed for all frames at once; the decisions
        then run per segment of constant thresholds (1-s blocks, split where the
        noise floor is first known), with the block bookkeeping at each block end.
        """
        fr, fpb = self._F, self._fpb
        nf = f1 - f0
        seg = self._buf[f0 * fr : f1 * fr].reshape(nf, fr)
        e = np.einsum("ij,ij->i", seg, seg)
        e /= fr
        g0 = self._n_frames
        i0 = g0 + self._h_off
        if i0 + nf > self._eh.size:
            i0 = self._history(g0, nf)
        if g0 == 0:  # prime the moving window with the first frame (no ramp from zero)
            self._eh[:i0] = e[0]
        self._eh[i0 : i0 + nf] = e
        env = self._win.sums(self._eh[i0 - self._na + 1 : i0 + nf])
        env /= self._na
        np.sqrt(env, out=env)
        fl = None
        if self._dirty:
            fl = np.bitwise_or.reduce(self._flags[f0 * fr : f1 * fr].reshape(nf, fr), axis=1)
        n_end = f1 // fpb - f0 // fpb  # blocks completed by these frames
        acc: list[AccBlock | None] = [None] * n_end
        if n_end and self.acc_fs is not None:
            acc = self._acc_blocks(n_end)
        init_at = self._init_frames - g0 if self._floor is None else 0
        if (f0 // fpb + 1) * fpb >= f1 and not 0 < init_at < nf:  # one segment (streaming)
            hi = float(np.maximum.reduce(env))
            self._decide(g0, i0, e, env, hi, float(np.minimum.reduce(env)), fl, events)
            self._n_frames = g0 + nf
            if self._floor is None and self._n_frames == self._init_frames:
                self._init_floor()
            if f1 % fpb == 0:
                self._end_block(f1 // fpb - 1, acc[0] if acc else None, events)
            return
        cuts = list(range((f0 // fpb + 1) * fpb, f1, fpb))
        if 0 < init_at < nf:
            cuts = sorted({*cuts, f0 + init_at})
        at = np.array([f0, *cuts]) - f0
        his = np.maximum.reduceat(env, at).tolist()
        los = np.minimum.reduceat(env, at).tolist()
        a = f0
        for s_i, hi in enumerate(his):
            b = cuts[s_i] if s_i < len(cuts) else f1
            la, lb = a - f0, b - f0
            self._decide(g0 + la, i0 + la, e[la:lb], env[la:lb], hi, los[s_i],
                         None if fl is None else fl[la:lb], events)  # fmt: skip
            self._n_frames = g0 + lb
            if self._floor is None and self._n_frames == self._init_frames:
                self._init_floor()
            if b % fpb == 0:
                self._end_block(b // fpb - 1, acc[b // fpb - 1 - f0 // fpb], events)
            a = b

    def _history(self, g0: int, nf: int) -> int:
        """Make room for ``nf`` frames from global frame ``g0``; return the index of ``g0``.

        The last ``_pad`` frames (the current block, the onset look-back, the hold
        and envelope windows) move to the front of a history at least this large.
        """
        i0 = g0 + self._h_off
        size = max(self._eh.size, self._pad + 2 * nf)
        eh, ih, bh = np.zeros(size), np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
        eh[: self._pad] = self._eh[i0 - self._pad : i0]
        ih[: self._pad] = self._ih[i0 - self._pad : i0]
        bh[: self._pad] = self._bh[i0 - self._pad : i0]
        self._eh, self._ih, self._bh = eh, ih, bh
        self._h_off -= i0 - self._pad
        return self._pad

    def _decide(  # noqa: PLR0917
        self,
        g0: int,
        i0: int,
        e: FloatArray,
        env: FloatArray,
        hi: float,
        lo: float,
        fl: NDArray[np.uint8] | None,
        events: list[DetectorEvent],
    ) -> None:
        """Frames ``g0..`` with constant thresholds: a shortcut for the common cases."""
        nf = e.size
        flagged = fl is not None and bool(fl.any())
        clean = (
            not flagged
            and lo >= self._flat_thr
            and self._since_art >= self._guard_n
            and self._floor is not None
        )
        if clean and self._state == IDLE:
            # no onset threshold crossing (so no spike either), and no CUSUM alarm
            if hi <= self._on_thr and (hi <= self._off_thr or not self._cusum_may_fire(i0, nf)):
                self._since_art += nf
                np.greater(env, self._hold_thr, out=self._ih[i0 : i0 + nf])
                self._prev_on = False
                self._blk_idle.append(env)
                self._blk_idle_n += nf
                return
        elif clean and lo >= self._off_thr and not self._ep_rearm:
            # active, never below the release threshold, no restart pending
            self._since_art += nf
            np.greater(env, self._hold_thr, out=self._ih[i0 : i0 + nf])
            self._bh[i0 : i0 + nf] = False
            self._prev_on = bool(env[-1] > self._on_thr)
            self._run = 0
            self._active_clean(g0, e, env, hi, events)
            return
        self._general(g0, i0, e, env, lo, fl, events)

    def _general(  # noqa: PLR0917
        self,
        g0: int,
        i0: int,
        e: FloatArray,
        env: FloatArray,
        lo: float,
        fl: NDArray[np.uint8] | None,
        events: list[DetectorEvent],
    ) -> None:
        """Artefact masks and guard, then the vectorised state machine (:meth:`_segment`)."""
        nf = e.size
        art_f = env < self._flat_thr  # flat: lead-off
        if g0 < self._na - 1:  # (not while the window still holds the primed first frame)
            art_f[: self._na - 1 - g0] = False
        if art_f.any():
            self._blk_flat = True
        if fl is not None:
            gap_f = (fl & _GAP) != 0
            art_f |= gap_f | ((fl & (_STEP | _SAT)) != 0)
        else:
            gap_f = np.zeros(nf, dtype=bool)
        since = since_last(art_f, self._since_art)
        self._since_art = int(since[-1])
        self._segment(g0, i0, e, env, ~gap_f, ~art_f, since > self._guard_n, events)

    def _active_clean(
        self, g0: int, e: FloatArray, env: FloatArray, hi: float, events: list[DetectorEvent]
    ) -> None:
        """Open episode, no artefact, envelope never below release: extend, maybe confirm."""
        nf = e.size
        stop = nf
        conf = self._ep_confirm_frame - g0
        if self._state == SPASM:
            if conf < nf:
                stop = max(conf, 0) + 1
            young = min(stop, self._ep_young_frame - g0)
            if young > 0:
                self._blk_idle.append(env[:young])
                self._blk_idle_n += young
        self._ep_ok += nf
        self._ep_peak = max(self._ep_peak, hi)
        if self._state == SPASM and conf < nf:
            self._ep_e.append(e[:stop])
            self._confirm_unless_moving(g0 + stop - 1, events)
            self._ep_e.append(e[stop:])
        else:
            self._ep_e.append(e)

    def _segment(  # noqa: PLR0917
        self,
        g0: int,
        i0: int,
        e: FloatArray,
        env: FloatArray,
        valid: NDArray[np.bool_],
        rest: NDArray[np.bool_],
        okon: NDArray[np.bool_],
        events: list[DetectorEvent],
    ) -> None:
        """General path: run the state machine over frames ``g0..`` (constant thresholds).

        ``valid``: not missing (may end or extend an episode); ``rest``: no artefact
        (may feed the noise statistics); ``okon``: no artefact in the guard time
        (may open an episode).
        """
        n = e.size
        floor = self._floor
        if floor is None:
            ind = np.zeros(n, dtype=bool)
            below = ind
            self._ih[i0 : i0 + n] = False
            self._init_vals.append(env[rest])
        else:
            ind = (env > self._on_thr) & okon
            below = (env < self._off_thr) & valid
            self._ih[i0 : i0 + n] = (env > self._hold_thr) & okon
        # Bonato's second threshold: the onset criterion holds at frames above the
        # onset threshold that end a window mostly above the release threshold
        hold = window_counts(self._ih[i0 - self._m_on + 1 : i0 + n], self._m_on)
        trigger = (hold >= self._hold_need) & ind
        # Page's CUSUM: a second way to open from idle, at frames above the release
        # threshold (computed lazily, idle stretches only)
        gate = None
        if self._cus_live:
            gate = (env > self._off_thr) & okon & ~trigger
        run = run_lengths(below, self._run)
        self._run = int(run[-1])
        self._bh[i0 : i0 + n] = below
        quiet = None  # frames below release in the end window, when needed
        edges = ind & ~np.concatenate([[self._prev_on], ind[:-1]])
        self._prev_on = bool(ind[-1])
        j = 0
        while j < n:
            if self._state == IDLE:
                if floor is None:
                    break
                hits = np.flatnonzero(trigger[j:])
                k = j + int(hits[0]) if hits.size else n
                if gate is not None:
                    k = self._cusum_hit(i0, gate, j, k)
                idle_env = env[j:k][rest[j:k]]
                if idle_env.size:
                    self._blk_idle.append(idle_env)
                    self._blk_idle_n += idle_env.size
                spikes = np.flatnonzero(edges[j:k])
                if spikes.size:
                    self._spikes.extend(((g0 + j + spikes + 1) * self._dt).tolist())
                if k >= n:
                    break
                self._open(g0 + k, float(env[k]), events)
                j = k + 1
            else:
                spasm = self._state == SPASM
                if spasm:  # cleared after clear_relax_s without a frame above release
                    ends = np.flatnonzero(run[j:] >= self._clear_n)
                else:  # a cramp ends when end_relax_s were mostly below release
                    if quiet is None:
                        hist = self._bh[i0 - self._end_n + 1 : i0 + n]
                        quiet = window_counts(hist, self._end_n)
                    ends = np.flatnonzero((quiet[j:] >= self._end_need) & below[j:])
                k_end = j + int(ends[0]) if ends.size else n
                k_conf = k_re = n
                if spasm:
                    # a pause >= restart_pause_s restarts the candidate: no confirmation
                    # until the onset criterion is met again, which re-anchors the onset
                    p = j - 1
                    if not self._ep_rearm:
                        pauses = np.flatnonzero(run[j:k_end] >= self._pause_n)
                        p = j + int(pauses[0]) if pauses.size else k_end
                    # confirmation needs confirm_s of observed signal: each missing
                    # frame postpones it by one frame, and it is taken at a frame seen
                    missing = np.cumsum(~valid[j:])
                    seen_at = g0 + j + np.arange(n - j) - missing
                    c0 = j + int(np.searchsorted(seen_at, self._ep_confirm_frame))
                    if c0 < p:
                        ok = np.flatnonzero(~below[c0:p] & valid[c0:p])
                        k_conf = c0 + int(ok[0]) if ok.size else n
                    if p < k_end:
                        hits = np.flatnonzero(trigger[p + 1 :])
                        k_re = p + 1 + int(hits[0]) if hits.size else n
                k = min(k_end, k_conf, k_re)
                stop = min(k + 1, n)
                if spasm:
                    # young candidates still count as rest for the noise statistics
                    young = min(stop, self._ep_young_frame - g0)
                    if young > j:
                        vals = env[j:young][rest[j:young]]
                        self._blk_idle.append(vals)
                        self._blk_idle_n += vals.size
                    paused = np.flatnonzero(run[j:stop] >= self._pause_n)
                    if paused.size and not k == k_end < n:  # (not when closing now)
                        q = j + int(paused[-1])
                        self._ep_rearm = True
                        self._ep_pause_start = g0 + q - int(run[q]) + 1
                if spasm:
                    self._ep_confirm_frame += int((~valid[j:stop]).sum())
                self._ep_e.append(e[j:stop])
                self._ep_ok += int(okon[j:stop].sum())
                if stop > j:
                    self._ep_peak = max(self._ep_peak, float(env[j:stop].max()))
                if k >= n:
                    break
                g = g0 + k
                if k == k_end:
                    if spasm:
                        start = g - self._clear_n + 1
                    else:  # the first quiet frame of the end window
                        w0 = g - self._end_n + 1 + self._h_off
                        start = (
                            g - self._end_n + 1 + int(np.argmax(self._bh[w0 : g + 1 + self._h_off]))
                        )
                    self._close(start, g, (g + 1) * self._dt, events)
                elif k == k_conf:
                    self._confirm_unless_moving(g, events)
                else:
                    self._anchor(g, self._ep_pause_start, float(env[k]))
                j = k + 1

    def _cusum_may_fire(self, i0: int, nf: int) -> bool:
        """Whether the CUSUM could exceed ``cusum_h`` at frames ``i0..i0+nf-1`` (a bound)."""
        if not self._cus_live:
            return False
        c = self.config
        bound = page_cusum_bound(
            self._eh[i0 - self._cus_n + 1 : i0 + nf],
            self._cus_n,
            noise_power=self._cus_ref,
            drift=c.cusum_drift,
            clip=c.cusum_clip,
        )
        return bound > c.cusum_h - 1e-6  # margin for the rounding of the two sums

    def _cusum_hit(self, i0: int, gate: NDArray[np.bool_], j: int, k: int) -> int:
        """First gate frame in ``j..k-1`` where Page's CUSUM exceeds ``cusum_h``, else ``k``.

        ``j``, ``k`` and ``gate`` index the current segment, which starts at history
        index ``i0``.
        """
        c = self.config
        cand = np.flatnonzero(gate[j:k])
        if not cand.size:
            return k
        cand += j
        s = page_cusum(
            self._eh,
            cand + i0,
            self._cus_n,
            noise_power=self._cus_ref,
            drift=c.cusum_drift,
            clip=c.cusum_clip,
        )
        over = np.flatnonzero(s > c.cusum_h)
        return int(cand[over[0]]) if over.size else k

    # ------------------------------------------------------------------ episodes

    def _open(self, g: int, env_now: float, events: list[DetectorEvent]) -> None:
        """Open an episode detected at global frame ``g``."""
        assert self._floor is not None
        self._ep += 1
        self._state = SPASM
        self._ep_floor = self._floor
        self._anchor(g, self._last_end_frame, env_now)
        onset_t = self._ep_first_t = self._ep_onset_t
        self._ep_young_frame = math.ceil((onset_t + self.config.noise_young_s) / self._dt)
        now = (g + 1) * self._dt
        pw = self.config.prelude_window_s
        spikes = [t for t in self._spikes if onset_t - pw <= t < onset_t - 0.05]
        # the event's time: the first spike that did not start an earlier prelude (the
        # windows of candidates in one twitch run overlap; an event is stored by time)
        fresh = [t for t in spikes if t > self._last_prelude_t]
        self._ep_prelude_s = self._ep_prelude_t = None
        if len(spikes) >= self.config.prelude_min_spikes and fresh:
            self._ep_prelude_t = spikes[0]
            self._ep_prelude_s = onset_t - spikes[0]
            self._last_prelude_t = fresh[0]
            events.append(
                DetectorEvent(PRELUDE, self._ep, fresh[0], now,
                              MappingProxyType({"n_spikes": len(spikes)}))
            )  # fmt: skip
        events.append(
            DetectorEvent(SPASM_ONSET, self._ep, onset_t, now,
                          MappingProxyType({"floor_uv": self._floor, "env_uv": env_now}))
        )  # fmt: skip

    def _anchor(self, g: int, not_before: int, env_now: float) -> None:
        """(Re)start the open episode's contraction, detected at frame ``g``.

        The onset is refined backwards over the frames from ``not_before`` (the end
        of the previous episode, or the start of the pause that restarted this one)
        up to ``g``: likelihood-ratio change point (Staude et al. 2001), back over
        frames still above resting power, then the rising edge extrapolated back to
        rest.  The episode's running description starts again from the onset.
        """
        floor = self._floor
        assert floor is not None
        c = self.config
        first = max(g - self._look_n + 1, 0, not_before)
        win = self._eh[first + self._h_off : g + 1 + self._h_off].copy()
        cp = variance_change_point(win, floor * floor)
        back = win[max(0, cp - self._back_n) : cp]
        quiet = np.flatnonzero(back <= floor * floor)
        cp -= back.size - (int(quiet[-1]) + 1 if quiet.size else 0)
        edge = rising_edge_start(win, floor * floor, cp, c.onset_edge_min, c.onset_edge_fraction)
        onset_t = (first + min(max(edge, cp - self._back_n, 0.0), cp)) * self._dt
        if self._ep_rearm:  # a restart: what came before the pause was a prelude
            lead = self._ep_first_t if self._ep_prelude_t is None else self._ep_prelude_t
            self._ep_prelude_s = onset_t - lead
        self._ep_rearm = False
        self._ep_onset_t = onset_t
        conf = math.ceil((onset_t + c.confirm_s) / self._dt - 1.0 - 1e-9)
        self._ep_confirm_frame = max(conf, g + 1)
        act = win[cp:]
        self._ep_e = [act]
        self._ep_ok = act.size
        self._ep_peak = env_now
        self._ep_posture = 0
        self._ep_acc = []
        self._ep_psd = np.zeros(self._psd_freqs.size)

    def _confirm_unless_moving(self, g: int, events: list[DetectorEvent]) -> None:
        """Confirm at frame ``g``, unless the limb moved and the EMG is only moderate.

        When the accelerometer showed movement in ``motion_fraction`` of the
        candidate's seconds, the sustained activity may be motion artefact or
        stretching; it is then confirmed only if its mean RMS is at least
        ``motion_min_intensity`` x the floor, else the check waits for the next
        second.  Without accelerometer, or with a still limb, nothing changes.
        """
        c = self.config
        moving = sum(not still for _t, still in self._ep_acc)
        if self._ep_acc and moving >= c.motion_fraction * len(self._ep_acc):
            energies = np.concatenate(self._ep_e)
            mean_rms = math.sqrt(math.fsum(energies.tolist()) / max(energies.size, 1))
            if mean_rms < c.motion_min_intensity * self._ep_floor:
                self._ep_confirm_frame = (g // self._fpb + 1) * self._fpb
                return
        self._confirm(g, events)

    def _confirm(self, g: int, events: list[DetectorEvent]) -> None:
        self._state = CRAMP
        events.append(
            DetectorEvent(CRAMP_CONFIRMED, self._ep, self._ep_onset_t, (g + 1) * self._dt,
                          MappingProxyType({"floor_uv": self._ep_floor,
                                            "spasm_onset_s": self._ep_first_t}))
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
        self._forget_spikes(kind == CRAMP_END, duration)
        self._state = IDLE
        self._last_end_frame = g + 1

    def _forget_spikes(self, cramp: bool, duration: float) -> None:
        """Prelude spikes after an episode closed: none after a cramp; after a cleared
        candidate, the crossings that belonged to it are replaced by one spike at its
        first onset if it was shorter than ``prelude_spike_max_s`` (a twitch that opened
        its own candidate), and by nothing otherwise."""
        if cramp:  # what came before a cramp preludes nothing after it
            self._spikes.clear()
            return
        while self._spikes and self._spikes[-1] >= self._ep_first_t - 0.05:
            self._spikes.pop()
        if duration < self.config.prelude_spike_max_s:
            self._spikes.append(self._ep_first_t)

    # ------------------------------------------------------------------ blocks

    def _set_floor(self, floor: float, noise_peak: float) -> None:
        """New noise statistics and the onset / release thresholds derived from them."""
        c = self.config
        self._floor = floor
        self._noise_peak = noise_peak
        self._on_thr = max(c.on_ratio * floor, c.peak_on_ratio * noise_peak)
        self._off_thr = max(c.off_ratio * floor, c.peak_off_ratio * noise_peak)
        self._hold_thr = self._off_thr + c.onset_hold_level * (self._on_thr - self._off_thr)
        # the CUSUM needs a known resting power: not on the crude first estimate
        self._cus_live = c.cusum_h > 0 and self._n_updates > 1
        self._cus_ref = max(floor, c.cusum_peak_ratio * noise_peak) ** 2
        self._flat_thr = max(c.lead_off_rms_uv, c.lead_off_floor_ratio * floor)

    def _init_floor(self) -> None:
        vals = np.concatenate(self._init_vals) if self._init_vals else np.zeros(0)
        if vals.size * 2 >= self._init_frames:
            # the peak, not the percentile: a quarter second holds too few independent
            # envelope values for a 99th percentile (at 250 Hz, 62 overlapping windows)
            med, _ = median_and_percentile(vals, 50.0)
            floor = max(med, self.config.min_floor_uv)
            self._set_floor(floor, max(float(vals.max()), floor))
            self._init_vals = []

    def _end_block(self, bi: int, acc: AccBlock | None, events: list[DetectorEvent]) -> None:
        """Bookkeeping at the end of the block held at ``bi`` in the buffer."""
        c = self.config
        gb = self._n_frames
        t_end = gb * self._dt
        t_start = t_end - self._fpb * self._dt
        i1 = gb + self._h_off
        rms = math.sqrt(float(np.add.reduce(self._eh[i1 - self._fpb : i1])) / self._fpb)
        blk = self._buf[bi * self._bs : (bi + 1) * self._bs]
        peak = max(float(np.maximum.reduce(blk)), -float(np.minimum.reduce(blk)))
        flags = 0
        if self._dirty:
            flags = int(np.bitwise_or.reduce(self._flags[bi * self._bs : (bi + 1) * self._bs]))
        if flags & _GAP:
            quality = "gap"
        elif flags & _SAT:  # a railed line is flat too: say where it is
            quality = "saturated"
        elif self._blk_flat or rms < c.lead_off_rms_uv:
            quality = "lead_off"
        elif flags & _STEP:
            quality = "artefact"
        else:
            quality = "ok"
        if self._floor is None and gb > self._init_frames:
            self._init_floor()
        floor = self._floor
        on_thr = self._on_thr
        # noise floor: idle, good seconds only; fast fall, slow rise
        if (
            floor is not None
            and quality == "ok"
            and self._blk_idle_n * 2 >= self._fpb
            and self._state == IDLE
        ):
            med, top = median_and_percentile(
                np.concatenate(self._blk_idle), c.noise_peak_percentile
            )
            # warm-up: the first estimate (floor_init_s) is crude, so the first updates
            # rise with weight 1/n (a running mean) until that drops to floor_rise
            self._n_updates += 1
            rise = max(c.floor_rise, 1.0 / self._n_updates)
            m = min(med, c.on_ratio * floor)
            w = c.floor_fall if m < floor else rise
            new_floor = max(floor + w * (m - floor), c.min_floor_uv)
            p = min(top, 2.0 * self._noise_peak)
            w = c.floor_fall if p < self._noise_peak else rise
            self._set_floor(
                new_floor, max(self._noise_peak + w * (p - self._noise_peak), new_floor)
            )
        # mains check on the block (not notched yet: the notch comes with the finding)
        self._n_blocks += 1
        if (
            self._mains is not None
            and self.mains_hz is None
            and self._n_blocks % self._mains_every == 0
        ):
            found = self._mains.analyse(blk)
            if found is not None:
                self.mains_hz, self.mains_notches_hz = found
                self._filter.append(notch_sos(self.emg_fs, found[1], c.mains_notch_q))
        # accelerometer
        acc_act: float | None = None
        tilt: float | None = None
        if acc is not None:
            acc_act, posture, tilt = acc
            if posture and self._state != IDLE:
                self._ep_posture += 1
            moved = acc_act >= c.still_acc_g or posture
            self._acc_recent.append((t_end, acc_act, moved))
        if self._state != IDLE:
            self._ep_psd += np.abs(np.fft.rfft(blk * self._hann)) ** 2
            if acc_act is not None:
                self._ep_acc.append((t_end, acc_act < c.still_acc_g))
        if quality != self._quality:
            events.append(
                DetectorEvent(SIGNAL_QUALITY, 0, t_start, t_end,
                              MappingProxyType({"quality": quality, "previous": self._quality}))
            )  # fmt: skip
            self._quality = quality
        self._summaries.append(
            EnvelopeSummary(
                t_s=t_end,
                rms_uv=rms,
                peak_uv=peak,
                noise_floor_uv=math.nan if floor is None else floor,
                on_threshold_uv=on_thr,
                quality=quality,
                acc_activity_g=acc_act,
                state=self._state,
                tilt_deg=tilt,
            )
        )
        self._blk_flat = False
        self._blk_idle = []
        self._blk_idle_n = 0

    def _acc_blocks(self, n: int) -> list[AccBlock | None]:
        """Accelerometer summary of the next ``n`` blocks: (dynamic g RMS, posture changed, tilt).

        Rows ``ceil(t * acc_fs)`` up to a block end belong to that block (the
        SignalChunk timing contract); rows not received yet are not waited for.
        ``None`` for a block with fewer than two rows.  The posture changed when the
        mean gravity vector turned by more than ``posture_change_deg`` since the
        last block that had one.  The tilt is the angle (degrees, 0-180) between the
        block's mean acceleration and the band's -z axis, which points into the calf
        (z points out of the skin at the back of the calf: a leg lying on its back
        reads ~(0, 0, -1) g, tilt 0); NaN rows (a gap) make activity and tilt NaN.
        """
        assert self.acc_fs is not None
        parts = self._acc_parts
        if not parts:
            return [None] * n
        buf = parts[0] if len(parts) == 1 else np.concatenate(parts)
        t_ends = (self._n_blocks + 1 + np.arange(n)) * (self._fpb * self._dt)
        upto = np.ceil(t_ends * self.acc_fs - 1e-9).astype(np.int64) - self._acc_base
        bounds = np.minimum(np.maximum(upto, 0), buf.shape[0])
        take = int(bounds[-1])
        self._acc_parts = [buf[take:]] if take < buf.shape[0] else []
        self._acc_base += take
        starts = np.concatenate([[0], bounds[:-1]])
        counts = (bounds - starts).tolist()
        if take == 0:
            return [None] * n
        rows = buf[:take]
        at = starts[bounds > starts]  # blocks with rows: their rows tile rows[0:take]
        sums = np.add.reduceat(rows, at, axis=0)
        squares = np.add.reduceat(np.einsum("ij,ij->i", rows, rows), at)
        means = sums / np.diff(np.append(at, take))[:, None]
        # angle to -z as atan2(|m x -z|, m . -z): accurate at 0 and 180 deg too
        tilts = np.degrees(np.arctan2(np.hypot(means[:, 0], means[:, 1]), -means[:, 2])).tolist()
        out: list[AccBlock | None] = []
        limit = math.cos(math.radians(self.config.posture_change_deg))
        j = -1
        for cnt in counts:
            j += cnt > 0
            if cnt < 2:
                out.append(None)
                continue
            mean = means[j]
            mm = float(mean @ mean)
            # total variance from the raw moments (|mean| ~ 1 g: the cancellation costs
            # ~1e-11 relative, and "still" is at 4e-4 g^2)
            act = math.sqrt(max(float(squares[j]) / cnt - mm, 0.0))
            posture = False
            prev = self._acc_prev_mean
            if prev is not None:
                denom = math.sqrt(mm * float(prev @ prev))
                posture = denom > 0 and float(mean @ prev) / denom < limit
            self._acc_prev_mean = mean
            out.append((act, posture, tilts[j]))
        return out


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
