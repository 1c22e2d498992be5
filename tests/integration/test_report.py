"""``crampwatch report`` from the real influxd (nights recorded via MQTT) and from an EDF+ file.

Both paths run the real command in-process (:func:`sensor_gateway.cli.main`) and
check the HTML it wrote (self-contained: inline CSS, plots as PNG data URIs
equal to the PNG files next to it, nothing external), the numbers in it against
what was recorded (InfluxDB path) or against the simulator's ground truth (file
path), the comparison with earlier weeks and the advice.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from firmware_sim.night import NightConfig, SyntheticNight
from sensor_gateway.alerts import WEEKLY_ADVICE
from sensor_gateway.cli import main
from sensor_gateway.nights import local_time
from sensor_gateway.recordings import RecordingWriter
from tests.fixtures.nights import LoadedNights
from tests.integration.pages import Dom, assert_not_blank

pytestmark = pytest.mark.integration

ADVICE = ("see a doctor", "muscle weakness", "swollen, red", "stretch the calf",
          "pull your toes up", "massage", "warm", "drink enough water")  # fmt: skip


def check_files(out: Path, plots: tuple[str, ...]) -> tuple[str, Dom]:
    """The HTML and its PNG plots exist, agree and are self-contained; return HTML and DOM."""
    html = out.read_text(encoding="utf-8")
    dom = Dom(html)
    pngs = [out.with_name(f"{out.stem}-{name}.png") for name in plots]
    images = [a["src"] for a, _t in dom.find("img")]
    assert len(images) == len(pngs)
    for png, src in zip(pngs, images, strict=True):
        assert_not_blank(png)
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    absent = set(("night", "cramps", "weeks")) - set(plots)
    assert not any(out.with_name(f"{out.stem}-{n}.png").exists() for n in absent)
    assert dom.find("style") and not dom.find("script") and not dom.find("link")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "external resource"
    advice = dom.text_of("advice").lower()
    for phrase in ADVICE:
        assert phrase in advice, phrase
    assert all(sentence.lower() in advice for sentence in WEEKLY_ADVICE)  # the alerts' text
    return html, dom


def test_report_from_influxdb(
    night_db: LoadedNights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Tonight's cramps, their times and lengths, signal quality and the weeks before."""
    monkeypatch.setenv("CRAMPWATCH_INFLUX_URL", night_db.url)
    monkeypatch.setenv("CRAMPWATCH_INFLUX_DATABASE", night_db.database)
    monkeypatch.delenv("CRAMPWATCH_CONFIG", raising=False)
    tonight = night_db.tonight
    out = tmp_path / "morning" / "report.html"
    code = main(["report", "--night", tonight.day.isoformat(), "--timezone", night_db.tz,
                 "--output", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(out) and len(printed) == 4
    _html, dom = check_files(out, ("night", "cramps", "weeks"))

    tz = ZoneInfo(night_db.tz)
    confirmed = tonight.of_type("cramp_confirmed")
    assert dom.text_of("cramp-count") == str(len(confirmed))
    rows = dom.find("tr", class_="cramp")
    assert [t.split()[0] for _a, t in rows] == [
        local_time(round(c.wall_time * 1000), tz).strftime("%H:%M:%S") for c in confirmed
    ]
    severities = {1: "mild", 2: "moderate", 3: "severe"}
    for (_a, text), end in zip(rows, tonight.of_type("cramp_end"), strict=True):
        assert severities[round(float(end.event.details["severity"]))] in text  # type: ignore[arg-type]
    before = [n for n in night_db.nights[:-1] if n.day >= tonight.day - timedelta(weeks=4)]
    with_cramps = [n for n in before if n.of_type("cramp_confirmed")]
    comparison = dom.text_of("comparison")
    assert f"{len(before)} nights were recorded; {len(with_cramps)} of them had cramps" in (
        comparison
    )
    assert f"This night: {len(confirmed)}." in comparison
    ok = sum(1 for s in tonight.summaries if s.summary.quality == "ok")
    assert f"{100 * ok / len(tonight.summaries):.0f} %" in dom.text_of("quality")


def _recording(path: Path, start: datetime) -> SyntheticNight:
    night = SyntheticNight(NightConfig(hours=0.5, seed=23, emg_fs=2000, acc_fs=100,
                                       mains_hz=50, profile="typical"))  # fmt: skip
    with RecordingWriter(path, emg_fs=2000, acc_fs=100, start=start) as writer:
        for chunk in night.chunks(10.0):
            writer.write(chunk)
    return night


def test_report_from_edf_file_without_influxdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from-file`` runs the detector on the recording; cramps match the ground truth."""
    monkeypatch.setenv("CRAMPWATCH_INFLUX_URL", "http://127.0.0.1:9")  # nothing listens: unused
    monkeypatch.delenv("CRAMPWATCH_CONFIG", raising=False)
    tz = ZoneInfo("America/New_York")
    start = datetime(2024, 3, 12, 23, 5, tzinfo=tz)
    rec = tmp_path / "night.edf"
    night = _recording(rec, start)
    out = tmp_path / "file-report.html"
    assert main(["report", "--from-file", str(rec), "--timezone", tz.key, "-o", str(out)]) == 0
    _html, dom = check_files(out, ("night", "cramps"))
    assert dom.find("h1")[0][1] == "Night of Tuesday 12 March 2024"
    truth = night.truth.onsets_s
    assert truth, "the simulated night has no cramp"
    rows = dom.find("tr", class_="cramp")
    assert dom.text_of("cramp-count") == str(len(truth)) == str(len(rows))
    for (_a, text), onset in zip(rows, truth, strict=True):
        shown = datetime.combine(start.date(), datetime.strptime(text.split()[0], "%H:%M:%S")
                                 .time(), tzinfo=tz)  # fmt: skip
        if shown < start:
            shown += timedelta(days=1)
        assert abs((shown - (start + timedelta(seconds=onset))).total_seconds()) <= 3.0
    assert "single recording" in dom.text_of("comparison")
    capsys.readouterr()

    # a night the recording is not in: a clear one-line error, exit code 2
    assert main(["report", "--from-file", str(rec), "--timezone", tz.key, "--night",
                 "2024-03-13", "-o", str(tmp_path / "x.html")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("crampwatch: ") and "night of 2024-03-12" in err
    assert not (tmp_path / "x.html").exists()


def test_report_needs_a_night_or_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--night`` and ``--from-file`` the command says what is missing."""
    assert main(["report"]) == 2
    assert "--night YYYY-MM-DD is required" in capsys.readouterr().err
    assert main(["report", "--night", "2024-02-30"]) == 2
    assert "no such date" in capsys.readouterr().err
