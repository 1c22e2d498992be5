"""PNG plots of individual cramps and false alarms (``crampwatch evaluate --plot DIR``).

Each plot covers one *window*: a truth cramp (detected or missed) or a false
alarm.  Three panels share the time axis:

1. the EMG, band-pass filtered for display (zero-phase, so it is not what the
   causal detector saw), with truth spans shaded;
2. a 50-ms moving RMS of that display signal, the detector's own 1-s RMS, noise
   floor and on-threshold from its :class:`EnvelopeSummary` records (one per
   second), ``floor x off_ratio`` recomputed from the config (the release
   threshold is that or the resting 99th percentile, whichever is higher), and
   a marker for every detector event (solid at ``t_s``, dashed at ``emitted_at_s``);
3. the accelerometer magnitude ``|a|`` in g.

The signal is not kept from the evaluation pass; the source is read (or the
night regenerated, which is deterministic) a second time and the detector re-run,
keeping only the samples and summaries that fall in a window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import signal as sps

from cramp_signal.config import DetectorConfig
from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent
from sensor_gateway.evaluation import CHUNK_S, RecordingResult, open_source

WindowKind = Literal["TP", "FN", "FA"]

#: Seconds shown before and after the span of interest.
PAD_S = 8.0
#: Window of the display envelope (s), the detector's ``fast_window_s``.
ENVELOPE_S = 0.05
#: Longest span (s) shown in full; longer cramps are cut after this much.
MAX_SPAN_S = 90.0

EVENT_COLOURS = {
    "spasm_onset": "tab:orange",
    "cramp_confirmed": "tab:red",
    "cramp_end": "tab:purple",
    "spasm_cleared": "tab:green",
    "prelude": "tab:olive",
    "signal_quality": "tab:gray",
}


@dataclass(frozen=True)
class PlotWindow:
    """A time window to plot: ``[t0_s, t1_s]`` around one item of interest."""

    kind: WindowKind
    index: int
    t0_s: float
    t1_s: float
    focus_s: float


def windows_for(result: RecordingResult, limit: int | None = None) -> list[PlotWindow]:
    """The windows worth plotting: every truth cramp (TP or FN) and every false alarm.

    For burst-labelled recordings the "false alarms" are the cramps raised (none
    of their bursts is a cramp).  At most ``limit`` windows, in time order.
    """
    spans: list[tuple[WindowKind, float, float]] = []
    if result.cramp is not None:
        c = result.cramp
        for m in c.matches:
            start = min(m.truth_onset_s, m.detected.onset_s)
            stop = max(m.truth_end_s, m.detected.end_s or m.truth_end_s)
            spans.append(("TP", start, stop))
        if result.truth is not None:
            ends = result.truth.offsets_s or result.truth.onsets_s
            for t in c.missed:
                spans.append(("FN", result.truth.onsets_s[t], ends[t]))
        for fa in c.false_alarms:
            spans.append(("FA", fa.onset_s, fa.end_s or fa.onset_s + 5.0))
    elif result.burst is not None:
        for e in result.episodes:
            if e.confirmed:
                spans.append(("FA", e.onset_s, e.end_s or e.onset_s + 5.0))
    spans.sort(key=lambda s: s[1])
    if limit is not None:
        spans = spans[: max(limit, 0)]
    out = []
    for i, (kind, start, span_end) in enumerate(spans):
        stop = min(span_end, start + MAX_SPAN_S)
        out.append(
            PlotWindow(
                kind=kind,
                index=i,
                t0_s=max(0.0, start - PAD_S),
                t1_s=min(result.duration_s, stop + PAD_S),
                focus_s=start,
            )
        )
    return out


@dataclass(frozen=True)
class WindowData:
    """Signal captured for one window."""

    window: PlotWindow
    emg_t: NDArray[np.float64]
    emg_uv: NDArray[np.float64]
    acc_t: NDArray[np.float64]
    acc_mag_g: NDArray[np.float64]
    summaries: tuple[Any, ...]


def capture(
    result: RecordingResult,
    windows: Sequence[PlotWindow],
    config: DetectorConfig | None = None,
    chunk_s: float = CHUNK_S,
) -> list[WindowData]:
    """Re-read the source, re-run the detector and keep what falls in ``windows``."""
    if not windows:
        return []
    opened = open_source(result.source)
    fs, acc_fs = opened.emg_fs, opened.acc_fs
    det = CrampDetector(fs, acc_fs, config=config or DetectorConfig())
    emg: list[list[NDArray[np.float64]]] = [[] for _ in windows]
    emg_start: list[int | None] = [None for _ in windows]
    acc: list[list[NDArray[np.float64]]] = [[] for _ in windows]
    acc_start: list[int | None] = [None for _ in windows]
    summ: list[list[Any]] = [[] for _ in windows]
    last_t1 = max(w.t1_s for w in windows)
    for chunk in opened.chunks(chunk_s):
        n = chunk.emg_uv.shape[0]
        t0 = chunk.start_sample / fs
        t1 = (chunk.start_sample + n) / fs
        det.process(chunk.emg_uv, chunk.acc_g if acc_fs is not None else None)
        summaries = det.drain_summaries()
        for w_i, w in enumerate(windows):
            if t1 <= w.t0_s or t0 > w.t1_s:
                continue
            a = max(0, math.ceil(w.t0_s * fs) - chunk.start_sample)
            b = min(n, math.floor(w.t1_s * fs) + 1 - chunk.start_sample)
            if b > a:
                if emg_start[w_i] is None:
                    emg_start[w_i] = chunk.start_sample + a
                emg[w_i].append(np.asarray(chunk.emg_uv[a:b], dtype=np.float64))
            if acc_fs is not None and chunk.acc_g.shape[0]:
                k0 = math.ceil(t0 * acc_fs)
                ka = max(0, math.ceil(w.t0_s * acc_fs) - k0)
                kb = min(chunk.acc_g.shape[0], math.floor(w.t1_s * acc_fs) + 1 - k0)
                if kb > ka:
                    if acc_start[w_i] is None:
                        acc_start[w_i] = k0 + ka
                    rows = np.asarray(chunk.acc_g[ka:kb], dtype=np.float64)
                    acc[w_i].append(np.sqrt(np.sum(rows * rows, axis=1)))
            summ[w_i].extend(s for s in summaries if w.t0_s <= s.t_s <= w.t1_s)
        if t0 > last_t1:
            break
    out = []
    for w_i, w in enumerate(windows):
        e = np.concatenate(emg[w_i]) if emg[w_i] else np.zeros(0)
        e0 = emg_start[w_i] or 0
        g = np.concatenate(acc[w_i]) if acc[w_i] else np.zeros(0)
        g0 = acc_start[w_i] or 0
        out.append(
            WindowData(
                window=w,
                emg_t=(e0 + np.arange(e.size)) / fs,
                emg_uv=e,
                acc_t=(g0 + np.arange(g.size)) / acc_fs if acc_fs else np.zeros(0),
                acc_mag_g=g,
                summaries=tuple(summ[w_i]),
            )
        )
    return out


def display_filter(x: NDArray[np.float64], fs: float) -> NDArray[np.float64]:
    """Zero-phase 20 Hz–(450 Hz or 0.45 fs) band-pass plus 50/60 Hz notches, for display only.

    NaN samples (gaps) stay NaN; they are bridged with zeros while filtering.
    """
    if x.size < 64:
        return x.copy()
    finite = np.isfinite(x)
    y = np.where(finite, x, 0.0)
    high = min(450.0, 0.45 * fs)
    sos = sps.butter(4, [20.0, high], btype="bandpass", fs=fs, output="sos")
    y = sps.sosfiltfilt(sos, y - np.mean(y))
    for f0 in (50.0, 60.0):
        if f0 < 0.45 * fs:
            b, a = sps.iirnotch(f0, 30.0, fs=fs)
            y = sps.filtfilt(b, a, y)
    return np.where(finite, y, np.nan)


def moving_rms(x: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """Centred moving RMS over ``n`` samples (NaN counted as 0), same length as ``x``."""
    if x.size == 0:
        return x.copy()
    sq: NDArray[np.float64] = np.where(np.isfinite(x), x, 0.0) ** 2
    c: NDArray[np.float64] = np.concatenate(([0.0], np.cumsum(sq)))
    half = n // 2
    idx = np.arange(x.size)
    lo = np.clip(idx - half, 0, x.size)
    hi = np.clip(idx - half + n, 0, x.size)
    out: NDArray[np.float64] = np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))
    return out


def _summary_series(summaries: Sequence[Any], name: str) -> NDArray[np.float64] | None:
    if not summaries or not hasattr(summaries[0], name):
        return None
    return np.array([float(getattr(s, name)) for s in summaries], dtype=np.float64)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def render(
    data: WindowData,
    result: RecordingResult,
    path: Path,
    *,
    off_ratio: float | None = None,
) -> Path:
    """Draw one window to ``path`` (PNG) and return the path."""
    w = data.window
    fig = Figure(figsize=(12, 7.5), dpi=100)
    ax_emg, ax_env, ax_acc = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 2.0, 1.0]}
    )
    title = f"{result.name}  {w.kind} #{w.index}  at {w.focus_s:.1f} s"
    fig.suptitle(title, fontsize=11)

    filtered = display_filter(data.emg_uv, result.emg_fs)
    if data.emg_uv.size:
        ax_emg.plot(data.emg_t, filtered, lw=0.4, color="tab:blue")
        env = moving_rms(filtered, max(1, round(ENVELOPE_S * result.emg_fs)))
        ax_env.plot(data.emg_t, env, color="tab:blue", lw=0.8, label="50-ms RMS (display)")
    ax_emg.set_ylabel("EMG µV (filtered)")

    st = _summary_series(data.summaries, "t_s")
    if st is not None:
        # summaries cover the second that ends at t_s: draw them as steps over that second
        for attr, label, style in (
            ("rms_uv", "1-s RMS (detector)", {"color": "black", "lw": 1.2}),
            ("noise_floor_uv", "noise floor", {"color": "tab:gray", "ls": "--"}),
            ("on_threshold_uv", "on threshold", {"color": "tab:red", "ls": ":"}),
        ):
            series = _summary_series(data.summaries, attr)
            if series is not None:
                ax_env.step(st, series, where="pre", label=label, **style)
        floor = _summary_series(data.summaries, "noise_floor_uv")
        if floor is not None and off_ratio is not None:
            ax_env.step(
                st,
                floor * off_ratio,
                where="pre",
                label="floor × off_ratio (release ≥ this)",
                color="tab:purple",
                ls=":",
            )
    if data.emg_uv.size or st is not None:
        ax_env.set_yscale("log")
    ax_env.set_ylabel("envelope")

    truth = result.truth
    if truth is not None:
        ends = truth.offsets_s or truth.onsets_s
        shown = [(a, b, "cramp") for a, b in zip(truth.onsets_s, ends, strict=True)]
        shown += [(e.start_s, e.end_s, e.kind) for e in truth.events if e.kind != "cramp"]
        for start, stop, kind in shown:
            if stop < w.t0_s or start > w.t1_s:
                continue
            colour = "tab:red" if kind == "cramp" else "tab:cyan"
            for ax in (ax_emg, ax_env, ax_acc):
                ax.axvspan(start, max(stop, start + 0.05), color=colour, alpha=0.12, lw=0)
            ax_emg.annotate(
                kind,
                (start, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                va="top",
                color=colour,
            )

    seen: set[str] = set()
    for ev in _events_in(result.events, w.t0_s, w.t1_s):
        colour = EVENT_COLOURS.get(ev.type, "black")
        ev_label = ev.type if ev.type not in seen else None
        seen.add(ev.type)
        ax_env.axvline(ev.t_s, color=colour, lw=1.2, label=ev_label)
        ax_emg.axvline(ev.t_s, color=colour, lw=0.8)
        if ev.emitted_at_s != ev.t_s:
            ax_env.axvline(ev.emitted_at_s, color=colour, lw=0.8, ls="--")
    ax_env.legend(loc="upper right", fontsize=7, ncol=3)

    if data.acc_mag_g.size:
        ax_acc.plot(data.acc_t, data.acc_mag_g, lw=0.7, color="tab:brown")
    ax_acc.set_ylabel("|acc| g")
    ax_acc.set_xlabel("time (s); dashed markers: emission time")
    ax_acc.set_xlim(w.t0_s, w.t1_s)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _events_in(events: Sequence[DetectorEvent], t0: float, t1: float) -> list[DetectorEvent]:
    return [e for e in events if t0 <= e.t_s <= t1 or t0 <= e.emitted_at_s <= t1]


def plot_result(
    result: RecordingResult,
    out_dir: Path,
    *,
    limit: int | None = None,
    config: DetectorConfig | None = None,
    chunk_s: float = CHUNK_S,
    off_ratio: float | None = None,
) -> list[Path]:
    """Write one PNG per window of :func:`windows_for`; return the paths written."""
    config = config or DetectorConfig()
    if off_ratio is None:
        off_ratio = config.off_ratio
    windows = windows_for(result, limit)
    paths = []
    for data in capture(result, windows, config, chunk_s):
        w = data.window
        name = f"{_safe(result.name)}_{w.kind}_{w.index:02d}_{w.focus_s:.0f}s.png"
        paths.append(render(data, result, out_dir / name, off_ratio=off_ratio))
    return paths
