"""Server-rendered inline SVG charts for the night view (no JavaScript, nothing external).

Every chart is an ``<svg viewBox="0 0 W H">`` that scales to its container; colours
come from CSS classes (``static/style.css``) so the dark screen theme and the
light print theme both apply.  Text is escaped with :func:`markupsafe.escape`.
The EMG envelope is drawn on a log scale: a resting floor of a few µV and a
cramp of a few hundred µV both stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
from markupsafe import Markup, escape

from sensor_gateway.nights import MOVING_G, Episode, FloatArray, NightSummary, Series, local_time

__all__ = ["cramp_chart", "hour_histogram", "night_bars", "timeline"]

W = 800.0
LEFT, RIGHT = 64.0, 12.0
FONT = 15


@dataclass(frozen=True)
class _XAxis:
    t0_ms: int
    t1_ms: int

    def x(self, ms: float) -> float:
        span = max(1, self.t1_ms - self.t0_ms)
        return LEFT + (ms - self.t0_ms) / span * (W - LEFT - RIGHT)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _svg(height: float, body: list[str], label: str) -> Markup:
    head = (f'<svg class="chart-svg" viewBox="0 0 {W:.0f} {height:.0f}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
            f'font-size="{FONT}">')  # fmt: skip
    return Markup(head + f"<title>{escape(label)}</title>" + "".join(body) + "</svg>")


def _time_ticks(ax: _XAxis, tz: ZoneInfo, top: float, bottom: float) -> list[str]:
    """Vertical grid lines and local-time labels at whole hours (or 10/30 min for short spans)."""
    span_min = (ax.t1_ms - ax.t0_ms) / 60000.0
    step = next((m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180) if span_min / m <= 8), 240)
    start = local_time(ax.t0_ms, tz).replace(second=0, microsecond=0)
    start = start.replace(minute=(start.minute // step) * step if step < 60 else 0)
    out = []
    tick = start
    while (ms := tick.timestamp() * 1000) <= ax.t1_ms:
        edge = LEFT + 20 <= ax.x(ms) <= W - RIGHT - 20
        if ms >= ax.t0_ms and edge and (step < 60 or tick.hour % (step // 60) == 0):
            x = ax.x(ms)
            out.append(f'<line class="grid" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{top}" '
                       f'y2="{bottom}"/>'
                       f'<text class="axis" x="{_fmt(x)}" y="{bottom + FONT + 2}" '
                       f'text-anchor="middle">{tick:%H:%M}</text>')  # fmt: skip
        tick = (tick + timedelta(minutes=step)).astimezone(tz)
    return out


def _log_y(top: float, bottom: float, lo: float, hi: float) -> Callable[[float], float]:
    a, b = math.log10(lo), math.log10(hi)

    def y(v: float) -> float:
        lv = math.log10(min(max(v, lo), hi))
        return bottom - (lv - a) / (b - a) * (bottom - top)

    return y


def _path(xs: Sequence[float], ys: Sequence[float], cls: str) -> str:
    """A polyline broken where a value is missing (NaN)."""
    parts: list[str] = []
    pen = False
    for x, y in zip(xs, ys, strict=True):
        if not math.isfinite(y):
            pen = False
            continue
        parts.append(f"{'L' if pen else 'M'}{_fmt(x)} {_fmt(y)}")
        pen = True
    return f'<path class="{cls}" d="{" ".join(parts)}"/>' if parts else ""


def _envelope(series: Series, ax: _XAxis, top: float, bottom: float) -> list[str]:
    rms, peak = series.shown(series.rms_uv), series.shown(series.peak_uv)
    finite = np.concatenate([peak[np.isfinite(peak)], rms[np.isfinite(rms) & (rms > 0)]])
    hi = max(10.0, float(finite.max()) * 1.3) if finite.size else 100.0
    lo = max(0.3, min(1.0, float(np.percentile(finite, 1)) * 0.5)) if finite.size else 1.0
    y = _log_y(top, bottom, lo, hi)
    xs = [ax.x(float(t) + series.step_s * 500) for t in series.t_ms]
    out = [f'<rect class="plot-bg" x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" '
           f'height="{bottom - top}"/>']  # fmt: skip
    decade = 10 ** math.floor(math.log10(lo))
    while decade <= hi:
        for m in (1, 3):
            v = decade * m
            if lo <= v <= hi:
                out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{_fmt(y(v))}" '
                           f'y2="{_fmt(y(v))}"/><text class="axis" x="{LEFT - 6}" '
                           f'y="{_fmt(y(v) + 5)}" text-anchor="end">{v:g}</text>')  # fmt: skip
        decade *= 10
    out += [
        _path(xs, [y(v) if math.isfinite(v) else math.nan for v in peak], "peak"),
        _path(xs, [y(v) if math.isfinite(v) else math.nan for v in rms], "rms"),
        _path(xs, [y(v) if math.isfinite(v) else math.nan for v in series.on_threshold_uv],
              "threshold"),
        _path(xs, [y(v) if math.isfinite(v) else math.nan for v in series.floor_uv], "floor"),
        f'<text class="axis" x="{LEFT - 6}" y="{top - 6}" text-anchor="end">µV</text>',
    ]  # fmt: skip
    return out


def _marks(
    series: Series,
    ax: _XAxis,
    values: FloatArray,
    *,
    cls: str,
    span: tuple[float, float],
    height: Callable[[float], float | None],
) -> list[str]:
    """One rectangle per bucket whose ``height(value)`` (a fraction of ``span``) is not None."""
    top, bottom = span
    width = max(1.0, ax.x(series.step_s * 1000) - ax.x(0))
    out = []
    for t, v in zip(series.t_ms, values, strict=True):
        frac = height(float(v))
        if frac is not None:
            h = frac * (bottom - top)
            out.append(f'<rect class="{cls}" x="{_fmt(ax.x(float(t)))}" y="{_fmt(bottom - h)}" '
                       f'width="{_fmt(width)}" height="{_fmt(h)}"/>')  # fmt: skip
    return out


def _movement(series: Series, ax: _XAxis, top: float, bottom: float) -> list[str]:
    """Movement bars: height grows with the square root of the activity, full at 0.3 g;
    over them the leg's tilt as a line, 0 deg (on the back) at the bottom, 180 deg at the top."""
    out = [f'<rect class="plot-bg" x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" '
           f'height="{bottom - top}"/>'
           f'<text class="axis" x="{LEFT - 6}" y="{_fmt((top + bottom) / 2 + 5)}" '
           f'text-anchor="end">move</text>']  # fmt: skip

    def height(g: float) -> float | None:
        return min(1.0, math.sqrt(g / 0.3)) if g >= MOVING_G else None

    out += _marks(series, ax, series.acc_g, cls="move", span=(top, bottom), height=height)
    xs = [ax.x(float(t) + series.step_s * 500) for t in series.t_ms]
    ys = [bottom - float(v) / 180.0 * (bottom - top) for v in series.tilt_deg]
    return [*out, _path(xs, ys, "tilt")]


