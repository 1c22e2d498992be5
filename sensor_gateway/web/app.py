"""The night view: a small aiohttp app rendering InfluxDB data as HTML with inline SVG.

Pages (all server-rendered, no JavaScript, no external resources):

``/``
    the list of nights (``?weeks=1..104``, default ``[dashboard].weeks``);
``/nights/YYYY-MM-DD``
    one night: totals, a timeline (cramps, envelope, movement, signal quality),
    the episodes and the band's health;
``/nights/YYYY-MM-DD/cramps/<band>/<onset ms>``
    one cramp: envelope around it, duration, severity, what happened after;
``/trends``
    cramps, duration and severity per night, time of night, weeks compared.

Every page takes ``?band=<id>`` to show one band only.  Parameters are validated
(dates, band ids, integers in range) and answered with 400 when wrong; every
value reaching InfluxQL is quoted by :mod:`sensor_gateway.nights`.  A
Content-Security-Policy allows nothing but this server's own stylesheet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from sensor_gateway.errors import ConfigError, SinkError
from sensor_gateway.influx import InfluxQuery
from sensor_gateway.nights import (
    Episode,
    NightStore,
    after_cramp,
    checked_band,
    local_time,
    night_containing,
    parse_night,
)
from sensor_gateway.web import svg
from sensor_gateway.web.render import environment

__all__ = ["DashboardConfig", "create_app"]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class DashboardConfig:
    """``[dashboard]`` table (env ``CRAMPWATCH_DASHBOARD_<FIELD>``).

    Attributes
    ----------
    host, port
        Where the night view listens (loopback by default: put a reverse proxy
        with authentication in front before opening it to a network).
    timezone
        IANA zone the nights are local to; empty = the system's zone.
    band
        Show only this band; empty = all bands.
    weeks
        Weeks shown in the list of nights and the trends by default.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    timezone: str = ""
    band: str = ""
    weeks: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not 1 <= self.weeks <= 104:
            raise ValueError(f"weeks must be 1..104, got {self.weeks}")
        if self.band:
            checked_band(self.band)


# --------------------------------------------------------------------------- app


@dataclass(frozen=True)
class _Ctx:
    query: InfluxQuery
    tz: ZoneInfo
    band: str | None
    weeks: int
    env: jinja2.Environment


CTX: Final = web.AppKey("crampwatch", _Ctx)


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 6 or not lo <= int(raw) <= hi:
        raise ConfigError(f"{name} must be a whole number {lo}..{hi}")
    return int(raw)


