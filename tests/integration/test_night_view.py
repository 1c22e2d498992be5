"""``crampwatch dashboard`` in a real headless Chromium, reading the nights the recorder stored.

The simulated nights go through MqttSink → Mosquitto → Recorder → influxd
(:mod:`tests.fixtures.nights`); the night view runs as a real ``crampwatch
dashboard`` process on a free loopback port; Debian's Chromium loads each page
(``--dump-dom``) and takes screenshots (``--screenshot``, a phone-sized and a
desktop window) whose pixels must not be blank.  Skipped only when Chromium is
not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import matplotlib.image as mpimg
import numpy as np
import pytest

from sensor_gateway.alerts import WEEKLY_ADVICE
from sensor_gateway.influx import InfluxQuery, InfluxV1Writer, line
from sensor_gateway.nights import NightStore, local_time, night_of, quote_ident, quote_string
from sensor_gateway.web.render import duration
from tests.fixtures.nights import LoadedNights
from tests.fixtures.servers import InfluxServer, free_port
from tests.integration.pages import Dom, assert_not_blank

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# --------------------------------------------------------------------------- helpers


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def browser_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not installed ({CHROMIUM}); apt-get install chromium")
    return tmp_path_factory.mktemp("chromium-profile")


@pytest.fixture(scope="module")
def night_view(night_db: LoadedNights, browser_profile: Path) -> Iterator[str]:
    """A running ``crampwatch dashboard`` on a free loopback port; its base URL."""
    port = free_port()
    env = {**os.environ, "CRAMPWATCH_INFLUX_URL": night_db.url,
           "CRAMPWATCH_INFLUX_DATABASE": night_db.database}  # fmt: skip
    env.pop("CRAMPWATCH_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensor_gateway", "--log-level", "WARNING", "dashboard",
         "--host", "127.0.0.1", "--port", str(port), "--timezone", night_db.tz],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "night view did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def page(url: str, profile: Path) -> Dom:
    done = chromium("--dump-dom", url, profile=profile)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stdout[:500]
    return Dom(done.stdout)


# --------------------------------------------------------------------------- tests


def test_list_of_nights(night_view: str, night_db: LoadedNights, browser_profile: Path) -> None:
    """Every recorded night is listed, newest first, with its cramp count."""
    dom = page(night_view + "/", browser_profile)
    rows = dom.find("tr", class_="night")
    listed = [(a["data-night"], int(a["data-cramps"])) for a, _text in rows]
    expected = [(n.day.isoformat(), len(n.of_type("cramp_confirmed")))
                for n in reversed(night_db.nights)]  # fmt: skip
    assert listed == expected
    assert dom.text_of("latest-cramps") == str(expected[0][1])
    for (attrs, text), n in zip(rows, reversed(night_db.nights), strict=True):
        assert n.day.strftime("%a %d %b") in text, attrs


def test_one_night_timeline_and_episodes(
    night_view: str, night_db: LoadedNights, browser_profile: Path
) -> None:
    """Cramp count, one row per cramp and spasm, the SVG timeline linking each cramp."""
    tonight = night_db.tonight
    tz = ZoneInfo(night_db.tz)
    dom = page(f"{night_view}/nights/{tonight.day.isoformat()}", browser_profile)
    cramps = tonight.of_type("cramp_confirmed")
    assert dom.text_of("cramp-count") == str(len(cramps))
    rows = dom.find("tr", class_="episode", data_kind="cramp")
    assert [text.split()[0] for _a, text in rows] == [
        local_time(round(c.wall_time * 1000), tz).strftime("%H:%M") for c in cramps
    ]
    ends = tonight.of_type("cramp_end")
    for (_a, text), end in zip(rows, ends, strict=True):
        assert duration(float(end.event.details["duration_s"])) in text  # type: ignore[arg-type]
    spasms = dom.find("tr", class_="episode", data_kind="spasm")
    assert len(spasms) == len(tonight.of_type("spasm_cleared"))
    svg_links = [a["href"] for a, _t in dom.find("a") if "/cramps/" in a.get("href", "")]
    assert len(set(svg_links)) == len(cramps)
    assert dom.find("svg", class_="chart-svg"), "no timeline"
    assert len(dom.find("path", class_="rms")) == 1
    (tilt,) = dom.find("path", class_="tilt")  # the leg's tilt, drawn over the movement
    assert tilt[0]["d"].startswith("M") and tilt[0]["d"].count("L") > 100
    assert dom.find("rect", class_="quality-bad"), "the recorded gap is not shown"
    (health,) = dom.find("tr", class_="band-health")
    assert health[0]["data-band"] == night_db.band


def test_cramp_detail_page(night_view: str, night_db: LoadedNights, browser_profile: Path) -> None:
    """Reached from the night page: duration, severity, what happened after."""
    tonight = night_db.tonight
    night = page(f"{night_view}/nights/{tonight.day.isoformat()}", browser_profile)
    first = night.find("tr", class_="episode", data_kind="cramp")[0][0]
    link = next(a["href"] for a, _t in night.find("a")
                if a.get("href", "").endswith(f"/{first['data-onset']}"))  # fmt: skip
    dom = page(night_view + link, browser_profile)
    end = tonight.of_type("cramp_end")[0].event.details
    assert dom.text_of("cramp-duration") == duration(float(end["duration_s"]))  # type: ignore[arg-type]
    assert (
        dom.text_of("cramp-severity")
        == {1: "mild", 2: "moderate", 3: "severe"}[
            round(float(end["severity"]))  # type: ignore[arg-type]
        ]
    )
    after = dom.text_of("after")
    assert after.endswith(".") and ("leg" in after.lower() or "accelerometer" in after.lower())
    assert dom.find("rect", class_="ep-span")
    aside = " ".join("".join(t for _a, t in dom.find("aside")).split())
    assert "pull your toes up" in aside
    assert all(sentence in aside for sentence in WEEKLY_ADVICE)  # the alerts' advice, verbatim


def test_trends_page(night_view: str, night_db: LoadedNights, browser_profile: Path) -> None:
    """Nights recorded, with and without cramps, totals, one bar per night with cramps."""
    dom = page(f"{night_view}/trends?weeks=4", browser_profile)
    counts = [len(n.of_type("cramp_confirmed")) for n in night_db.nights]
    assert dom.text_of("nights-recorded") == str(len(counts))
    assert dom.text_of("nights-with-cramps") == str(sum(1 for c in counts if c))
    assert dom.text_of("nights-without") == str(sum(1 for c in counts if not c))
    assert dom.text_of("total-cramps") == str(sum(counts))
    assert len(dom.find("tr", class_="week")) == 4
    titles = [t for _a, t in dom.find("title")]
    for n, c in zip(night_db.nights, counts, strict=True):
        if c:
            assert f"{n.day.isoformat()}: {c} cramps" in titles


def test_screenshots_are_not_blank(
    night_view: str, night_db: LoadedNights, browser_profile: Path, tmp_path: Path
) -> None:
    """A phone-sized and a desktop screenshot of a night render real pixels."""
    url = f"{night_view}/nights/{night_db.tonight.day.isoformat()}"
    for name, size in (("phone", "412,915"), ("desktop", "1280,1000")):
        png = tmp_path / f"{name}.png"
        done = chromium(f"--screenshot={png}", f"--window-size={size}", url,
                        profile=browser_profile)  # fmt: skip
        assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
        assert_not_blank(png)
        rgb = mpimg.imread(png)[..., :3]
        median = float(np.median(rgb.mean(axis=-1)))
        print(f"{name} screenshot: median brightness {median:.2f}")
        assert median < 0.2, f"{name}: not the dark theme"


def test_night_prints_on_a_few_pages(
    night_view: str, night_db: LoadedNights, browser_profile: Path, tmp_path: Path
) -> None:
    """Chromium's print path (the print stylesheet: light, compact, no navigation) makes a
    PDF of a few pages for the night, not one page per screenful."""
    pdf = tmp_path / "night.pdf"
    url = f"{night_view}/nights/{night_db.tonight.day.isoformat()}"
    done = chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url,
                    profile=browser_profile)  # fmt: skip
    assert done.returncode == 0 and pdf.exists(), done.stderr[-2000:]
    raw = pdf.read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", raw))
    print(f"night printed on {pages} pages ({len(raw)} bytes)")
    assert raw.startswith(b"%PDF-") and 1 <= pages <= 4, pages


def test_bad_parameters_are_refused(night_view: str) -> None:
    """Invalid dates, bands and numbers give 400, unknown cramps 404; nothing reaches InfluxQL."""
    for path in ("/nights/2024-02-30", "/nights/24-03-14", "/?weeks=0", "/trends?weeks=9999",
                 "/?band=a'%20OR%20'1'='1", "/nights/2024-03-14?band=%22x%22",
                 "/nights/2024-03-14/cramps/band-a/12x"):  # fmt: skip
        assert status_of(night_view + path) == 400, path
    assert status_of(night_view + "/nights/2024-03-14/cramps/band-a/123") == 404
    assert status_of(night_view + "/static/../nights.py") == 404
    with urllib.request.urlopen(night_view + "/", timeout=10) as resp:
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        body = resp.read().decode()
    assert not re.search(r"""(src|href)=["']https?://""", body), "external resource"


