"""The morning report: one night as a self-contained HTML page plus PNG plots.

Two sources, one :class:`NightReport`:

* :func:`from_influx` reads the night from InfluxDB through
  :class:`~sensor_gateway.nights.NightStore` (what ``crampwatch record`` stored),
  with the previous weeks for comparison;
* :func:`from_recording` runs the streaming detector over an EDF+/BDF+/CSV
  recording (chunk by chunk, bounded memory) and builds the same report without
  any server; it has no earlier weeks to compare with.

:func:`write_report` renders the HTML (inline CSS, plots embedded as PNG data
URIs, no external resource) and writes the plots as PNG files next to it.  The
advice section says plainly when to see a doctor and what relieves a cramp.
"""

from __future__ import annotations

import base64
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import NDArray

from cramp_signal.config import DetectorConfig
from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent, EnvelopeSummary
from sensor_gateway.alerts import WEEKLY_ADVICE
from sensor_gateway.errors import ConfigError, RecordingError
from sensor_gateway.nights import (
    AFTER_S,
    MAX_POINTS,
    MOVING_G,
    AfterCramp,
    BandHealth,
    Episode,
    Night,
    NightStore,
    NightSummary,
    Series,
    Trends,
    after_cramp,
    assemble_episodes,
    local_time,
    night_containing,
)
from sensor_gateway.web.render import environment

__all__ = [
    "NightReport",
    "advice",
    "bucket",
    "default_output",
    "from_influx",
    "from_recording",
    "write_report",
]

#: Band name used for a recording read from a file.
FILE_BAND = "recording"
#: Cramps drawn one by one in the report (the rest are in the table).
MAX_CRAMP_PLOTS = 6
#: Nights with cramps in the last seven that count as "frequent".
FREQUENT_NIGHTS = 3

COLOURS = {"rms": "#1f5fa8", "peak": "#9bb7d8", "threshold": "#8250df", "floor": "#6e7681",
           "cramp": "#cf222e", "spasm": "#d4a72c", "move": "#2e8b3e", "bar": "#1f5fa8",
           "tilt": "#0a7f8a"}  # fmt: skip


@dataclass(frozen=True)
class NightReport:
    """Everything the report shows about one night.

    Attributes
    ----------
    night, tz
        The night (local noon to noon) and its zone.
    source
        Where the data came from (database or file), for the page footer.
    summary, episodes, series, health
        As :class:`~sensor_gateway.nights.NightStore` returns them.
    details
        1-s series around each cramp, by :attr:`Episode.key`.
    history
        The weeks before this night, or ``None`` (a file has none).
    """

    night: Night
    tz: ZoneInfo
    source: str
    summary: NightSummary
    episodes: tuple[Episode, ...]
    series: Series
    health: tuple[BandHealth, ...]
    details: dict[str, Series] = field(default_factory=dict)
    history: Trends | None = None

    @property
    def cramps(self) -> list[Episode]:
        """The confirmed cramps, in time order."""
        return [e for e in self.episodes if e.confirmed]

    def after(self, episode: Episode) -> AfterCramp:
        """What happened after ``episode`` (from its 1-s series when there is one)."""
        return after_cramp(episode, self.details.get(episode.key, self.series))


# --------------------------------------------------------------------------- InfluxDB


async def from_influx(store: NightStore, day: date, weeks: int = 4) -> NightReport:
    """The report of night ``day`` from InfluxDB, compared with the ``weeks`` before it.

    Raises
    ------
    SinkError
        If InfluxDB cannot be queried.
    ConfigError
        If ``weeks`` is not 1..104.
    """
    night = store.night(day)
    summary = (await store.summaries(day, day))[0]
    episodes = await store.episodes(night)
    series = await store.series(night)
    health = await store.health(night)
    details = {e.key: await store.around(night, e) for e in episodes if e.confirmed}
    history = await store.trends(day - timedelta(days=1), weeks)
    where = f"InfluxDB database {store.query.database!r}"
    if store.band:
        where += f", band {store.band}"
    return NightReport(night, store.tz, where, summary, tuple(episodes), series, tuple(health),
                       details, history)  # fmt: skip


