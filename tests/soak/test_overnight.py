"""Nights through the whole live path with faults on a schedule (rig: :mod:`tests.soak.rig`).

``test_overnight_soak`` plays a full 8-hour night (opt-in: ``pytest -m soak tests/soak``,
about 10 minutes); ``test_short_night_with_every_fault`` plays half an hour with at
least one fault of each kind and the same assertions, in the normal suite (about a
minute).  Figures of the last full run: docs/soak.md.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from sensor_gateway.local_servers import INFLUXD, MOSQUITTO
from tests.soak.rig import FaultPlan, SoakPlan, SoakResult, run_soak

pytestmark = pytest.mark.skipif(
    not (os.access(MOSQUITTO, os.X_OK) and os.access(INFLUXD, os.X_OK)),
    reason="mosquitto or influxd is not installed",
)

#: A recorded gap at least this long is a link drop or a stall, not one lost packet.
GAP_MIN_S = 0.5
#: A cramp is "covered by a gap" when such a gap lies within this many stream seconds of it
#: (the detector needs a few seconds of signal around an onset to confirm it).
GAP_REACH_S = 30.0
#: Live and offline onsets of the same cramp agree to within this (stream seconds).
MATCH_S = 2.0
#: RSS may grow by this much from the warm-up sample to the end of the night.
RSS_SLACK_KB = 16 * 1024
RSS_SLACK_FRACTION = 0.15


def _confirmed_onsets(result: SoakResult) -> list[float]:
    return sorted(float(e["t_s"]) for e in result.events if e["type"] == "cramp_confirmed")


def _covered_by_gap(t_s: float, result: SoakResult) -> bool:
    return any(
        b - a >= GAP_MIN_S and a - GAP_REACH_S <= t_s <= b + GAP_REACH_S for a, b in result.gaps_s
    )


def check_soak(result: SoakResult) -> None:
    """The soak's assertions (both nights).

    Every cramp the offline detector finds on the clean night is in InfluxDB exactly
    once or is covered by a recorded gap; every cramp the detector finds on the
    gateway's own recording (gaps included) is in InfluxDB exactly once and nothing
    else is; memory flat, no file-handle or thread leak, clean shutdown.
    """
    report = "\n".join(result.summary_lines())
    print(report)
    stored = _confirmed_onsets(result)
    assert len({e["event_id"] for e in result.events}) == len(result.events), report
    clean = [e.t_s for e in result.clean_reference if e.type == "cramp_confirmed"]
    assert clean, f"the clean night has no cramp to look for\n{report}"
    covered = 0
    for t_s in clean:
        hits = [s for s in stored if abs(s - t_s) <= MATCH_S]
        assert len(hits) == 1 or (not hits and _covered_by_gap(t_s, result)), (
            f"clean-night cramp at {t_s:.1f} s: stored {hits} (gaps {result.gaps_s})\n{report}"
        )
        covered += not hits
    print(f"clean-night cramps: {len(clean) - covered} in InfluxDB once, {covered} in a gap")
    recorded = sorted(e.t_s for e in result.recorded_reference if e.type == "cramp_confirmed")
    assert len(stored) == len(recorded), f"stored {stored}, recording {recorded}\n{report}"
    for s, r in zip(stored, recorded, strict=True):
        assert abs(s - r) <= MATCH_S, f"stored {stored}, recording {recorded}\n{report}"
    for name in ("gateway", "recorder"):
        first, last = result.first_last(name)
        assert len(result.samples[name]) >= 3, (name, result.samples[name])
        limit_kb = first.rss_kb * (1 + RSS_SLACK_FRACTION) + RSS_SLACK_KB
        assert last.rss_kb <= limit_kb, (name, report)
        opened = Counter(last.fd_targets) - Counter(first.fd_targets)
        assert last.fds <= first.fds + 2, (
            f"{name}: fds over the night {[(f, x.fds) for f, x in result.samples[name]]}; "
            f"opened since warm-up: {sorted(opened.elements())}"
        )
        assert last.threads <= first.threads + 1, (name, report)
    faults = {what for what, _at, _took in result.faults_done}
    assert faults == {"broker restart", "influxd outage"}, report
    band = result.band_summary
    assert int(band["lost_injected"]) > 0, report
    assert int(band["forced_disconnects"]) >= 1, report
    assert int(result.final_status.get("stalls") or 0) >= 1, report
    assert int(result.final_status.get("connects") or 0) >= 2, report
    assert result.exit_codes and set(result.exit_codes.values()) == {0}, report
    assert not result.forced, report
    assert not result.leftovers, report


def _run(plan: SoakPlan, tmp_path: Path) -> SoakResult:
    pytest.importorskip("bluezoo", reason="bluezoo (BlueZ emulation) is not installed")
    return run_soak(plan, tmp_path / "soak", out=sys.stdout)


#: Half an hour at 40x: seed 11's one cramp (onset 612 s) is confirmed while the broker
#: is down, and its end is stored while influxd is down.  Stalls last 200 night s
#: (5 s wall), longer than the gateway's 3-s (wall) watchdog, so it reconnects.
SHORT_NIGHT = SoakPlan(
    hours=0.5,
    speed=40.0,
    seed=11,
    faults=FaultPlan(
        drop_rate=0.01,
        disconnect_every_s=500.0,
        stall_every_s=800.0,
        stall_for_s=200.0,
        broker_restart_at=0.32,
        broker_down_s=2.0,
        influx_outage_at=0.37,
        influx_down_s=6.0,
    ),
)

#: The full night: seed 11 has cramps at 213, 5849 and 26205 s; the broker restart
#: falls on the second and the influxd outage (20 s wall = 1200 night s) on the third.
#: Link drops every hour; stalls of 240 night s (4 s wall, past the 3-s watchdog)
#: every 7000 s.
FULL_NIGHT = SoakPlan(
    hours=8.0,
    speed=60.0,
    seed=11,
    faults=FaultPlan(
        drop_rate=0.01,
        disconnect_every_s=3600.0,
        stall_every_s=7000.0,
        stall_for_s=240.0,
        broker_restart_at=5800 / 28800,
        broker_down_s=3.0,
        influx_outage_at=25800 / 28800,
        influx_down_s=20.0,
    ),
)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_short_night_with_every_fault(tmp_path: Path) -> None:
    check_soak(_run(SHORT_NIGHT, tmp_path))


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_overnight_soak(tmp_path: Path) -> None:
    check_soak(_run(FULL_NIGHT, tmp_path))