def test_quoting_keeps_strings_and_identifiers_intact(night_db: LoadedNights) -> None:
    """A value with quotes and backslashes is one literal: it matches nothing, not everything."""

    async def main() -> None:
        query = InfluxQuery(night_db.url, night_db.database)
        try:
            env = quote_ident("envelope")
            sneaky = quote_string(f"{night_db.band}' OR \"band\" =~ /.*/ OR 'x\\")
            rows = await query.rows(f'SELECT count("state") FROM {env} WHERE "band" = {sneaky}')
            assert rows == []
            plain = quote_string(night_db.band)
            rows = await query.rows(f'SELECT count("state") FROM {env} WHERE "band" = {plain}')
            assert rows[0]["count"] == sum(len(n.summaries) for n in night_db.nights)
        finally:
            await query.close()

    asyncio.run(main())


def test_nights_stay_noon_to_noon_across_daylight_saving(influxdb: InfluxServer) -> None:
    """Europe/Berlin 2024-03-31: the night of the 30th has 23 hours, its neighbours 24."""
    tz = ZoneInfo("Europe/Berlin")
    database = f"dst_{time.time_ns()}"
    influxdb.create_database(database)
    t0 = night_of(date(2024, 3, 29), tz).start_ms
    t1 = night_of(date(2024, 3, 31), tz).end_ms
    points = [line("envelope", {"band": "band-a", "gateway": "gw"},
                   {"state": "idle", "quality": "ok"}, t)
              for t in range(t0, t1, 1_800_000)]  # fmt: skip

    async def main() -> list[float]:
        writer = InfluxV1Writer(influxdb.url, database)
        await writer.write(points)
        await writer.close()
        store = NightStore(InfluxQuery(influxdb.url, database), tz)
        try:
            nights = await store.summaries(date(2024, 3, 29), date(2024, 3, 31))
        finally:
            await store.close()
        return [n.recorded_s for n in nights]

    assert asyncio.run(main()) == [48.0, 46.0, 48.0]  # points every 30 min