def _quality(series: Series, ax: _XAxis, top: float, bottom: float) -> list[str]:
    """A strip: green where every second was ok, violet where any was not."""
    out = [f'<text class="axis" x="{LEFT - 6}" y="{_fmt(bottom - 1)}" '
           f'text-anchor="end">signal</text>'
           f'<rect class="quality-ok" x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" '
           f'height="{bottom - top}"/>']  # fmt: skip
    return out + _marks(series, ax, series.bad_s, cls="quality-bad", span=(top, bottom),
                        height=lambda bad: 1.0 if bad > 0 else None)  # fmt: skip


def timeline(
    series: Series,
    episodes: Sequence[Episode],
    tz: ZoneInfo,
    link: Callable[[Episode], str],
) -> Markup:
    """One night: episode lane (cramps link to their page), envelope, movement, signal quality.

    Parameters
    ----------
    series
        The night's bucketed envelope.
    episodes
        The night's episodes.
    tz
        Zone for the time axis.
    link
        URL of an episode's detail page.
    """
    times = [e.onset_ms for e in episodes] + [e.end_ms or e.onset_ms for e in episodes]
    span = series.span_ms
    if span is not None:
        times += list(span)
    if not times:
        return _svg(60, ['<text class="axis" x="400" y="35" text-anchor="middle">'
                         "nothing recorded</text>"], "empty night")  # fmt: skip
    ax = _XAxis(min(times), max(*times, min(times) + 60_000))
    lane_top, lane_bottom = 8.0, 58.0
    body = [f'<rect class="plot-bg" x="{LEFT}" y="{lane_top}" width="{W - LEFT - RIGHT}" '
            f'height="{lane_bottom - lane_top}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{lane_bottom - 18}" '
            f'text-anchor="end">cramps</text>']  # fmt: skip
    for e in episodes:
        x0 = ax.x(e.onset_ms)
        x1 = max(ax.x(e.end_ms or e.onset_ms), x0 + 4.0)
        sev = e.severity or 1
        h = (lane_bottom - lane_top) * (0.35 + 0.2 * sev if e.confirmed else 0.25)
        label = (f"{e.kind} at {local_time(e.onset_ms, tz):%H:%M:%S}, "
                 f"{e.duration_s or 0:.0f} s, {e.severity_label}")  # fmt: skip
        shape = (f'<rect class="ep-{e.kind}" x="{_fmt(x0)}" y="{_fmt(lane_bottom - h)}" '
                 f'width="{_fmt(x1 - x0)}" height="{_fmt(h)}"><title>{escape(label)}</title>'
                 f"</rect>")  # fmt: skip
        if e.confirmed:
            shape = f'<a href="{escape(link(e))}">{shape}</a>'
        body.append(shape)
    body += _envelope(series, ax, 80.0, 250.0)
    body += _movement(series, ax, 262.0, 312.0)
    body += _quality(series, ax, 322.0, 334.0)
    body += _time_ticks(ax, tz, lane_top, 334.0)
    return _svg(360, body, "night timeline: cramps, EMG envelope, movement, signal quality")


