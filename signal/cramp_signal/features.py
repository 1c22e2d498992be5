"""Vectorised envelope features with carried state (pure NumPy).

References
----------
.. [1] A. Solnik, P. Rider, K. Steinweg, P. DeVita, T. Hortobágyi, "Teager-Kaiser
   energy operator signal conditioning improves EMG onset detection", Eur. J.
   Appl. Physiol. 110 (2010) 489-498.
.. [2] X. Li, P. Zhou, A. S. Aruin, "Teager-Kaiser energy operation of surface EMG
   improves muscle activity onset detection", Ann. Biomed. Eng. 35 (2007) 1532-1538.
.. [3] G. Staude, C. Flachenecker, M. Daumer, W. Wolf, "Onset detection in surface
   electromyographic signals: a systematic comparison of methods", EURASIP J. Appl.
   Signal Process. 2001(2) 67-81 (approximated generalised likelihood ratio).
.. [4] G. Bonato, T. D'Alessio, M. Knaflitz, "A statistical method for the
   measurement of muscle activation intervals from surface myoelectric signal
   during gait", IEEE Trans. Biomed. Eng. 45 (1998) 287-299.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def tkeo(x: FloatArray) -> FloatArray:
    """Teager-Kaiser energy ``x[n]^2 - x[n-1] x[n+1]`` (length ``len(x) - 2``) [1]_ [2]_.

    Provided for offline comparison; the streaming detector uses the moving RMS
    (the TKEO needs one sample of look-ahead and amplifies the 20-450 Hz noise
    floor's high-frequency part as much as the EMG).
    """
    if x.size < 3:
        return np.zeros(0)
    return np.asarray(x[1:-1] ** 2 - x[:-2] * x[2:])


class WindowSums:
    """Sums of every ``n`` consecutive values, each added in the same fixed order.

    ``sums(v)`` returns ``len(v) - n + 1`` sums.  Each is the reduction of one row of
    a gathered ``(rows, n)`` array (the windows are copied through a precomputed
    index table), so a value's window sum does not depend on where the window sits
    in ``v`` and a stream cut into chunks of any size gives bit-identical sums
    (a running cumulative sum would not).
    """

    def __init__(self, n: int, max_rows: int) -> None:
        self.n = max(1, int(n))
        self._index = np.arange(max(1, max_rows))[:, None] + np.arange(self.n)[None, :]

    def sums(self, v: FloatArray) -> FloatArray:
        """Window sums of ``v`` (at most ``max_rows`` of them)."""
        rows = v.size - self.n + 1
        if rows <= 0:
            return np.zeros(0)
        if rows > self._index.shape[0]:
            self._index = np.arange(rows)[:, None] + np.arange(self.n)[None, :]
        return np.asarray(np.add.reduce(v[self._index[:rows]], axis=1))


def window_counts(b: BoolArray, n: int) -> NDArray[np.int64]:
    """Count of trues in each window of ``n`` consecutive booleans (Bonato's r-of-m test [4]_).

    ``b`` holds the ``n - 1`` values before the first window's end, then one value per
    output; returns ``len(b) - n + 1`` exact integer counts.
    """
    c = np.concatenate([[0], np.cumsum(b, dtype=np.int64)])
    return np.asarray(c[n:] - c[: c.size - n])


def median_and_percentile(v: FloatArray, q: float) -> tuple[float, float]:
    """Median and ``q``-th percentile of ``v`` (linear interpolation, ``numpy.percentile``'s rule).

    One sort of ``v``; much cheaper than :func:`numpy.percentile` on the ~200 values
    of a second of frames.
    """
    s = np.sort(v)
    return _interpolate(s, 0.5), _interpolate(s, q / 100.0)


def _interpolate(s: FloatArray, frac: float) -> float:
    pos = frac * (s.size - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, s.size - 1)
    a, b = float(s[lo]), float(s[hi])
    return a + (b - a) * (pos - lo)


def run_lengths(b: BoolArray, carry: int) -> NDArray[np.int64]:
    """Length of the run of trues ending at each element (``carry`` = run before ``b``)."""
    idx = np.arange(b.size)
    last_false = np.where(b, -1, idx)
    np.maximum.accumulate(last_false, out=last_false)
    return np.where(last_false >= 0, idx - last_false, idx + 1 + carry).astype(np.int64)


def since_last(flag: BoolArray, carry: int) -> NDArray[np.int64]:
    """Frames since the last true flag (0 on a flagged frame); ``carry`` = count before."""
    idx = np.arange(flag.size)
    last = np.where(flag, idx, -1)
    np.maximum.accumulate(last, out=last)
    return np.where(last >= 0, idx - last, idx + 1 + carry).astype(np.int64)


def variance_change_point(energy: FloatArray, noise_power: float) -> int:
    """Most likely start of activity in a window of frame energies (Staude et al. 2001 [3]_).

    Model: frames before the change are zero-mean Gaussian noise of known power
    ``noise_power``; frames from the change on have an unknown, larger power
    (estimated by its maximum-likelihood value).  The log-likelihood of every
    change index is evaluated at once with cumulative sums.

    Parameters
    ----------
    energy
        Mean squared sample per frame, oldest first (the last frame is active).
    noise_power
        Power of the resting signal (floor squared).

    Returns
    -------
    int
        Index of the first active frame.
    """
    n = energy.size
    if n <= 1:
        return 0
    s0 = max(noise_power, 1e-300)
    before = np.concatenate([[0.0], np.cumsum(-np.log(s0) - energy / s0)])[:n]
    tail = np.cumsum(energy[::-1])[::-1]
    count = np.arange(n, 0, -1, dtype=np.float64)
    p1 = np.maximum(tail / count, s0)
    ll = before - count * (np.log(p1) + 1.0)
    return int(np.argmax(ll))


def rising_edge_start(
    energy: FloatArray, noise_power: float, start: int, min_excess: float, top_fraction: float
) -> float:
    """Where the rising edge of the activity, extrapolated back, meets the resting level.

    The excess amplitude of each frame, ``sqrt(max(energy - noise_power, 0))`` in
    units of the resting RMS, is fitted by a straight line (least squares) over the
    frames from ``start`` that are at least ``min_excess`` and come before the
    amplitude first reaches ``top_fraction`` of its peak in the window; the line's
    zero crossing is returned (a fractional frame index, frame ``j`` starting at
    ``j``).  A recruitment ramp that starts below the noise is thereby dated to its
    start rather than to where it emerged from the noise; with fewer than two
    frames or no positive slope ``start`` is returned.  The caller bounds the result.
    """
    rms = math.sqrt(max(noise_power, 1e-300))
    amp = np.sqrt(np.maximum(energy[start:] - noise_power, 0.0)) / rms
    if amp.size < 2:
        return float(start)
    reach = np.flatnonzero(amp >= top_fraction * amp.max())
    edge = amp[: int(reach[0]) + 1]
    x = np.flatnonzero(edge >= min_excess).astype(np.float64)
    if x.size < 2:
        return float(start)
    y = edge[x.astype(np.int64)]
    xm, ym = float(x.mean()), float(y.mean())
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    if not slope > 0:
        return float(start)
    return start + xm - ym / slope


def median_frequency(psd: FloatArray, freqs: FloatArray) -> float:
    """Frequency that splits the power spectrum into two equal halves (NaN if empty)."""
    total = float(psd.sum())
    if not total > 0:
        return float("nan")
    c = np.cumsum(psd)
    return float(freqs[int(np.searchsorted(c, total / 2.0))])


def page_cusum(
    energy: FloatArray,
    ends: NDArray[np.intp],
    memory: int,
    *,
    noise_power: float,
    drift: float,
    clip: float,
) -> FloatArray:
    """Page's CUSUM of frame energies against a known resting power, at given frames.

    Page (1954): with increments ``z_i = min(e_i / noise_power, clip) - drift``, the
    statistic at frame ``k`` is ``S_k = max(0, max_j sum(z_j..z_k))``, the evidence
    for a sustained rise of the power above ``drift`` x the resting power.  Here
    the memory is finite, ``k - memory < j <= k``, so ``S_k`` is a function of the
    ``memory`` frames ending at ``k`` only: each is computed from its own gathered
    row, in the same order, and a stream cut into chunks gives bit-identical values.
    ``clip`` bounds what one frame (a spike, a QRS residue) can contribute.

    Parameters
    ----------
    energy
        Frame energies (mean square per frame), oldest first.
    ends
        Indices into ``energy`` of the frames at which ``S`` is wanted; each must
        have ``memory - 1`` frames before it.
    memory, noise_power, drift, clip
        Window length (frames), resting power, and drift and clip in units of it.

    Returns
    -------
    numpy.ndarray
        ``S`` at each of ``ends`` (in units of the resting power).
    """
    if ends.size == 0:
        return np.zeros(0)
    rows = energy[ends[:, None] + np.arange(1 - memory, 1)[None, ::-1]]  # newest first
    z = np.minimum(rows / max(noise_power, 1e-300), clip) - drift
    suffix = np.cumsum(z, axis=1)  # sums z_j..z_k for j = k, k-1, ...
    out: FloatArray = np.maximum(np.max(suffix, axis=1), 0.0)
    return out


def page_cusum_bound(
    energy: FloatArray, memory: int, *, noise_power: float, drift: float, clip: float
) -> float:
    """An upper bound of :func:`page_cusum` at every frame of ``energy`` from ``memory - 1`` on.

    The largest sum of the positive increments ``max(z_i, 0)`` over ``memory``
    consecutive frames: no suffix sum within one window can exceed it.  One
    cumulative sum, so a stretch where it stays below the threshold can skip the
    exact statistic.  Parameters as in :func:`page_cusum`.
    """
    z = np.clip(energy / max(noise_power, 1e-300) - drift, 0.0, clip - drift)
    c = np.concatenate([[0.0], np.cumsum(z)])
    return float(np.max(c[memory:] - c[: c.size - memory]))
