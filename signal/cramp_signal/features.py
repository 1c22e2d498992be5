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


class MovingMean:
    """Causal moving mean over ``n`` values, continued across calls.

    Each output sums exactly the same ``n`` values in the same order whatever the
    chunking (sliding-window view, not a running cumulative sum), so streamed and
    whole-signal outputs are bit-identical.  The history is primed with the first
    value seen, so the first outputs equal it instead of ramping up from zero.
    """

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._hist: FloatArray | None = None

    def process(self, v: FloatArray) -> FloatArray:
        """Moving mean of ``v`` (same length), using the last ``n - 1`` earlier values."""
        if v.size == 0:
            return v
        if self._hist is None:
            self._hist = np.full(self.n - 1, v[0])
        full = np.concatenate([self._hist, v])
        out = np.lib.stride_tricks.sliding_window_view(full, self.n).sum(axis=1) / self.n
        self._hist = full[len(full) - (self.n - 1) :] if self.n > 1 else full[:0]
        return np.asarray(out)


class MovingCount:
    """Causal count of true values among the last ``n`` booleans (Bonato's r-of-m test [4]_)."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._hist = np.zeros(self.n - 1, dtype=np.int64)

    def process(self, b: BoolArray) -> NDArray[np.int64]:
        """Counts for each element of ``b`` (same length)."""
        if b.size == 0:
            return np.zeros(0, dtype=np.int64)
        full = np.concatenate([self._hist, b.astype(np.int64)])
        c = np.concatenate([[0], np.cumsum(full)])
        self._hist = full[len(full) - (self.n - 1) :] if self.n > 1 else full[:0]
        return np.asarray(c[self.n :] - c[: -self.n])

    @property
    def last(self) -> bool:
        """The most recent boolean (False before any)."""
        return bool(self._hist[-1]) if self._hist.size else False


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


def median_frequency(psd: FloatArray, freqs: FloatArray) -> float:
    """Frequency that splits the power spectrum into two equal halves (NaN if empty)."""
    total = float(psd.sum())
    if not total > 0:
        return float("nan")
    c = np.cumsum(psd)
    return float(freqs[int(np.searchsorted(c, total / 2.0))])
