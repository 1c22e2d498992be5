"""Nights as stored in InfluxDB: the read model behind the web night view and the morning report.

Everything here reads the measurements the recorder writes (docs/influx-schema.md)
with InfluxQL through :class:`~sensor_gateway.influx.InfluxQuery`:

``cramp_event``
    detector events; one :class:`Episode` is assembled from the ``prelude``,
    ``spasm_onset``, ``cramp_confirmed`` and ``cramp_end``/``spasm_cleared``
    points of one band and episode number.
``envelope``
    1 Hz summaries: EMG envelope, thresholds, accelerometer activity, signal
    quality; a night's :class:`Series` is bucketed to at most a few hundred points.
``band_status``
    battery, link, drift, lost samples: :class:`BandHealth`.

A *night* is local noon to local noon (:func:`night_of`), so a night that starts
before midnight and ends after it is one night, named after its evening. Local
time comes from an IANA zone name.  Per-night totals are InfluxDB aggregates per
hour (15 min in half-hour zones) added up per local night here, which stays exact
on daylight-saving days (InfluxDB 1.x's ``GROUP BY time(1d, 12h) tz()``, used by
the Grafana Trends dashboard, puts the hour after the change into the wrong day).

Every value put into a query is either an integer (times in ms) or goes through
:func:`quote_string` / :func:`quote_ident`; band ids are also checked with
:func:`~sensor_gateway.messages.validate_id`.  Nothing from a request reaches
InfluxQL unquoted.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray

from cramp_signal.config import DetectorConfig
from sensor_gateway.errors import ConfigError
from sensor_gateway.influx import InfluxConfig, InfluxQuery
from sensor_gateway.messages import MessageError, validate_id
from sensor_gateway.recorder import (
    EVENT_MEASUREMENT,
    STATUS_MEASUREMENT,
    SUMMARY_MEASUREMENT,
)

__all__ = [
    "AFTER_S",
    "MAX_POINTS",
    "MOVING_G",
    "SEVERITY_LABELS",
    "AfterCramp",
    "BandHealth",
    "Episode",
    "Night",
    "NightStore",
    "NightSummary",
    "Series",
    "Trends",
    "WeekSummary",
    "after_cramp",
    "assemble_episodes",
    "checked_band",
    "local_time",
    "local_zone",
    "night_containing",
    "night_of",
    "parse_night",
    "query_for",
    "quote_ident",
    "quote_string",
]

FloatArray = NDArray[np.float64]

#: Words for the detector's severity heuristic (docs/detector.md: 1, 2, 3).
SEVERITY_LABELS: Final = {1: "mild", 2: "moderate", 3: "severe"}
#: Dynamic acceleration (g, RMS over a second) at and above which the leg moved;
#: the detector's own ``still_acc_g``.
MOVING_G: Final = DetectorConfig().still_acc_g
#: Seconds after a cramp's end searched for stretching / getting up.
AFTER_S: Final = 180.0
#: Points per night series (the web view's SVG and the report's plots).
MAX_POINTS: Final = 600

_EPISODE_TYPES = ("prelude", "spasm_onset", "cramp_confirmed", "cramp_end", "spasm_cleared")
_TYPE_ORDER = {t: i for i, t in enumerate(_EPISODE_TYPES)}
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- quoting


def quote_string(value: str) -> str:
    """An InfluxQL string literal: ``'...'`` with ``\\`` and ``'`` escaped.

    Raises
    ------
    ConfigError
        If ``value`` contains a control character (InfluxQL has no escape for most).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"control character in query value {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier: ``"..."`` with ``\\`` and ``"`` escaped.

    Raises
    ------
    ConfigError
        If ``name`` contains a control character.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"control character in identifier {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def query_for(cfg: InfluxConfig) -> InfluxQuery:
    """An InfluxQL connection for ``[influx]``: 1.x credentials, or a 2.x token.

    On 2.x, InfluxQL goes through the v1-compatibility API: ``[influx].database``
    must name a DBRP mapping of the bucket (docs/dashboards.md).
    """
    token = cfg.token if cfg.version == 2 else ""
    return InfluxQuery(cfg.url, cfg.database, username=cfg.username, password=cfg.password,
                       token=token, timeout_s=cfg.timeout_s)  # fmt: skip