class _Page:
    """Per-request helpers: the store (with ``?band=``), links, rendering."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.ctx = request.app[CTX]
        band = request.query.get("band") or self.ctx.band
        self.store = NightStore(self.ctx.query, self.ctx.tz, band or None)
        self.band = self.store.band

    def url(self, path: str, **params: object) -> str:
        """``path`` with ``?band=`` carried along plus ``params``."""
        query: dict[str, object] = {"band": self.band} if self.band else {}
        query.update({k: v for k, v in params.items() if v is not None})
        return path + ("?" + urlencode(query) if query else "")

    def night_url(self, day: date) -> str:
        """Link to one night."""
        return self.url(f"/nights/{day.isoformat()}")

    def cramp_url(self, episode: Episode) -> str:
        """Link to one cramp."""
        day = night_containing(episode.onset_ms, self.ctx.tz)
        return self.url(f"/nights/{day.name}/cramps/{episode.band}/{episode.onset_ms}")

    def render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        """Render ``template`` with the common values."""
        page = self.ctx.env.get_template(template).render(
            tz=self.ctx.tz.key, band=self.band, url=self.url, night_url=self.night_url,
            cramp_url=self.cramp_url, hm=self.hm, **values,
        )  # fmt: skip
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")

    def hm(self, ms: int | None, fmt: str = "%H:%M") -> str:
        """Local time of UTC ms."""
        return "—" if ms is None else local_time(ms, self.ctx.tz).strftime(fmt)

    async def last_night(self) -> date:
        """The newest night with data, or last night by the clock."""
        latest = await self.store.latest_night()
        if latest is not None:
            return latest
        now = datetime.now(self.ctx.tz)
        return now.date() - timedelta(days=1 if now.hour >= 12 else 2)


async def nights_page(request: web.Request) -> web.Response:
    """``/``: recorded nights, newest first."""
    page = _Page(request)
    weeks = _int(request, "weeks", page.ctx.weeks, 1, 104)
    last = await page.last_night()
    nights = await page.store.summaries(last - timedelta(days=7 * weeks - 1), last)
    recorded = [n for n in reversed(nights) if n.recorded]
    return page.render("nights.html", title="Nights", nights=recorded, weeks=weeks,
                       latest=recorded[0] if recorded else None)  # fmt: skip


async def night_page(request: web.Request) -> web.Response:
    """``/nights/{day}``: one night."""
    page = _Page(request)
    day = parse_night(request.match_info["day"])
    night = page.store.night(day)
    summary = (await page.store.summaries(day, day))[0]
    episodes = await page.store.episodes(night)
    series = await page.store.series(night)
    health = await page.store.health(night)
    chart = svg.timeline(series, episodes, page.ctx.tz, page.cramp_url)
    return page.render("night.html", title=f"Night of {day:%a %d %b %Y}", day=day,
                       summary=summary, episodes=episodes, health=health, chart=chart,
                       prev_day=day - timedelta(days=1), next_day=day + timedelta(days=1),
                       afters={e.key: after_cramp(e, series) for e in episodes})  # fmt: skip


async def cramp_page(request: web.Request) -> web.Response:
    """``/nights/{day}/cramps/{band}/{onset}``: one cramp."""
    page = _Page(request)
    day = parse_night(request.match_info["day"])
    raw_onset = request.match_info["onset"]
    if not raw_onset.isdigit() or len(raw_onset) > 15:
        raise ConfigError("onset must be milliseconds since 1970")
    onset = int(raw_onset)
    store = NightStore(page.ctx.query, page.ctx.tz, request.match_info["band"])
    night = store.night(day)
    match = [e for e in await store.episodes(night) if e.onset_ms == onset]
    if not match:
        raise web.HTTPNotFound(text="no such cramp")
    episode = match[0]
    detail = await store.around(night, episode)
    after = after_cramp(episode, detail)
    chart = svg.cramp_chart(detail, episode, page.ctx.tz)
    return page.render("cramp.html", title=f"Cramp at {page.hm(onset)}", day=day, e=episode,
                       after=after, chart=chart)  # fmt: skip


async def trends_page(request: web.Request) -> web.Response:
    """``/trends``: weeks of nights."""
    page = _Page(request)
    weeks = _int(request, "weeks", page.ctx.weeks, 1, 104)
    last = await page.last_night()
    trends = await page.store.trends(last, weeks)
    charts = {
        "cramps": svg.night_bars(trends.nights, lambda n: float(n.cramps), "cramps",
                                 "cramps per night", integer=True),
        "longest": svg.night_bars(trends.nights, lambda n: n.longest_s, "s",
                                  "longest cramp per night"),
        "severity": svg.night_bars(trends.nights, lambda n: n.max_severity and float(
            n.max_severity), "1 mild · 2 moderate · 3 severe", "worst severity per night",
            integer=True, scale_top=3.0),
        "hours": svg.hour_histogram(trends.hours),
    }  # fmt: skip
    return page.render("trends.html", title="Trends", trends=trends, weeks=weeks, charts=charts,
                       last=last)  # fmt: skip


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Clear error pages: 400 for bad parameters, 503 when InfluxDB fails; security headers."""
    ctx = request.app[CTX]

    def error(status: int, title: str, message: str) -> web.Response:
        text = ctx.env.get_template("error.html").render(
            title=title, message=message, tz=ctx.tz.key, band=None,
            url=lambda p, **_: p)  # fmt: skip
        return web.Response(text=text, status=status, content_type="text/html")

    try:
        response = await handler(request)
    except ConfigError as exc:
        response = error(400, "Bad request", str(exc))
    except SinkError as exc:
        log.warning("InfluxDB query failed: %s", exc)
        response = error(503, "Database unavailable", "InfluxDB did not answer. Try again soon.")
    except web.HTTPNotFound as exc:
        response = error(404, "Not found", exc.text or "No such page.")
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(
    query: InfluxQuery, tz: ZoneInfo, *, band: str | None = None, weeks: int = 8
) -> web.Application:
    """The night view application.

    Parameters
    ----------
    query
        InfluxQL connection (closed when the app shuts down).
    tz
        Zone the nights are local to.
    band
        Default band filter (``None``: all bands).
    weeks
        Default weeks for the list and trends.
    """
    if band:
        checked_band(band)
    app = web.Application(middlewares=[_errors])
    app[CTX] = _Ctx(query, tz, band or None, weeks, environment())
    app.router.add_get("/", nights_page)
    app.router.add_get("/nights/{day}", night_page)
    app.router.add_get("/nights/{day}/cramps/{band}/{onset}", cramp_page)
    app.router.add_get("/trends", trends_page)
    app.router.add_static("/static", HERE / "static", follow_symlinks=False)

    async def close(app: web.Application) -> None:
        await app[CTX].query.close()

    app.on_cleanup.append(close)
    return app
