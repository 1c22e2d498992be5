"""The night read model's pure parts: nights in local time, quoting, episodes, bucketing."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sensor_gateway.errors import ConfigError
from sensor_gateway.nights import (
    Episode,
    Series,
    after_cramp,
    assemble_episodes,
    local_zone,
    night_containing,
    night_of,
    parse_night,
    quote_ident,
    quote_string,
)
from sensor_gateway.report import bucket

BERLIN = ZoneInfo("Europe/Berlin")


def ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """Berlin wall time → UTC milliseconds."""
    return round(datetime(year, month, day, hour, minute, tzinfo=BERLIN).timestamp() * 1000)


def test_a_night_runs_from_local_noon_to_noon_and_is_named_after_its_evening() -> None:
    night = night_of(date(2024, 3, 14), BERLIN)
    assert night.start_ms == ms(2024, 3, 14, 12) and night.end_ms == ms(2024, 3, 15, 12)
    assert night_containing(ms(2024, 3, 15, 3, 30), BERLIN) == night
    assert night_containing(ms(2024, 3, 15, 12), BERLIN).day == date(2024, 3, 15)
    assert night_containing(ms(2024, 3, 14, 11, 59), BERLIN).day == date(2024, 3, 13)
    hours = [(night_of(date(2024, 3, d), BERLIN).end_ms - night_of(date(2024, 3, d), BERLIN)
              .start_ms) / 3.6e6 for d in (29, 30, 31)]  # fmt: skip
    assert hours == [24.0, 23.0, 24.0]  # DST starts on the 31st at 02:00


def test_parse_night_and_zone_refuse_nonsense() -> None:
    assert parse_night("2024-03-14") == date(2024, 3, 14)
    for bad in ("2024-02-30", "24-03-14", "2024-3-4", "1999-12-31", "2024-03-14'", ""):
        with pytest.raises(ConfigError):
            parse_night(bad)
    assert local_zone("Asia/Kolkata").key == "Asia/Kolkata"
    with pytest.raises(ConfigError, match="unknown time zone"):
        local_zone("Mars/Olympus")


def test_quoting_escapes_quotes_and_backslashes_and_refuses_controls() -> None:
    assert quote_string("band-a") == "'band-a'"
    assert quote_string("a'b\\c") == "'a\\'b\\\\c'"
    assert quote_ident('we"ird') == '"we\\"ird"'
    for bad in ("a\nb", "a\x00", "x\x7f"):
        with pytest.raises(ConfigError):
            quote_string(bad)
        with pytest.raises(ConfigError):
            quote_ident(bad)


def _row(t: int, kind: str, episode: int, **details: object) -> dict[str, object]:
    return {"time": t, "band": "band-a", "gateway": "gw", "type": kind, "episode": episode,
            **details}  # fmt: skip


def test_episodes_are_assembled_from_event_rows_in_any_order() -> None:
    rows = [
        _row(5_000, "cramp_end", 1, duration_s=40.0, severity=2.0, stretch_after=True),
        _row(1_000, "spasm_onset", 1),
        _row(900, "prelude", 1, n_spikes=4.0),
        _row(1_000, "cramp_confirmed", 1),
        _row(8_000, "spasm_onset", 2),
        _row(8_500, "spasm_cleared", 2, duration_s=0.5),
        _row(9_000, "signal_quality", 0, quality="gap"),
        # the gateway restarted: episode numbers start again at 1
        _row(20_000, "spasm_onset", 1),
        _row(20_000, "cramp_confirmed", 1),
        # an end whose onset is outside the rows is dropped
        _row(30_000, "cramp_end", 7, duration_s=9.0),
    ]
    eps = assemble_episodes(rows)
    assert [(e.onset_ms, e.end_ms, e.kind) for e in eps] == [
        (1_000, 5_000, "cramp"), (8_000, 8_500, "spasm"), (20_000, None, "cramp")]  # fmt: skip
    first = eps[0]
    assert (first.duration_s, first.severity, first.severity_label) == (40.0, 2, "moderate")
    assert first.stretch_after is True and first.prelude_spikes == 4
    assert eps[1].severity is None and eps[2].duration_s is None


def _series(acc: list[float], step_s: float = 1.0, t0: int = 0) -> Series:
    n = len(acc)
    t = t0 + np.arange(n, dtype=np.int64) * round(step_s * 1000)
    ones = np.ones(n)
    return Series(step_s, t, ones, ones, ones, ones, np.array(acc), np.zeros(n), ones)


def _cramp(end_ms: int, stretch: bool | None = False) -> Episode:
    return Episode("band-a", "gw", 1, 0, end_ms, True, 30.0, stretch_after=stretch)


def test_after_cramp_tells_still_from_stretching_from_restless() -> None:
    still = after_cramp(_cramp(10_000), _series([0.001] * 200))
    assert (still.stretched, still.restless, still.short) == (False, False, "lay still")
    moved = [0.001] * 200
    moved[40:45] = [0.2] * 5  # 30 s after the end, 5 s of movement
    stretched = after_cramp(_cramp(10_000), _series(moved))
    assert stretched.stretched and not stretched.restless
    assert stretched.first_move_s == pytest.approx(30.0) and stretched.moved_s == 5
    busy = [0.001] * 200
    busy[20:60] = [0.1] * 40
    assert after_cramp(_cramp(10_000), _series(busy)).restless
    assert after_cramp(_cramp(10_000, None), _series([])).text.startswith("No accelerometer")


def test_bucket_aggregates_like_group_by_time() -> None:
    n = 1200
    t = np.arange(n, dtype=np.int64) * 1000
    rms = np.arange(n, dtype=np.float64)
    acc = np.zeros(n)
    acc[5] = 0.5
    bad = np.zeros(n)
    bad[[0, 1, 3]] = 1.0
    tilt = np.full(n, 90.0)
    tilt[2:4] = [10.0, np.nan]  # a second without accelerometer does not count
    series = Series(1.0, t, rms, rms + 1, rms, rms, acc, bad, tilt)
    out = bucket(series, max_points=600)
    assert out.tilt_deg[:3].tolist() == [90.0, 10.0, 90.0]
    assert out.step_s == 2.0 and len(out) == 600
    assert out.rms_uv[:3].tolist() == [0.5, 2.5, 4.5]
    assert out.peak_uv[:2].tolist() == [2.0, 4.0]
    assert out.acc_g[2] == 0.5 and out.bad_s[:3].tolist() == [2.0, 1.0, 0.0]
    assert bucket(series, max_points=2000) is series