def checked_band(band: str) -> str:
    """``band`` if it is a valid band id (docs/mqtt.md).

    Raises
    ------
    ConfigError
        Otherwise.
    """
    try:
        return validate_id(band, "band id")
    except MessageError as exc:
        raise ConfigError(str(exc)) from None


# --------------------------------------------------------------------------- nights


def local_zone(name: str = "") -> ZoneInfo:
    """The IANA zone ``name``, or the system's zone when empty (``$TZ``, ``/etc/timezone``,
    the ``/etc/localtime`` link), falling back to UTC.

    Raises
    ------
    ConfigError
        If ``name`` is not a known zone.
    """
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {name!r} (use an IANA name)") from None
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    link = Path("/etc/localtime")
    if link.is_symlink():
        target = str(link.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    for cand in candidates:
        if cand and not cand.startswith("/"):
            try:
                return ZoneInfo(cand)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


@dataclass(frozen=True)
class Night:
    """Local noon of ``day`` to local noon of the next day, as UTC milliseconds."""

    day: date
    start_ms: int
    end_ms: int

    @property
    def name(self) -> str:
        """``YYYY-MM-DD`` of the evening."""
        return self.day.isoformat()

    @property
    def where(self) -> str:
        """The InfluxQL time condition of this night."""
        return f"time >= {self.start_ms}ms AND time < {self.end_ms}ms"


def night_of(day: date, tz: ZoneInfo) -> Night:
    """The night that starts on the evening of ``day`` in zone ``tz``."""
    start = datetime.combine(day, time(12, 0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(12, 0), tzinfo=tz)
    return Night(day, round(start.timestamp() * 1000), round(end.timestamp() * 1000))


def night_containing(ms: int, tz: ZoneInfo) -> Night:
    """The night an instant (UTC ms) belongs to."""
    local = datetime.fromtimestamp(ms / 1000.0, tz=tz)
    day = local.date() if local.hour >= 12 else local.date() - timedelta(days=1)
    return night_of(day, tz)


def parse_night(text: str) -> date:
    """``YYYY-MM-DD`` → date.

    Raises
    ------
    ConfigError
        If ``text`` is not a valid date in that form (years 2000..2099).
    """
    if not _DATE_RE.match(text):
        raise ConfigError(f"night must be YYYY-MM-DD, got {text[:40]!r}")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"no such date: {text!r}") from None
    if not 2000 <= day.year < 2100:
        raise ConfigError(f"night {text} out of range (2000..2099)")
    return day


def local_time(ms: int, tz: ZoneInfo) -> datetime:
    """UTC milliseconds → aware local time."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).astimezone(tz)


# --------------------------------------------------------------------------- records


def _f(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class Episode:
    """One detector episode: a cramp (confirmed) or a short spasm.

    Times are UTC milliseconds; ``end_ms`` is ``None`` while the episode is open.
    The measures come from the ``cramp_end`` / ``spasm_cleared`` details
    (docs/detector.md); those only a cramp has are ``None`` for a spasm.
    """

    band: str
    gateway: str
    episode: int
    onset_ms: int
    end_ms: int | None
    confirmed: bool
    duration_s: float | None = None
    peak_rms_uv: float | None = None
    mean_rms_uv: float | None = None
    intensity_vs_baseline: float | None = None
    severity: int | None = None
    median_frequency_hz: float | None = None
    quality_ok_fraction: float | None = None
    limb_still_fraction: float | None = None
    posture_changes: int | None = None
    stretch_after: bool | None = None
    prelude_s: float | None = None
    prelude_spikes: int | None = None

    @property
    def kind(self) -> str:
        """``"cramp"`` or ``"spasm"``."""
        return "cramp" if self.confirmed else "spasm"

    @property
    def severity_label(self) -> str:
        """``mild`` / ``moderate`` / ``severe`` or ``—``."""
        return SEVERITY_LABELS.get(self.severity or 0, "—")

    @property
    def key(self) -> str:
        """URL-safe identity within a night: ``<band>/<onset ms>``."""
        return f"{self.band}/{self.onset_ms}"


class _EpisodeBuilder:
    def __init__(self, row: Mapping[str, Any]) -> None:
        self.band = str(row.get("band") or "")
        self.gateway = str(row.get("gateway") or "")
        self.episode = int(row.get("episode") or 0)
        self.onset_ms = int(row["time"])
        self.end_ms: int | None = None
        self.confirmed = False
        self.details: dict[str, Any] = {}
        self.prelude_spikes: int | None = None

    def build(self) -> Episode:
        d = self.details
        sev = _f(d.get("severity"))
        posture = _f(d.get("posture_changes"))
        stretch = d.get("stretch_after")
        return Episode(
            band=self.band,
            gateway=self.gateway,
            episode=self.episode,
            onset_ms=self.onset_ms,
            end_ms=self.end_ms,
            confirmed=self.confirmed,
            duration_s=_f(d.get("duration_s")),
            peak_rms_uv=_f(d.get("peak_rms_uv")),
            mean_rms_uv=_f(d.get("mean_rms_uv")),
            intensity_vs_baseline=_f(d.get("intensity_vs_baseline")),
            severity=None if sev is None else round(sev),
            median_frequency_hz=_f(d.get("median_frequency_hz")),
            quality_ok_fraction=_f(d.get("quality_ok_fraction")),
            limb_still_fraction=_f(d.get("limb_still_fraction")),
            posture_changes=None if posture is None else round(posture),
            stretch_after=stretch if isinstance(stretch, bool) else None,
            prelude_s=_f(d.get("prelude_s")),
            prelude_spikes=self.prelude_spikes,
        )


def assemble_episodes(rows: Iterable[Mapping[str, Any]]) -> list[Episode]:
    """Episodes from ``cramp_event`` rows (any order; ``signal_quality`` rows ignored).

    An episode opens at its ``spasm_onset`` and collects the later points of the
    same band, gateway and episode number; a detector restart reuses numbers,
    which is harmless because a new onset opens a new episode.  End points
    without their onset (the onset fell before the queried range) are dropped.
    """
    ordered = sorted(
        (r for r in rows if r.get("type") in _TYPE_ORDER),
        key=lambda r: (int(r["time"]), _TYPE_ORDER[str(r["type"])]),
    )
    open_: dict[tuple[str, str, int], _EpisodeBuilder] = {}
    preludes: dict[tuple[str, str, int], int] = {}
    done: list[_EpisodeBuilder] = []
    for row in ordered:
        key = (str(row.get("band") or ""), str(row.get("gateway") or ""),
               int(row.get("episode") or 0))  # fmt: skip
        kind = row["type"]
        if kind == "prelude":
            spikes = _f(row.get("n_spikes"))
            preludes[key] = 0 if spikes is None else round(spikes)
        elif kind == "spasm_onset":
            builder = _EpisodeBuilder(row)
            builder.prelude_spikes = preludes.pop(key, None)
            if key in open_:
                done.append(open_[key])
            open_[key] = builder
        elif key in open_:
            builder = open_[key]
            if kind == "cramp_confirmed":
                builder.confirmed = True
            else:
                builder.end_ms = int(row["time"])
                builder.confirmed = builder.confirmed or kind == "cramp_end"
                builder.details = dict(row)
                done.append(open_.pop(key))
    done.extend(open_.values())
    return sorted((b.build() for b in done), key=lambda e: (e.onset_ms, e.band))


@dataclass(frozen=True)
class NightSummary:
    """Totals of one night (all bands, or the store's band)."""

    night: Night
    recorded_s: float
    ok_s: float
    cramps: int
    spasms: int
    cramp_s: float
    longest_s: float | None
    max_severity: int | None

    @property
    def recorded(self) -> bool:
        """Whether anything was recorded that night."""
        return self.recorded_s > 0 or self.cramps > 0 or self.spasms > 0

    @property
    def quality_ok(self) -> float | None:
        """Fraction of recorded seconds with good signal."""
        return self.ok_s / self.recorded_s if self.recorded_s > 0 else None


@dataclass(frozen=True)
class Series:
    """A night's envelope in buckets of ``step_s`` seconds (NaN where nothing was stored).

    ``rms_uv`` mean, ``peak_uv`` max, ``floor_uv`` / ``on_threshold_uv`` mean,
    ``acc_g`` max accelerometer activity, ``bad_s`` seconds not ``ok`` in the bucket,
    ``tilt_deg`` mean tilt of the leg (degrees from the band's -z axis, docs/detector.md).
    """

    step_s: float
    t_ms: NDArray[np.int64]
    rms_uv: FloatArray
    peak_uv: FloatArray
    floor_uv: FloatArray
    on_threshold_uv: FloatArray
    acc_g: FloatArray
    bad_s: FloatArray
    tilt_deg: FloatArray

    def __len__(self) -> int:
        return int(self.t_ms.size)

    def shown(self, values: FloatArray) -> FloatArray:
        """``values`` with NaN in buckets that had no good second at all (gap, lead off ...):
        an envelope there measures the electrode, not the muscle, and is not drawn."""
        return np.where(self.bad_s < self.step_s, values, np.nan)

    @property
    def span_ms(self) -> tuple[int, int] | None:
        """First and last bucket end, or ``None`` when empty."""
        if not self.t_ms.size:
            return None
        return int(self.t_ms[0]), int(self.t_ms[-1] + self.step_s * 1000)


@dataclass(frozen=True)
class BandHealth:
    """One band's status over a night (``band_status`` and envelope quality)."""

    band: str
    battery_last_pct: float | None
    battery_min_pct: float | None
    connected: bool | None
    lead_off: bool | None
    drift_ppm: float | None
    lost_samples: float | None
    reconnects: float | None
    reboots: float | None
    gap_s: float
    lead_off_s: float
    artefact_s: float


@dataclass(frozen=True)
class WeekSummary:
    """Seven nights ending on ``last``."""

    first: date
    last: date
    nights_recorded: int
    nights_with_cramps: int
    cramps: int
    mean_duration_s: float | None
    max_severity: int | None

    @property
    def cramps_per_night(self) -> float | None:
        """Cramps per recorded night."""
        return self.cramps / self.nights_recorded if self.nights_recorded else None


@dataclass(frozen=True)
class Trends:
    """Several weeks of nights: per night, per week, and by hour of the night."""

    nights: list[NightSummary]
    weeks: list[WeekSummary]
    hours: list[int] = field(default_factory=lambda: [0] * 24)

    @property
    def recorded(self) -> list[NightSummary]:
        """Nights with data."""
        return [n for n in self.nights if n.recorded]

    @property
    def nights_without_cramps(self) -> int:
        """Recorded nights with no cramp."""
        return sum(1 for n in self.recorded if n.cramps == 0)


@dataclass(frozen=True)
class AfterCramp:
    """What the accelerometer shows after a cramp ended."""

    moved_s: int
    first_move_s: float | None
    stretched: bool | None
    restless: bool | None

    @property
    def short(self) -> str:
        """A few words for a table cell."""
        if self.stretched is None:
            return "—"
        if self.restless:
            return "restless, probably awake"
        return "moved / stretched" if self.stretched else "lay still"

    @property
    def text(self) -> str:
        """One plain sentence."""
        if self.stretched is None:
            return "No accelerometer data after this cramp."
        parts = []
        if self.stretched:
            when = f" {self.first_move_s:.0f} s after it ended" if self.first_move_s else ""
            parts.append(f"The leg moved{when} (stretching or getting up)")
        else:
            parts.append("The leg stayed still afterwards")
        if self.restless:
            parts.append(f"moving for {self.moved_s} s in the next 3 minutes: probably awake")
        elif self.stretched:
            parts.append("then settled again")
        return ", ".join(parts) + "."


def after_cramp(episode: Episode, detail: Series) -> AfterCramp:
    """Movement in the :data:`AFTER_S` seconds after ``episode``.

    ``stretched`` is the detector's ``stretch_after`` or any second at or above
    :data:`MOVING_G` within 60 s; ``restless`` is movement in 20 s or more of
    the three minutes (a heuristic: the band cannot see eyes open).  ``detail``
    is best the 1-s series (:meth:`NightStore.around`); with coarser buckets a
    moving bucket counts as ``step_s`` seconds of movement.
    """
    if episode.end_ms is None or not detail.t_ms.size:
        return AfterCramp(0, None, episode.stretch_after, None)
    rel = (detail.t_ms - episode.end_ms) / 1000.0
    sel = (rel > 0) & (rel <= AFTER_S) & np.isfinite(detail.acc_g)
    if not sel.any():
        return AfterCramp(0, None, episode.stretch_after, None)
    moving = detail.acc_g[sel] >= MOVING_G
    moved_s = round(float(moving.sum()) * detail.step_s)
    first = float(rel[sel][moving][0]) if moved_s else None
    stretched = bool(episode.stretch_after) or (first is not None and first <= 60.0)
    return AfterCramp(moved_s, first, stretched, moved_s >= 20)


# --------------------------------------------------------------------------- the store


def _results(doc: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Rows of every statement of a multi-statement ``/query`` answer."""
    out: list[list[dict[str, Any]]] = []
    for result in doc.get("results", []):
        rows: list[dict[str, Any]] = []
        for series in result.get("series", []):
            cols = series["columns"]
            tags = series.get("tags", {})
            rows.extend({**tags, **dict(zip(cols, v, strict=True))} for v in series["values"])
        out.append(rows)
    return out


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> FloatArray:
    return np.array([v if (v := _f(r.get(name))) is not None else np.nan for r in rows])


class NightStore:
    """InfluxQL queries for nights, episodes, envelope series, band health and trends.

    Parameters
    ----------
    query
        Connection to the database the recorder writes.
    tz
        Zone the nights are local to.
    band
        Only this band (``None``: all bands together).
    """

    def __init__(self, query: InfluxQuery, tz: ZoneInfo, band: str | None = None) -> None:
        self.query = query
        self.tz = tz
        self.band = None if band is None else checked_band(band)

    # ----------------------------------------------------------------- helpers

    def night(self, day: date) -> Night:
        """The night of evening ``day`` in the store's zone."""
        return night_of(day, self.tz)

    def _band_cond(self, band: str | None = None) -> str:
        chosen = self.band if band is None else checked_band(band)
        return "" if chosen is None else f" AND {quote_ident('band')} = {quote_string(chosen)}"

    async def _statements(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        doc = await self.query.raw(";\n".join(statements))
        results = _results(doc)
        results.extend([] for _ in range(len(statements) - len(results)))
        return results

    # ----------------------------------------------------------------- nights

    def _grain(self, first: date, last: date) -> str:
        """Bucket that never straddles a local noon: 1 h, or 15 min in zones with
        half-hour offsets (India, Newfoundland, parts of Australia ...)."""
        day = first
        while day <= last + timedelta(days=1):
            offset = datetime.combine(day, time(12, 0), tzinfo=self.tz).utcoffset()
            if offset is not None and offset.total_seconds() % 3600:
                return "15m"
            day += timedelta(days=1)
        return "1h"

    async def summaries(self, first: date, last: date) -> list[NightSummary]:
        """One :class:`NightSummary` per night from ``first`` to ``last`` (inclusive).

        InfluxDB aggregates per hour (UTC-aligned buckets) and the hours are added up
        per local night here.  ``GROUP BY time(1d, 12h) tz()`` would be one step, but
        InfluxDB 1.x puts the hour after a daylight-saving change into the wrong day.
        """
        if last < first:
            raise ConfigError("the last night is before the first")
        start, end = self.night(first).start_ms, self.night(last).end_ms
        where = f"time >= {start}ms AND time < {end}ms{self._band_cond()}"
        group = f"GROUP BY time({self._grain(first, last)}) fill(none)"
        env, ev = quote_ident(SUMMARY_MEASUREMENT), quote_ident(EVENT_MEASUREMENT)
        rows = await self._statements([
            f'SELECT count("state") AS n FROM {env} WHERE {where} {group}',
            f"SELECT count(\"state\") AS n FROM {env} WHERE \"quality\" = 'ok' AND {where} {group}",
            f"SELECT count(\"event_id\") AS n FROM {ev} WHERE \"type\" = 'cramp_confirmed' "
            f"AND {where} {group}",
            f"SELECT count(\"event_id\") AS n FROM {ev} WHERE \"type\" = 'spasm_cleared' "
            f"AND {where} {group}",
            f'SELECT sum("duration_s") AS total, max("duration_s") AS longest, '
            f"max(\"severity\") AS severity FROM {ev} WHERE \"type\" = 'cramp_end' "
            f"AND {where} {group}",
        ])  # fmt: skip
        per_night: list[dict[date, list[Mapping[str, Any]]]] = []
        for stmt in rows:
            nights: dict[date, list[Mapping[str, Any]]] = {}
            for r in stmt:
                nights.setdefault(night_containing(int(r["time"]), self.tz).day, []).append(r)
            per_night.append(nights)

        def total(i: int, day: date, key: str) -> float:
            return sum(_f(r.get(key)) or 0.0 for r in per_night[i].get(day, []))

        def peak(day: date, key: str) -> float | None:
            values = [v for r in per_night[4].get(day, []) if (v := _f(r.get(key))) is not None]
            return max(values) if values else None

        out = []
        day = first
        while day <= last:
            sev = peak(day, "severity")
            out.append(NightSummary(
                night=self.night(day),
                recorded_s=total(0, day, "n"),
                ok_s=total(1, day, "n"),
                cramps=round(total(2, day, "n")),
                spasms=round(total(3, day, "n")),
                cramp_s=total(4, day, "total"),
                longest_s=peak(day, "longest"),
                max_severity=None if sev is None else round(sev),
            ))  # fmt: skip
            day += timedelta(days=1)
        return out

    async def latest_night(self) -> date | None:
        """The night of the newest envelope or event point, ``None`` if the database is empty."""
        band = self._band_cond().removeprefix(" AND ")
        where = f" WHERE {band}" if band else ""
        rows = await self._statements([
            f'SELECT last("state") FROM {quote_ident(SUMMARY_MEASUREMENT)}{where}',
            f'SELECT last("event_id") FROM {quote_ident(EVENT_MEASUREMENT)}{where}',
        ])  # fmt: skip
        times = [int(r["time"]) for stmt in rows for r in stmt]
        return night_containing(max(times), self.tz).day if times else None

    async def bands(self) -> list[str]:
        """Band ids that have stored envelope or events."""
        rows = await self._statements([
            f"SHOW TAG VALUES FROM {quote_ident(m)} WITH KEY = \"band\""
            for m in (SUMMARY_MEASUREMENT, EVENT_MEASUREMENT)
        ])  # fmt: skip
        return sorted({str(r["value"]) for stmt in rows for r in stmt})

    # ----------------------------------------------------------------- one night

    async def episodes(self, night: Night) -> list[Episode]:
        """Episodes whose onset lies in ``night`` (ends up to one hour later are found)."""
        where = (f"time >= {night.start_ms - 600_000}ms AND time < {night.end_ms + 3_600_000}ms"
                 f"{self._band_cond()}")  # fmt: skip
        types = " OR ".join(f'"type" = {quote_string(t)}' for t in _EPISODE_TYPES)
        rows = await self.query.rows(
            f"SELECT * FROM {quote_ident(EVENT_MEASUREMENT)} WHERE ({types}) AND {where}"
        )
        return [e for e in assemble_episodes(rows) if night.start_ms <= e.onset_ms < night.end_ms]

    async def series(
        self, night: Night, *, start_ms: int | None = None, end_ms: int | None = None,
        max_points: int = MAX_POINTS, band: str | None = None,
    ) -> Series:  # fmt: skip
        """The envelope of ``night`` (or ``[start_ms, end_ms)`` within it), bucketed.

        The bucket is the smallest whole number of seconds that keeps the series
        at ``max_points`` or fewer over the span that holds data.
        """
        env = quote_ident(SUMMARY_MEASUREMENT)
        lo = night.start_ms if start_ms is None else max(start_ms, night.start_ms - 3_600_000)
        hi = night.end_ms if end_ms is None else min(end_ms, night.end_ms + 3_600_000)
        where = f"time >= {lo}ms AND time < {hi}ms{self._band_cond(band)}"
        ends = await self._statements([
            f'SELECT first("state") FROM {env} WHERE {where}',
            f'SELECT last("state") FROM {env} WHERE {where}',
        ])  # fmt: skip
        if not ends[0] or not ends[1]:
            return _empty_series()
        first, last = int(ends[0][0]["time"]), int(ends[1][0]["time"])
        step = max(1, math.ceil((last - first) / 1000.0 / max_points))
        lo = first - 1000
        where = f"time >= {lo}ms AND time <= {last}ms{self._band_cond(band)}"
        group = f"GROUP BY time({step}s, {lo % (step * 1000)}ms) fill(none)"
        rows = await self._statements([
            f'SELECT mean("rms_uv") AS rms, max("peak_uv") AS peak, '
            f'mean("noise_floor_uv") AS floor, mean("on_threshold_uv") AS thr, '
            f'max("acc_activity_g") AS acc, mean("tilt_deg") AS tilt '
            f"FROM {env} WHERE {where} {group}",
            f"SELECT count(\"state\") AS bad FROM {env} WHERE \"quality\" <> 'ok' "
            f"AND {where} {group}",
        ])  # fmt: skip
        main = rows[0]
        bad = {int(r["time"]): _f(r.get("bad")) or 0.0 for r in rows[1]}
        t = np.array([int(r["time"]) for r in main], dtype=np.int64)
        return Series(
            step_s=float(step),
            t_ms=t,
            rms_uv=_column(main, "rms"),
            peak_uv=_column(main, "peak"),
            floor_uv=_column(main, "floor"),
            on_threshold_uv=_column(main, "thr"),
            acc_g=_column(main, "acc"),
            bad_s=np.array([bad.get(int(x), 0.0) for x in t]),
            tilt_deg=_column(main, "tilt"),
        )

    async def around(self, night: Night, episode: Episode, before_s: float = 60.0) -> Series:
        """The 1-s envelope from ``before_s`` before the onset to :data:`AFTER_S` after the end."""
        end = episode.end_ms if episode.end_ms is not None else episode.onset_ms
        span = (end - episode.onset_ms) / 1000.0 + before_s + AFTER_S
        return await self.series(
            night,
            start_ms=episode.onset_ms - round(before_s * 1000),
            end_ms=end + round(AFTER_S * 1000) + 1000,
            max_points=max(1, math.ceil(span)) + 2,
            band=episode.band,
        )

    async def health(self, night: Night) -> list[BandHealth]:
        """Per band: battery, link, drift, lost samples, reconnects and bad-signal seconds."""
        where = f"{night.where}{self._band_cond()}"
        env, st = quote_ident(SUMMARY_MEASUREMENT), quote_ident(STATUS_MEASUREMENT)
        quality = [
            f'SELECT count("state") AS n FROM {env} WHERE "quality" = {quote_string(q)} '
            f'AND {where} GROUP BY "band"'
            for q in ("gap", "lead_off", "artefact")
        ]
        rows = await self._statements([
            f'SELECT last("battery_pct") AS battery, min("battery_pct") AS battery_min, '
            f'last("drift_ppm") AS drift, spread("missing_emg") AS lost, '
            f'spread("connects") AS reconnects, spread("reboots") AS reboots '
            f'FROM {st} WHERE {where} GROUP BY "band"',
            f'SELECT last("connected") AS connected FROM {st} WHERE {where} GROUP BY "band"',
            f'SELECT last("lead_off") AS lead_off FROM {st} WHERE {where} GROUP BY "band"',
            *quality,
        ])  # fmt: skip
        per: list[dict[str, Mapping[str, Any]]] = [{str(r["band"]): r for r in s} for s in rows]
        bands = sorted(set().union(*per))
        out = []
        for band in bands:
            st_row, conn, lead, gap, lo, art = (p.get(band, {}) for p in per)
            connected, lead_off = conn.get("connected"), lead.get("lead_off")
            out.append(BandHealth(
                band=band,
                battery_last_pct=_f(st_row.get("battery")),
                battery_min_pct=_f(st_row.get("battery_min")),
                connected=connected if isinstance(connected, bool) else None,
                lead_off=lead_off if isinstance(lead_off, bool) else None,
                drift_ppm=_f(st_row.get("drift")),
                lost_samples=_f(st_row.get("lost")),
                reconnects=_f(st_row.get("reconnects")),
                reboots=_f(st_row.get("reboots")),
                gap_s=_f(gap.get("n")) or 0.0,
                lead_off_s=_f(lo.get("n")) or 0.0,
                artefact_s=_f(art.get("n")) or 0.0,
            ))  # fmt: skip
        return out

    # ----------------------------------------------------------------- trends

    async def trends(self, last: date, weeks: int) -> Trends:
        """``weeks`` weeks of nights ending with ``last``.

        Raises
        ------
        ConfigError
            If ``weeks`` is not 1..104.
        """
        if not 1 <= weeks <= 104:
            raise ConfigError(f"weeks must be 1..104, got {weeks}")
        first = last - timedelta(days=7 * weeks - 1)
        nights = await self.summaries(first, last)
        start, end = nights[0].night.start_ms, nights[-1].night.end_ms
        onsets = await self.query.rows(
            f'SELECT "event_id" FROM {quote_ident(EVENT_MEASUREMENT)} '
            f"WHERE \"type\" = 'cramp_confirmed' AND time >= {start}ms AND time < {end}ms"
            f"{self._band_cond()}"
        )
        hours = [0] * 24
        for row in onsets:
            hours[local_time(int(row["time"]), self.tz).hour] += 1
        week_list = [_week(nights[i : i + 7]) for i in range(0, len(nights), 7)]
        return Trends(nights=nights, weeks=week_list, hours=hours)

    async def close(self) -> None:
        """Close the InfluxDB connection."""
        await self.query.close()


def _week(nights: Sequence[NightSummary]) -> WeekSummary:
    recorded = [n for n in nights if n.recorded]
    cramps = sum(n.cramps for n in recorded)
    ends = [n for n in recorded if n.cramps]
    total = sum(n.cramp_s for n in ends)
    sev = [n.max_severity for n in recorded if n.max_severity is not None]
    return WeekSummary(
        first=nights[0].night.day,
        last=nights[-1].night.day,
        nights_recorded=len(recorded),
        nights_with_cramps=len(ends),
        cramps=cramps,
        mean_duration_s=total / cramps if cramps else None,
        max_severity=max(sev) if sev else None,
    )


def _empty_series() -> Series:
    empty = np.zeros(0)
    return Series(1.0, np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty, empty, empty)