def cramp_chart(series: Series, episode: Episode, tz: ZoneInfo) -> Markup:
    """The 1-s envelope and movement around one cramp, its span shaded."""
    span = series.span_ms
    end = episode.end_ms or episode.onset_ms
    t0 = min(episode.onset_ms - 60_000, span[0] if span else episode.onset_ms)
    t1 = max(end + 60_000, span[1] if span else end)
    ax = _XAxis(t0, t1)
    body = _envelope(series, ax, 20.0, 230.0)
    body += _movement(series, ax, 250.0, 314.0)
    body.append(
        f'<rect class="ep-span" x="{_fmt(ax.x(episode.onset_ms))}" y="20" '
        f'width="{_fmt(max(2.0, ax.x(end) - ax.x(episode.onset_ms)))}" height="294"/>'
    )
    body += _time_ticks(ax, tz, 20.0, 314.0)
    return _svg(340, body, "EMG envelope and movement around the cramp")


def _nice(v: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``v``."""
    k = 10 ** math.floor(math.log10(v))
    return float(next(m * k for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * k >= v - 1e-9))


def night_bars(
    nights: Sequence[NightSummary],
    value: Callable[[NightSummary], float | None],
    unit: str,
    label: str,
    *,
    integer: bool = False,
    scale_top: float | None = None,
) -> Markup:
    """One bar per night; recorded nights with no value get a dot, unrecorded nights nothing.

    The scale ends at ``scale_top`` or at a round number above the largest value.
    """
    n = max(1, len(nights))
    vals = [value(x) if x.recorded else None for x in nights]
    top_v = scale_top or _nice(max([v for v in vals if v is not None] + [1.0]))
    ticks = ([float(i) for i in range(1, int(top_v) + 1)] if integer and top_v <= 5
             else [top_v / 2, top_v])  # fmt: skip
    top, bottom = 30.0, 200.0
    slot = (W - LEFT - RIGHT) / n
    body = [f'<rect class="plot-bg" x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" '
            f'height="{bottom - top}"/>'
            f'<text class="axis" x="{LEFT}" y="{top - 8}">{escape(unit)}</text>']  # fmt: skip
    for tick in ticks:
        y = bottom - tick / top_v * (bottom - top)
        body.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{_fmt(y)}" '
                    f'y2="{_fmt(y)}"/><text class="axis" x="{LEFT - 6}" y="{_fmt(y + 5)}" '
                    f'text-anchor="end">{tick:g}</text>')  # fmt: skip
    for i, (night, v) in enumerate(zip(nights, vals, strict=True)):
        x = LEFT + i * slot
        cx = x + slot / 2
        if night.recorded and (v is None or v == 0):
            body.append(f'<circle class="none-dot" cx="{_fmt(cx)}" cy="{bottom - 6}" r="4">'
                        f"<title>{night.night.name}: none</title></circle>")  # fmt: skip
        elif v is not None:
            h = v / top_v * (bottom - top)
            body.append(f'<rect class="bar" x="{_fmt(x + slot * 0.15)}" y="{_fmt(bottom - h)}" '
                        f'width="{_fmt(max(2.0, slot * 0.7))}" height="{_fmt(h)}"><title>'
                        f"{night.night.name}: {v:.3g} {escape(unit)}</title></rect>")  # fmt: skip
        if n <= 14 or night.night.day.weekday() == 0:
            body.append(f'<text class="axis" x="{_fmt(cx)}" y="{bottom + FONT + 2}" '
                        f'text-anchor="middle">{night.night.day:%d.%m}</text>')  # fmt: skip
    return _svg(bottom + 26, body, label)


#: Hours of the night in order, evening first (a night runs noon to noon).
NIGHT_HOURS = [*range(12, 24), *range(12)]


def hour_histogram(hours: Sequence[int]) -> Markup:
    """Cramp onsets per local hour, noon to noon."""
    counts = [hours[h] for h in NIGHT_HOURS]
    top_v = max([*counts, 1])
    top, bottom = 16.0, 170.0
    slot = (W - LEFT - RIGHT) / 24
    body = [f'<rect class="plot-bg" x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" '
            f'height="{bottom - top}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{top + 10}" text-anchor="end">'
            f"{top_v}</text>"]  # fmt: skip
    for i, (h, c) in enumerate(zip(NIGHT_HOURS, counts, strict=True)):
        x = LEFT + i * slot
        if c:
            bh = c / top_v * (bottom - top)
            body.append(f'<rect class="bar" x="{_fmt(x + 2)}" y="{_fmt(bottom - bh)}" '
                        f'width="{_fmt(slot - 4)}" height="{_fmt(bh)}"><title>{h:02d}:00–'
                        f"{(h + 1) % 24:02d}:00: {c}</title></rect>")  # fmt: skip
        if h % 3 == 0:
            body.append(f'<text class="axis" x="{_fmt(x + slot / 2)}" y="{bottom + FONT + 2}" '
                        f'text-anchor="middle">{h:02d}</text>')  # fmt: skip
    return _svg(bottom + 26, body, "cramps by hour of the night")
