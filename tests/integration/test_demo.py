"""``crampwatch demo`` end to end: every child real, Ctrl-C stops all, nothing recorded is lost."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sensor_gateway.local_servers import INFLUXD, MOSQUITTO, InfluxServer, free_port
from tests.fixtures.processes import processes_mentioning

pytestmark = pytest.mark.integration

# Seed 11's night has its first cramp 213 s in: 3.5 s of wall time at 60x.
SEED = 11


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if re.search(pattern, line):
                return seen
        if proc.poll() is not None:
            break
    raise AssertionError(f"no {pattern!r} within {timeout_s} s; output so far:\n{seen}")


@pytest.mark.skipif(
    not (os.access(MOSQUITTO, os.X_OK) and os.access(INFLUXD, os.X_OK)),
    reason="mosquitto or influxd is not installed",
)
def _field_keys(influx: InfluxServer, measurement: str) -> set[str]:
    doc: Any = influx.query(f'SHOW FIELD KEYS FROM "{measurement}"', "crampwatch")
    return {v[0] for s in doc["results"][0].get("series", []) for v in s["values"]}


def test_demo_runs_the_live_path_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    pytest.importorskip("bluezoo", reason="bluezoo (BlueZ emulation) is not installed")
    data = tmp_path / "demo"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensor_gateway", "demo", "--seed", str(SEED), "--speed", "60",
         "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        head = _read_until(proc, r"night view at http://127\.0\.0\.1:\d+/", 60)
        assert f"127.0.0.1:{port}/" in head
        _read_until(proc, r"cramp confirmed", 90)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, rest
    assert "every child exited cleanly" in rest, rest
    assert processes_mentioning(str(data)) == []

    # Nothing lost on the way out: the cramp the demo announced, and its end (closed by
    # the gateway's shutdown), are in the demo's InfluxDB, each exactly once.
    influx = InfluxServer.create(data / "influxdb")
    influx.start()
    try:
        doc = influx.query(
            'SELECT count("episode") FROM "cramp_event" GROUP BY "type"', "crampwatch"
        )
        fields = {m: _field_keys(influx, m)
                  for m in ("band_status", "gateway_status", "recorder_status")}  # fmt: skip
    finally:
        influx.stop()
    # the real gateway's band status: its "time" is the timestamp, not a field named time
    assert "time" not in fields["band_status"] and "connected" in fields["band_status"]
    assert {"online", "outbox_entries", "outbox_bytes"} <= fields["gateway_status"]
    assert {"spool_batches", "spool_bytes", "points_written"} <= fields["recorder_status"]
    results: Any = doc["results"]
    counts = {s["tags"]["type"]: s["values"][0][1] for s in results[0].get("series", [])}
    assert counts.get("cramp_confirmed") == 1, counts
    assert counts.get("cramp_end") == 1, counts
    assert counts.get("spasm_onset", 0) >= 1, counts
