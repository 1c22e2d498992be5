"""Map band clock ticks to wall-clock UTC: robust drift + offset fit on (tick, receive time) pairs.

The band stamps every data packet with the 32-bit tick (``TICK_HZ`` = 32768 Hz
nominal) of its first EMG sample.  The gateway only knows *when it received* a
packet, and BLE receive times are late by a random, one-sided delay (connection
interval, retransmissions, host scheduling): ``host = a + (1 + d) * device + delay``
with ``delay >= 0``.

:class:`ClockMapper` estimates the offset ``a`` and the drift ``d`` from the
**lower envelope** of the pairs, which is where the delay is smallest:

1. pairs are binned by host time (``bin_s``, default 1 s) and only the pair with
   the smallest residual ``host - device`` is kept per bin (the least delayed
   packet of that second) — the idea behind the linear-programming skew
   estimator of Moon, Skelly & Towsley [1]_;
2. the drift is the **Theil–Sen** estimate [2]_ [3]_ over a sliding window of
   those bin minima: the median of slopes between bins half a window apart
   (a robust regression with a 29 % breakdown point, so a few very late bins or a
   host clock step do not move it);
3. the offset is a low quantile (``offset_quantile``) of the bin minima's residuals
   about that slope, so the map hugs the lower envelope without trusting any
   single pair.

Ticks are unwrapped across the u32 wrap (every 36.4 h).  A tick that jumps
backwards by more than the reorder tolerance, or forwards inconsistently with the
elapsed host time, means the band rebooted: the fit restarts
(:attr:`ClockMapper.segment` increments) and the caller learns about it from
:meth:`ClockMapper.observe`.

References
----------
.. [1] S. B. Moon, P. Skelly, D. Towsley, "Estimation and removal of clock skew
   from network delay measurements", Proc. IEEE INFOCOM (1999) 227-234.
.. [2] H. Theil, "A rank-invariant method of linear and polynomial regression
   analysis", Proc. KNAW 53 (1950) 386-392.
.. [3] P. K. Sen, "Estimates of the regression coefficient based on Kendall's
   tau", J. Am. Stat. Assoc. 63 (1968) 1379-1389.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sensor_gateway.protocol import TICK_HZ, TICK_MODULUS

__all__ = ["U32", "ClockMapper", "ClockObservation", "ClockSnapshot", "scaled_clock"]

#: Modulus of the band's tick counter.
U32 = TICK_MODULUS


def scaled_clock(speed: float) -> Callable[[], float]:
    """A host clock (POSIX seconds) that runs ``speed`` times as fast as ``time.time``.

    Bands simulated at ``crampwatch band --speed N`` live ``N`` band seconds per real
    second; stamping their packets with a clock running ``N`` x from now keeps ticks,
    timestamps and drift estimates consistent.  ``speed == 1`` returns ``time.time``.

    Raises
    ------
    ValueError
        If ``speed`` is not a positive finite number.
    """
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    if speed == 1.0:
        return time.time
    origin = time.time()

    def now() -> float:
        return origin + (time.time() - origin) * speed

    return now


@dataclass(frozen=True)
class ClockObservation:
    """What :meth:`ClockMapper.observe` learned from one pair.

    Attributes
    ----------
    ext_tick
        The tick unwrapped to a monotonic 64-bit count within the current segment.
    segment
        Clock segment number (0 at start, +1 after every detected reboot).
    reboot
        ``True`` when this pair started a new segment (band reboot or explicit reset).
    late
        ``True`` when the tick is slightly behind the newest one (a reordered packet);
        such pairs are mapped but not used for the fit.
    """

    ext_tick: int
    segment: int
    reboot: bool
    late: bool


@dataclass(frozen=True)
class ClockSnapshot:
    """A frozen tick → wall mapping: ``wall = wall0 + (ext_tick - ext0) * seconds_per_tick``."""

    ext0: int
    wall0: float
    seconds_per_tick: float

    def wall_of(self, ext_tick: float) -> float:
        """Wall-clock POSIX seconds of an unwrapped tick."""
        return self.wall0 + (ext_tick - self.ext0) * self.seconds_per_tick


class ClockMapper:
    """Streaming tick → UTC mapper with drift estimation and reboot detection.

    Parameters
    ----------
    tick_hz
        Nominal tick rate of the band clock (Hz).
    window_s
        Length of the sliding fit window in host seconds (default 15 min).  Longer
        windows average more jitter; shorter ones follow temperature-driven drift.
    bin_s
        Host-time bin: one lower-envelope point is kept per bin.
    min_bins
        Bins needed before a drift is estimated; until then the nominal rate is used
        with the lowest observed offset.
    offset_quantile
        Quantile of the window's residuals used as the offset (0 = pure lower envelope).
    reorder_tolerance_s
        A tick up to this far behind the newest one is a reordered packet, not a reboot.
    jump_tolerance_s
        A forward tick step may disagree with the elapsed host time by this much
        (plus ``jump_tolerance_ppm`` of the elapsed time) before it counts as a reboot.
    jump_tolerance_ppm
        Relative part of the forward-consistency tolerance.
    """

    def __init__(
        self,
        tick_hz: float = TICK_HZ,
        *,
        window_s: float = 900.0,
        bin_s: float = 1.0,
        min_bins: int = 8,
        offset_quantile: float = 0.1,
        reorder_tolerance_s: float = 2.0,
        jump_tolerance_s: float = 5.0,
        jump_tolerance_ppm: float = 2000.0,
    ) -> None:
        if not (tick_hz > 0 and math.isfinite(tick_hz)):
            raise ValueError(f"tick_hz must be positive, got {tick_hz!r}")
        if window_s <= bin_s or bin_s <= 0:
            raise ValueError("need 0 < bin_s < window_s")
        self.tick_hz = float(tick_hz)
        self.window_s = float(window_s)
        self.bin_s = float(bin_s)
        self.min_bins = max(2, int(min_bins))
        self.offset_quantile = float(offset_quantile)
        self._reorder_ticks = int(reorder_tolerance_s * tick_hz)
        self._jump_s = float(jump_tolerance_s)
        self._jump_rel = float(jump_tolerance_ppm) * 1e-6
        self.segment = -1
        self.reboots = 0
        #: The final mapping of the previous segment (set at a reboot), else ``None``.
        self.previous: ClockSnapshot | None = None
        self._reset_state()

    # ------------------------------------------------------------------ state

    def _reset_state(self) -> None:
        self._last_raw: int | None = None
        self._last_ext = 0
        self._last_host = 0.0
        self._host0 = 0.0
        self._tick0 = 0
        # bins: (bin index, x = device seconds since segment start, y = host - host0)
        self._bins: deque[tuple[int, float, float]] = deque()
        self._slope = 1.0
        self._intercept: float | None = None
        self._dirty = False

    def reset(self) -> None:
        """Forget the fit and start a new segment at the next :meth:`observe`."""
        self._reset_state()

    @property
    def started(self) -> bool:
        """``True`` once at least one pair has been observed in the current segment."""
        return self._last_raw is not None

    @property
    def drift_ppm(self) -> float:
        """Estimated band clock error in ppm (positive: the band's clock runs slow).

        Defined by ``host_seconds = (1 + drift) * device_seconds``; ``nan`` until
        ``min_bins`` bins have been seen.
        """
        self._refit()
        if len(self._bins) < self.min_bins:
            return math.nan
        return (self._slope - 1.0) * 1e6

    @property
    def converged(self) -> bool:
        """``True`` once the drift estimate rests on ``min_bins`` or more bins."""
        return len(self._bins) >= self.min_bins

    # ------------------------------------------------------------------ input

    def observe(self, tick: int, host_time: float, *, reboot: bool = False) -> ClockObservation:
        """Feed one (device tick, host receive time) pair.

        Parameters
        ----------
        tick
            Raw u32 tick of the packet's first sample.
        host_time
            Host receive time (POSIX seconds, UTC).
        reboot
            Force a new segment (e.g. the sequence tracker saw a seq reset).

        Returns
        -------
        ClockObservation
            The unwrapped tick and whether a new segment started.
        """
        tick = int(tick) % U32
        started_new = False
        if self._last_raw is None or reboot:
            started_new = True
        else:
            fwd = (tick - self._last_raw) % U32
            if fwd >= U32 // 2:  # backwards
                back = U32 - fwd
                if back <= self._reorder_ticks:
                    ext = self._last_ext - back
                    return ClockObservation(ext, self.segment, False, True)
                started_new = True
            else:
                dt_dev = fwd / self.tick_hz
                dt_host = host_time - self._last_host
                tol = self._jump_s + self._jump_rel * max(dt_host, 0.0)
                if abs(dt_dev - dt_host) > tol:
                    started_new = True
        if started_new:
            if self._last_raw is not None:
                self.reboots += 1
                self.previous = self.snapshot()
            self._reset_state()
            self.segment += 1
            self._last_raw = tick
            self._last_ext = tick
            self._last_host = host_time
            self._host0 = host_time
            self._tick0 = tick
            self._add_pair(tick, host_time)
            return ClockObservation(tick, self.segment, True, False)
        assert self._last_raw is not None
        self._last_ext += (tick - self._last_raw) % U32
        self._last_raw = tick
        self._last_host = host_time
        self._add_pair(self._last_ext, host_time)
        return ClockObservation(self._last_ext, self.segment, False, False)

    def _add_pair(self, ext_tick: int, host_time: float) -> None:
        x = (ext_tick - self._tick0) / self.tick_hz
        y = host_time - self._host0
        b = math.floor(y / self.bin_s)
        if self._bins and self._bins[-1][0] == b:
            _, bx, by = self._bins[-1]
            if y - x < by - bx:
                self._bins[-1] = (b, x, y)
                self._dirty = True
        else:
            self._bins.append((b, x, y))
            self._dirty = True
            limit = b - round(self.window_s / self.bin_s)
            while self._bins and self._bins[0][0] <= limit:
                self._bins.popleft()

    # ------------------------------------------------------------------ fit

    def _refit(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        arr = np.asarray(self._bins, dtype=np.float64)
        x, y = arr[:, 1], arr[:, 2]
        n = x.size
        if n >= self.min_bins:
            h = n // 2
            dx = x[h:] - x[: n - h]
            ok = dx > 0
            if np.any(ok):
                slopes = (y[h:] - y[: n - h])[ok] / dx[ok]
                self._slope = float(np.median(slopes))
            resid = y - self._slope * x
            self._intercept = float(np.quantile(resid, self.offset_quantile))
        else:
            self._slope = 1.0
            self._intercept = float(np.min(y - x))

    # ------------------------------------------------------------------ output

    def to_wall(self, ext_tick: ArrayLike) -> NDArray[np.float64]:
        """Map unwrapped ticks of the current segment to POSIX seconds (UTC).

        Parameters
        ----------
        ext_tick
            Ticks as returned in :attr:`ClockObservation.ext_tick` (any shape).

        Returns
        -------
        numpy.ndarray
            Wall-clock times, same shape, float64 POSIX seconds.

        Raises
        ------
        RuntimeError
            If nothing has been observed yet.
        """
        if self._last_raw is None:
            raise RuntimeError("ClockMapper.to_wall before any observe()")
        self._refit()
        assert self._intercept is not None
        x = (np.asarray(ext_tick, dtype=np.float64) - self._tick0) / self.tick_hz
        out: NDArray[np.float64] = self._host0 + self._intercept + self._slope * x
        return out

    def wall_of(self, ext_tick: int) -> float:
        """Scalar version of :meth:`to_wall`."""
        return float(self.to_wall(ext_tick))

    def seconds_per_tick(self) -> float:
        """Current estimate of one band tick in host seconds."""
        self._refit()
        return self._slope / self.tick_hz

    def snapshot(self) -> ClockSnapshot:
        """The current mapping, frozen (for data of a segment that has ended)."""
        self._refit()
        assert self._intercept is not None
        return ClockSnapshot(self._tick0, self._host0 + self._intercept, self._slope / self.tick_hz)
