"""Grafana provisioning: valid dashboards whose every InfluxQL query works on real data.

The simulated nights of :mod:`tests.fixtures.nights` are recorded through the real
MQTT path into the real influxd; every panel query and annotation query of the
three dashboards is taken from the JSON, Grafana's macros and template variables
are expanded the way Grafana's InfluxDB datasource does (``$timeFilter``,
``$__interval``, ``$__interval_ms``, ``$var`` / ``${var}`` / ``[[var]]`` with regex
escaping for multi-value variables, ``${var:raw}``), and the query is run.  Each
must succeed and return rows; the key numbers must equal what was recorded.
Grafana itself (transformations, rendering) is not available here: the two
transformation steps the dashboards rely on are recomputed in the test.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from sensor_gateway.messages import utc_ms
from sensor_gateway.nights import local_time, night_containing, night_of
from tests.fixtures.nights import LoadedNights, SimulatedNight
from tests.fixtures.servers import InfluxServer

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "crampwatch.yaml"
DATASOURCE_V2 = GRAFANA / "provisioning" / "datasources" / "crampwatch-influxdb2.yaml.example"
INTERVAL_S = 30
BUILTIN = {"timeFilter", "__interval", "__interval_ms", "__all"}
_VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\/]")


# --------------------------------------------------------------------------- helpers


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, InfluxQL)`` of every panel target, annotation and query variable."""
    for panel in panels(dashboard):
        for t in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {t['refId']}", t["query"]
    for ann in dashboard["annotations"]["list"]:
        if ann.get("datasource", {}).get("type") == "influxdb":
            yield f"annotation {ann['name']!r}", ann["query"]
            assert ann["target"]["query"] == ann["query"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            yield f"variable {var['name']}", var["query"]


def grafana_regex_escape(value: str) -> str:
    """What Grafana does to a multi-value variable's value inside ``/^...$/``."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def expand(
    query: str,
    variables: dict[str, dict[str, Any]],
    values: dict[str, list[str]],
    start_ms: int,
    end_ms: int,
) -> str:
    """Expand Grafana's InfluxQL macros and template variables."""
    q = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    q = q.replace("$__interval_ms", str(INTERVAL_S * 1000))
    q = q.replace("$__interval", f"{INTERVAL_S}s")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        if name not in variables:
            return m.group(0)  # a regex anchor such as /^x$/ is left alone
        vals = values[name]
        if fmt == "raw":
            return ",".join(vals)
        var = variables[name]
        if var.get("multi") or var.get("includeAll"):
            escaped = [grafana_regex_escape(v) for v in vals]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return vals[0]

    q = _VAR_RE.sub(sub, q)
    leftover = [m.group(0) for m in _VAR_RE.finditer(q) if m.group(0) not in ("$", "$/")]
    assert not [v for v in leftover if re.fullmatch(r"\$\w+|\$\{.*\}|\[\[.*\]\]", v)], leftover
    return q


def run(influx: InfluxServer, database: str, q: str) -> list[list[dict[str, Any]]]:
    """Rows per statement; fails on any error."""
    doc = influx.query(q, database)
    assert "error" not in doc, doc
    out = []
    for result in doc["results"]:  # type: ignore[attr-defined]
        assert "error" not in result, f"{result['error']}\n{q}"
        rows = []
        for series in result.get("series", []):
            rows += [{**series.get("tags", {}), **dict(zip(series["columns"], v, strict=True))}
                     for v in series["values"]]  # fmt: skip
        out.append(rows)
    return out


def range_for(uid: str, db: LoadedNights) -> tuple[int, int]:
    """The dashboard's time range: the night of tonight, or 8 weeks up to it (Trends)."""
    tz = ZoneInfo(db.tz)
    night = night_of(db.tonight.day, tz)
    if uid == "crampwatch-trends":
        first = night_of(db.tonight.day - timedelta(weeks=8), tz)
        return first.start_ms, night.end_ms - 1
    return night.start_ms, night.end_ms - 1


def results(db: LoadedNights, influx: InfluxServer, path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every query of one dashboard expanded and run: ``{where: rows}``."""
    dash = load(path)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    values = {"band": [db.band], "gateway": [db.gateway], "tz": [db.tz]}
    start, end = range_for(dash["uid"], db)
    out = {}
    for where, query in queries(dash):
        q = expand(query, variables, values, start, end)
        (rows,) = run(influx, db.database, q)
        out[where] = rows
    return out


def rows_of(
    dash_results: dict[str, list[dict[str, Any]]], title: str, ref: str = "A"
) -> list[dict[str, Any]]:
    """Rows of the target ``ref`` of the panel (or annotation) titled ``title``."""
    suffix = f"{title!r} {ref}" if ref else f"{title!r}"
    (rows,) = [r for where, r in dash_results.items() if where.endswith(suffix)]
    return rows


def cramp_ends(night: SimulatedNight) -> list[dict[str, Any]]:
    return [dict(e.event.details) for e in night.of_type("cramp_end")]


# --------------------------------------------------------------------------- structure


def test_datasource_provisioning_files_are_valid() -> None:
    """Both datasource variants: InfluxQL, the uid every dashboard uses, no secret inline."""
    for path in (DATASOURCE, DATASOURCE_V2):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["apiVersion"] == 1
        (ds,) = doc["datasources"]
        assert ds["uid"] == "crampwatch-influxdb" and ds["type"] == "influxdb"
        assert ds["jsonData"]["version"] == "InfluxQL"
        assert ds["jsonData"]["dbName"] == "${CRAMPWATCH_INFLUX_DATABASE}"
        secrets = ds.get("secureJsonData", {})
        assert secrets and all(v.startswith(("${", "Token ${")) for v in secrets.values())
    v2 = yaml.safe_load(DATASOURCE_V2.read_text(encoding="utf-8"))["datasources"][0]
    assert v2["jsonData"]["httpHeaderName1"] == "Authorization"
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "crampwatch.yaml").read_text(encoding="utf-8")
    )
    assert provider["providers"][0]["type"] == "file"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_json_is_valid_grafana(path: Path) -> None:
    """Schema version, unique ids, grid inside 24 columns, every datasource the provisioned one,
    every variable used defined, every InfluxQL query time-bounded."""
    dash = load(path)
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"].startswith("crampwatch-") and dash["title"]
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"] for v in dash["templating"]["list"]}
    for panel in panels(dash):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        for ref in refs:
            assert ref == {"type": "influxdb", "uid": "crampwatch-influxdb"}, panel["title"]
        assert [t["refId"] for t in panel.get("targets", [])] == sorted(
            {t["refId"] for t in panel.get("targets", [])}
        )
    for where, query in queries(dash):
        if not where.startswith("variable"):
            assert "$timeFilter" in query, where
        used = {m.group(1) or m.group(3) or m.group(5) for m in _VAR_RE.finditer(query)}
        assert used <= variables | BUILTIN, (where, used - variables - BUILTIN)
    names = [p.stem for p in DASHBOARDS]
    assert names == ["gateway-health", "tonight", "trends"]


# --------------------------------------------------------------------------- queries


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_runs_and_returns_rows(
    path: Path, night_db: LoadedNights, influxdb: InfluxServer
) -> None:
    """Each expanded query succeeds and returns data for the recorded nights."""
    out = results(night_db, influxdb, path)
    empty = [where for where, rows in out.items() if not rows]
    assert not empty, f"no rows: {empty}"


def test_tonight_numbers_match_what_was_recorded(
    night_db: LoadedNights, influxdb: InfluxServer
) -> None:
    """Cramp count, longest, worst, spasms, recorded seconds and the cramp table."""
    out = results(night_db, influxdb, GRAFANA / "dashboards" / "tonight.json")
    tonight = night_db.tonight
    ends = cramp_ends(tonight)
    assert ends, "the simulated night has no cramp"
    assert rows_of(out, "Cramps")[0]["cramps"] == len(tonight.of_type("cramp_confirmed"))
    longest = rows_of(out, "Longest cramp")[0]["longest"]
    assert longest == pytest.approx(max(float(e["duration_s"]) for e in ends))
    assert rows_of(out, "Worst severity")[0]["severity"] == max(e["severity"] for e in ends)
    assert rows_of(out, "Short spasms")[0]["spasms"] == len(tonight.of_type("spasm_cleared"))
    rec = rows_of(out, "Recorded / poor signal")
    poor = rows_of(out, "Recorded / poor signal", "B")
    assert rec[0]["recorded"] == len(tonight.summaries)
    assert poor[0]["poor signal"] == sum(1 for s in tonight.summaries
                                         if s.summary.quality != "ok")  # fmt: skip
    table = rows_of(out, "Cramp list")
    assert len(table) == len(ends)
    assert sorted(r["duration_s"] for r in table) == pytest.approx(
        sorted(float(e["duration_s"]) for e in ends)
    )
    envelope = rows_of(out, "EMG envelope and thresholds")
    assert max(r["peak"] or 0.0 for r in envelope) > max(r["noise floor"] or 0.0 for r in envelope)
    onsets = rows_of(out, "Cramp onsets", "")
    assert len(onsets) == len(tonight.of_type("cramp_confirmed"))
    posture = rows_of(out, "Leg movement and posture (accelerometer)", "B")
    assert sorted(r["posture changes in cramp"] for r in posture) == sorted(
        float(e["posture_changes"]) for e in ends
    )
    # the leg's tilt: one mean per 30-s interval of the recorded per-second tilts
    buckets: dict[int, list[float]] = {}
    for s in tonight.summaries:
        tilt_deg = s.summary.tilt_deg
        if tilt_deg is not None and math.isfinite(tilt_deg):
            buckets.setdefault(utc_ms(s.wall_time) // (INTERVAL_S * 1000), []).append(tilt_deg)
    tilt = [r["tilt"] for r in rows_of(out, "Leg movement and posture (accelerometer)", "C")]
    assert len(buckets) > 100
    assert sorted(t for t in tilt if t is not None) == pytest.approx(
        sorted(math.fsum(v) / len(v) for v in buckets.values()), rel=1e-9
    )


def test_trends_per_night_counts_match_the_nights(
    night_db: LoadedNights, influxdb: InfluxServer
) -> None:
    """Cramps per local night, nights recorded / with / without cramps, time of night."""
    out = results(night_db, influxdb, GRAFANA / "dashboards" / "trends.json")
    tz = ZoneInfo(night_db.tz)
    expected = {n.day: len(n.of_type("cramp_confirmed")) for n in night_db.nights}
    per_night = rows_of(out, "Cramps per night")
    got = {night_containing(int(r["time"]), tz).day: r["cramps"] for r in per_night if r["cramps"]}
    assert got == {d: c for d, c in expected.items() if c}
    for r in per_night:  # every bucket starts at local noon
        assert local_time(int(r["time"]), tz).hour == 12
    hours = rows_of(out, "Cramps per night", "B")
    recorded = {night_containing(int(r["time"]), tz).day: r["hours recorded"]
                for r in hours if r["hours recorded"]}  # fmt: skip
    assert recorded == pytest.approx({n.day: len(n.summaries) / 3600 for n in night_db.nights})
    n_recorded = rows_of(out, "Nights recorded")[0]["nights"]
    n_with = rows_of(out, "Nights with cramps")[0]["nights"]
    assert n_recorded == len(night_db.nights)
    assert n_with == sum(1 for c in expected.values() if c)
    # the "Nights without cramps" stat: its two hidden queries, then recorded − with_cramps
    a = rows_of(out, "Nights without cramps")[0]["recorded"]
    b = rows_of(out, "Nights without cramps", "B")[0]["with_cramps"]
    assert a - b == sum(1 for c in expected.values() if c == 0) >= 1
    total = sum(expected.values())
    assert rows_of(out, "Cramps")[0]["cramps"] == total
    assert sum(r["cramps"] for r in rows_of(out, "Cramps per week")) == total
    onsets = rows_of(out, "Time of night")
    assert sorted(local_time(int(r["time"]), tz).hour for r in onsets) == sorted(
        local_time(round(e.wall_time * 1000), tz).hour
        for n in night_db.nights for e in n.of_type("cramp_confirmed")
    )  # fmt: skip


def test_gateway_health_reflects_the_status_records(
    night_db: LoadedNights, influxdb: InfluxServer
) -> None:
    """Online/connected end states, reconnects and drift from the band status records."""
    out = results(night_db, influxdb, GRAFANA / "dashboards" / "gateway-health.json")
    statuses = [s for _t, s in night_db.tonight.statuses]
    assert rows_of(out, "Gateway online")[0]["online"] is False  # closed at the end
    assert rows_of(out, "Bands connected")[0]["connected"] is False  # last status: link down
    assert rows_of(out, "Reconnects")[0]["reconnects"] == (
        max(int(s["connects"]) for s in statuses) - min(int(s["connects"]) for s in statuses)  # type: ignore[call-overload]
    )
    drift = [r["drift"] for r in rows_of(out, "Clock drift") if r.get("drift") is not None]
    assert min(drift) >= 12.0 and max(drift) <= 12.0 + 0.5 * night_db.tonight.hours + 1e-9


def test_gateway_health_shows_the_mqtt_and_influxdb_backlog(
    night_db: LoadedNights, influxdb: InfluxServer
) -> None:
    """The gateway's outbox (gateway_status) and the recorder's spool (recorder_status).

    The replay publishes a gateway status with every band status (once a minute); the
    recorder writes its status every half second and at its stop.  Nothing was lost on
    the loopback broker, so the outbox only ever held events not yet acknowledged and
    the spool stayed empty; the recorder's last point counts what it wrote.
    """
    out = results(night_db, influxdb, GRAFANA / "dashboards" / "gateway-health.json")
    tonight = night_db.tonight
    title = "MQTT outbox (gateway → broker)"
    entries = [r["outbox events"] for r in rows_of(out, title) if r["outbox events"] is not None]
    assert len(entries) >= len(tonight.statuses) // 2  # one per status round, 30-s buckets
    assert 0 <= max(entries) <= sum(len(n.events) for n in night_db.nights)
    assert entries[-1] == 0  # drained before the gateway went offline
    assert all(r["outbox bytes"] >= 0 for r in rows_of(out, title, "B") if r["outbox bytes"])
    losses = [r for r in rows_of(out, title, "C") if r["summaries dropped"] is not None]
    assert losses and all(r["summaries dropped"] == r["events refused"] == 0 for r in losses)
    title = "InfluxDB spool (recorder → InfluxDB)"
    spool = [r for r in rows_of(out, title) if r["spool batches"] is not None]
    assert spool and all(r["spool batches"] == 0 for r in spool)
    assert {r["recorder"] for r in spool} == {r["recorder"] for r in rows_of(out, title, "B")}
    totals = [r for r in rows_of(out, title, "C") if r["points rejected"] is not None]
    assert totals and all(r["points rejected"] == r["invalid messages"] == 0 for r in totals)
    (written,) = run(influxdb, night_db.database, 'SELECT last("points_written") AS "n" '
                     'FROM "recorder_status"')  # fmt: skip
    stored = sum(len(n.events) + len(n.summaries) + len(n.statuses) for n in night_db.nights)
    assert written[0]["n"] >= stored  # at its stop it had written every night's points