# --------------------------------------------------------------------------- recording file


def _row(ev: DetectorEvent, start_ms: int) -> dict[str, Any]:
    """A detector event as the ``cramp_event`` row InfluxDB would return."""
    return {**ev.details, "time": start_ms + round(ev.t_s * 1000), "band": FILE_BAND,
            "gateway": "", "type": ev.type, "episode": ev.episode}  # fmt: skip


def _series_1s(summaries: Sequence[EnvelopeSummary], start_ms: int) -> tuple[Series, list[str]]:
    def col(values: Sequence[float | None]) -> NDArray[np.float64]:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    quality = [s.quality for s in summaries]
    series = Series(
        step_s=1.0,
        t_ms=np.array([start_ms + round((s.t_s - 1.0) * 1000) for s in summaries], dtype=np.int64),
        rms_uv=col([s.rms_uv for s in summaries]),
        peak_uv=col([s.peak_uv for s in summaries]),
        floor_uv=col([s.noise_floor_uv for s in summaries]),
        on_threshold_uv=col([s.on_threshold_uv for s in summaries]),
        acc_g=col([s.acc_activity_g for s in summaries]),
        bad_s=np.array([0.0 if q == "ok" else 1.0 for q in quality]),
        tilt_deg=col([s.tilt_deg for s in summaries]),
    )
    return series, quality


def bucket(series: Series, max_points: int = MAX_POINTS) -> Series:
    """A 1-s series in buckets of whole seconds, like ``GROUP BY time(Ns)``: mean envelope,
    max peak and movement, mean floor, threshold and tilt, summed bad seconds."""
    if len(series) <= max_points:
        return series
    span_s = (series.t_ms[-1] - series.t_ms[0]) / 1000.0
    step = max(1, math.ceil(span_s / max_points))
    idx = ((series.t_ms - series.t_ms[0]) // (step * 1000)).astype(np.int64)
    n = int(idx[-1]) + 1

    def mean(x: NDArray[np.float64]) -> NDArray[np.float64]:
        ok = np.isfinite(x)
        total = np.bincount(idx[ok], weights=x[ok], minlength=n)
        count = np.bincount(idx[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def peak(x: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.full(n, np.nan)
        np.fmax.at(out, idx, x)
        return out

    present = np.bincount(idx, minlength=n) > 0
    t = series.t_ms[0] + np.arange(n, dtype=np.int64) * step * 1000
    return Series(
        step_s=float(step),
        t_ms=t[present],
        rms_uv=mean(series.rms_uv)[present],
        peak_uv=peak(series.peak_uv)[present],
        floor_uv=mean(series.floor_uv)[present],
        on_threshold_uv=mean(series.on_threshold_uv)[present],
        acc_g=peak(series.acc_g)[present],
        bad_s=np.bincount(idx, weights=series.bad_s, minlength=n).astype(np.float64)[present],
        tilt_deg=mean(series.tilt_deg)[present],
    )


def _window(series: Series, lo_ms: int, hi_ms: int) -> Series:
    sel = (series.t_ms >= lo_ms) & (series.t_ms < hi_ms)
    return Series(series.step_s, series.t_ms[sel], series.rms_uv[sel], series.peak_uv[sel],
                  series.floor_uv[sel], series.on_threshold_uv[sel], series.acc_g[sel],
                  series.bad_s[sel], series.tilt_deg[sel])  # fmt: skip


def from_recording(
    path: Path,
    tz: ZoneInfo,
    *,
    day: date | None = None,
    config: DetectorConfig | None = None,
    progress: bool = False,
) -> NightReport:
    """Run the detector over a recording and build its report (no InfluxDB).

    Parameters
    ----------
    path
        EDF+/BDF+/CSV recording (docs/recordings.md).
    tz
        Zone of the night; a recording whose start has no zone is taken as local.
    day
        The night expected; ``None``: the night the recording starts in.
    config
        Detector parameters.
    progress
        Show a progress bar on stderr.

    Raises
    ------
    RecordingError
        If the file cannot be read.
    ConfigError
        If ``day`` is not the night the recording starts in.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from sensor_gateway.recordings import open_recording  # noqa: PLC0415

    reader = open_recording(path)
    info = reader.info
    start = info.start if info.start.tzinfo else info.start.replace(tzinfo=tz)
    start_ms = round(start.astimezone(UTC).timestamp() * 1000)
    night = night_containing(start_ms, tz)
    if day is not None and day != night.day:
        raise ConfigError(f"{path}: the recording starts in the night of {night.name}, "
                          f"not {day.isoformat()}")  # fmt: skip
    acc_fs = float(info.acc[0].fs_hz) if info.acc else None
    det = CrampDetector(float(info.emg.fs_hz), acc_fs, config=config or DetectorConfig())
    events: list[DetectorEvent] = []
    summaries: list[EnvelopeSummary] = []
    bar = tqdm(total=round(float(info.duration_s)), unit="s", file=sys.stderr,
               disable=not progress, desc=path.name)  # fmt: skip
    with bar:
        for chunk in reader.chunks(10.0):
            events += det.process(chunk.emg_uv, chunk.acc_g if acc_fs is not None else None)
            summaries += det.drain_summaries()
            bar.update(round(chunk.emg_uv.size / det.emg_fs))
        events += det.finish()
        summaries += det.drain_summaries()
    if not summaries:
        raise RecordingError(f"{path}: shorter than one second, nothing to report")
    episodes = assemble_episodes(_row(e, start_ms) for e in events)
    full, quality = _series_1s(summaries, start_ms)
    cramps = [e for e in episodes if e.confirmed]
    ends = [e for e in cramps if e.duration_s is not None]
    severities = [e.severity for e in cramps if e.severity is not None]
    summary = NightSummary(
        night=night,
        recorded_s=float(len(summaries)),
        ok_s=float(quality.count("ok")),
        cramps=len(cramps),
        spasms=sum(1 for e in episodes if not e.confirmed and e.end_ms is not None),
        cramp_s=sum(e.duration_s or 0.0 for e in ends),
        longest_s=max((e.duration_s or 0.0 for e in ends), default=None),
        max_severity=max(severities, default=None),
    )
    health = BandHealth(FILE_BAND, None, None, None, None, None, None, None, None,
                        gap_s=float(quality.count("gap")),
                        lead_off_s=float(quality.count("lead_off")),
                        artefact_s=float(quality.count("artefact")))  # fmt: skip
    details = {
        e.key: _window(full, e.onset_ms - 60_000,
                       (e.end_ms or e.onset_ms) + round(AFTER_S * 1000) + 1000)
        for e in cramps
    }  # fmt: skip
    return NightReport(night, tz, f"recording {path.name}", summary, tuple(episodes),
                       bucket(full), (health,), details)  # fmt: skip


# --------------------------------------------------------------------------- advice


def advice(report: NightReport) -> list[str]:
    """Plain sentences: what this night suggests, when to see a doctor, what helps."""
    out: list[str] = []
    recent: list[NightSummary] = [report.summary]
    if report.history is not None:
        recent += [n for n in report.history.nights[-6:] if n.recorded]
    with_cramps = sum(1 for n in recent if n.cramps)
    if with_cramps >= FREQUENT_NIGHTS:
        out.append(f"You had cramps on {with_cramps} of your last {len(recent)} recorded "
                   "nights. Cramps this frequent are worth discussing with a doctor.")  # fmt: skip
    if any(e.severity == 3 for e in report.cramps):
        out.append("At least one cramp this night was severe (long or very strong). If severe "
                   "cramps keep coming, see a doctor.")  # fmt: skip
    return [*out, *WEEKLY_ADVICE]


# --------------------------------------------------------------------------- plots


def _minutes(t_ms: NDArray[np.int64], step_s: float = 0.0) -> NDArray[np.float64]:
    """Plot x: minutes since 1970 (UTC) of each bucket's middle."""
    return (t_ms.astype(np.float64) + step_s * 500.0) / 60_000.0


def _time_axis(ax: Axes, tz: ZoneInfo) -> None:
    """Local ``HH:MM`` ticks every 1 min ... 3 h, about eight across."""
    lo, hi = ax.get_xlim()
    step = next((m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180) if (hi - lo) / m <= 8), 240)
    ax.xaxis.set_major_locator(ticker.MultipleLocator(step))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(
        lambda x, _pos: local_time(round(x * 60_000), tz).strftime("%H:%M")))  # fmt: skip


def _envelope_axes(ax: Axes, series: Series) -> None:
    x = _minutes(series.t_ms, series.step_s)
    rms = series.shown(series.rms_uv)
    ax.plot(x, series.shown(series.peak_uv), color=COLOURS["peak"], lw=0.7, label="peak")
    ax.plot(x, rms, color=COLOURS["rms"], lw=1.4, label="EMG envelope")
    ax.plot(x, series.on_threshold_uv, color=COLOURS["threshold"], lw=1.0, ls="--",
            label="onset threshold")  # fmt: skip
    ax.plot(x, series.floor_uv, color=COLOURS["floor"], lw=0.8, ls=":", label="noise floor")
    positive = rms[np.isfinite(rms) & (rms > 0)]
    if positive.size:
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(0.1, 0.5 * float(np.percentile(positive, 1))))
    ax.set_ylabel("µV")
    ax.grid(alpha=0.3)


def plot_night(report: NightReport) -> Figure:
    """Overview: episodes, envelope with threshold, movement and the leg's tilt."""
    fig = Figure(figsize=(10, 5.2), dpi=100, layout="constrained")
    lane, env, move = fig.subplots(3, 1, sharex=True, height_ratios=[0.7, 2.6, 1.0])
    for e in report.episodes:
        x0 = e.onset_ms / 60_000.0
        width = max(((e.end_ms or e.onset_ms) - e.onset_ms) / 60_000.0, 0.33)
        height = 0.4 + 0.2 * (e.severity or 0) if e.confirmed else 0.3
        lane.bar(x0, height, width=width, align="edge", color=COLOURS[e.kind])
    lane.set_ylim(0, 1.1)
    lane.set_yticks([])
    lane.set_ylabel("cramps")
    _envelope_axes(env, report.series)
    env.legend(loc="upper right", fontsize=8, ncols=4)
    x = _minutes(report.series.t_ms, report.series.step_s)
    move.fill_between(x, np.nan_to_num(report.series.acc_g), color=COLOURS["move"], step="mid")
    move.axhline(MOVING_G, color=COLOURS["floor"], lw=0.8, ls=":")
    move.set_ylabel("movement (g)")
    move.grid(alpha=0.3)
    tilt = move.twinx()  # 0 on the back, 90 on a side, 180 face down (docs/detector.md)
    tilt.plot(x, report.series.tilt_deg, color=COLOURS["tilt"], lw=1.0)
    tilt.set_ylim(0.0, 180.0)
    tilt.set_yticks([0.0, 90.0, 180.0])
    tilt.set_ylabel("tilt (°)", color=COLOURS["tilt"])
    _time_axis(move, report.tz)
    fig.suptitle(f"Night of {report.night.day:%a %d %b %Y}")
    return fig


def plot_cramps(report: NightReport) -> Figure | None:
    """One panel per cramp (at most :data:`MAX_CRAMP_PLOTS`): envelope around it, span shaded."""
    cramps = report.cramps[:MAX_CRAMP_PLOTS]
    if not cramps:
        return None
    cols = min(2, len(cramps))
    rows = math.ceil(len(cramps) / cols)
    fig = Figure(figsize=(10, 2.8 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, e in zip(axes, cramps, strict=False):
        detail = report.details.get(e.key, report.series)
        _envelope_axes(ax, detail)
        ax.axvspan(e.onset_ms / 60_000.0, (e.end_ms or e.onset_ms) / 60_000.0,
                   color=COLOURS["cramp"], alpha=0.15)  # fmt: skip
        moving = detail.acc_g >= MOVING_G
        if moving.any():
            xs = _minutes(detail.t_ms[moving], detail.step_s)
            ax.plot(xs, np.full(xs.size, ax.get_ylim()[0]), "|", color=COLOURS["move"], ms=12,
                    label="leg moved")  # fmt: skip
        _time_axis(ax, report.tz)
        ax.set_title(f"{local_time(e.onset_ms, report.tz):%H:%M} · "
                     f"{e.duration_s or 0:.0f} s · {e.severity_label}", fontsize=10)  # fmt: skip
    for ax in axes[len(cramps) :]:
        ax.set_visible(False)
    return fig


def plot_weeks(report: NightReport) -> Figure | None:
    """Cramps per night over the previous weeks and this night."""
    if report.history is None:
        return None
    nights = [*report.history.nights, report.summary]
    fig = Figure(figsize=(10, 2.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    for i, n in enumerate(nights):
        colour = COLOURS["cramp"] if i == len(nights) - 1 else COLOURS["bar"]
        if n.cramps:
            ax.bar(i, n.cramps, width=0.7, color=colour)
        elif n.recorded:
            ax.plot(i, 0.05, "o", color=COLOURS["move"], ms=5)
    ax.set_xlim(-0.6, len(nights) - 0.4)
    ax.xaxis.set_major_locator(ticker.FixedLocator(list(range(len(nights) - 1, -1, -7))))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(
        lambda x, _pos: f"{nights[round(x)].night.day:%d %b}" if 0 <= round(x) < len(nights)
        else ""))  # fmt: skip
    ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel("cramps per night")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("This night (red) and the weeks before; green dot = recorded, no cramp",
                 fontsize=10)  # fmt: skip
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# --------------------------------------------------------------------------- HTML


def write_report(report: NightReport, html_path: Path) -> list[Path]:
    """Write ``html_path`` and its PNG plots (``<stem>-night.png`` ...) next to it.

    Returns
    -------
    list of Path
        The HTML file first, then the PNG files.

    Raises
    ------
    ConfigError
        If the files cannot be written.
    """
    figures = {"night": plot_night(report), "cramps": plot_cramps(report),
               "weeks": plot_weeks(report)}  # fmt: skip
    pngs = {name: _png(fig) for name, fig in figures.items() if fig is not None}
    images = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
              for name, data in pngs.items()}  # fmt: skip
    history = report.history
    before = list(history.recorded) if history is not None else []
    html = environment().get_template("report.html").render(
        r=report, s=report.summary, images=images, advice=advice(report), before=before,
        nights_before=len(before), cramp_nights_before=sum(1 for n in before if n.cramps),
        cramps_before=sum(n.cramps for n in before),
        hm=lambda ms, fmt="%H:%M": "—" if ms is None else local_time(ms, report.tz).strftime(fmt),
        generated=datetime.now(report.tz),
    )  # fmt: skip
    written = [html_path]
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html, encoding="utf-8")
        for name, data in pngs.items():
            png = html_path.with_name(f"{html_path.stem}-{name}.png")
            png.write_bytes(data)
            written.append(png)
    except OSError as exc:
        raise ConfigError(f"{html_path}: cannot write the report: {exc.strerror}") from None
    return written


def default_output(day: date) -> Path:
    """``crampwatch-report-YYYY-MM-DD.html`` in the current directory."""
    return Path(f"crampwatch-report-{day.isoformat()}.html")
