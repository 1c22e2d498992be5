"""The shared rig of the MQTT → InfluxDB integration tests (real Mosquitto, real influxd).

:class:`Rig` builds one gateway sink, one recorder and one database per test
against the module's servers; :func:`night` makes events with the real detector;
:func:`check_exactly_once` compares what InfluxDB holds with what was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cramp_signal.detector import detect_array
from cramp_signal.events import DetectorEvent
from sensor_gateway.band_stream import StampedEvent
from sensor_gateway.influx import InfluxQuery, InfluxV1Writer
from sensor_gateway.messages import build_event
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.mqtt_sink import MqttSink
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import Recorder
from tests.fixtures.servers import InfluxServer, MosquittoServer

T0 = datetime(2024, 3, 1, 1, 0, 0, tzinfo=UTC).timestamp()
names = itertools.count()


def _detector_events() -> list[DetectorEvent]:
    """Run the real detector over 90 s of synthetic EMG with four bursts."""
    fs = 1000.0
    rng = np.random.default_rng(11)
    x = rng.normal(scale=5.0, size=int(90 * fs))
    for on, end, rms in ((10.0, 12.0, 90.0), (25.0, 45.0, 120.0), (55.0, 57.5, 80.0),
                         (65.0, 85.0, 150.0)):  # fmt: skip
        x[int(on * fs) : int(end * fs)] += rng.normal(scale=rms, size=int((end - on) * fs))
    return [e for e in detect_array(x, fs) if e.type != "signal_quality"]


BASE_EVENTS = _detector_events()


def night(n: int, band_id: str = "band-a") -> list[StampedEvent]:
    """``n`` events: the detector's events repeated, each repetition 1000 s later."""
    out: list[StampedEvent] = []
    for k in itertools.count():
        for ev in BASE_EVENTS:
            if len(out) == n:
                return out
            shifted = replace(ev, episode=ev.episode + 100 * k, t_s=ev.t_s + 1000.0 * k,
                              emitted_at_s=ev.emitted_at_s + 1000.0 * k)  # fmt: skip
            out.append(StampedEvent(band_id, shifted, T0 + shifted.t_s))
    return out


def cfg_for(mosquitto: MosquittoServer, user: str, **kw: object) -> MqttConfig:
    args: dict[str, object] = {"host": "127.0.0.1", "port": mosquitto.port, "username": user,
                               "password": mosquitto.passwords.get(user, ""),
                               "gateway_id": "gw-test", "reconnect_min_s": 0.5,
                               "reconnect_max_s": 1.0, "keepalive_s": 5}  # fmt: skip
    args.update(kw)
    return MqttConfig(**args)  # type: ignore[arg-type]


class Rig:
    """One gateway sink + one recorder + one database, built per test."""

    def __init__(self, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp: Path) -> None:
        self.mosquitto, self.influxdb, self.tmp = mosquitto, influxdb, tmp
        n = next(names)
        self.db = f"cw_{n}_{int(time.time())}"
        self.role = f"rec{n}"
        self.gw = f"gw-{n}"
        influxdb.create_database(self.db)
        self.query = InfluxQuery(influxdb.url, self.db)
        self.sink: MqttSink | None = None
        self.recorder: Recorder | None = None  # the newest one
        self.recorders: dict[str, Recorder] = {}  # by role (client id): the live ones

    def new_sink(self, **kw: object) -> MqttSink:
        cfg = cfg_for(self.mosquitto, "gateway", gateway_id=self.gw,
                   outbox_dir=self.tmp / "outbox", **kw)  # fmt: skip
        self.sink = MqttSink(cfg, close_timeout_s=1.0)
        return self.sink

    async def new_recorder(
        self, role: str = "", spool_max_bytes: int = 64 << 20, **kw: object
    ) -> Recorder:
        """Start a recorder; the same ``role`` again = the same client id and spool (a restart)."""
        role = role or self.role
        cfg = cfg_for(self.mosquitto, "recorder", **kw)
        spool = Outbox(self.tmp / f"spool-{role}", max_bytes=spool_max_bytes, name="influx spool")
        writer = InfluxV1Writer(self.influxdb.url, self.db, timeout_s=1.0)
        recorder = Recorder(cfg, writer, spool, batch_size=500, flush_interval_s=0.05,
                            retry_interval_s=0.2, client_role=role)  # fmt: skip
        self.recorder = self.recorders[role] = recorder
        await recorder.start()
        assert await recorder.adapter.wait_connected(10.0)
        await asyncio.sleep(0.2)  # SUBACK
        return recorder

    async def stored(self) -> list[dict[str, object]]:
        return await self.query.rows("SELECT * FROM cramp_event")

    async def wait_stored(self, n: int, timeout_s: float = 20.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout_s
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = await self.stored()
            if len(rows) >= n:
                await asyncio.sleep(0.3)  # give duplicates (if any) a chance to show up
                return await self.stored()
            await asyncio.sleep(0.1)
        return rows

    async def close(self) -> None:
        if self.sink is not None:
            await self.sink.close()
        for recorder in self.recorders.values():
            await recorder.close()
        await self.query.close()


Body = Callable[[Rig], Awaitable[None]]


def run_rig(body: Body, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp: Path) -> None:
    """Run ``body`` on one fresh event loop with a fresh rig; restore the servers after."""

    async def main() -> None:
        r = Rig(mosquitto, influxdb, tmp)
        try:
            await asyncio.wait_for(body(r), 60.0)
        finally:
            mosquitto.start()  # whatever a fault test did
            influxdb.start()
            await r.close()

    asyncio.run(main())


def check_exactly_once(rows: list[dict[str, object]], sent: list[StampedEvent]) -> None:
    """Every sent event once (by id and by series+time), values intact."""
    expected = {}
    for s in sent:
        ev = s.event
        ms = round(s.wall_time * 1000)
        eid, _ = build_event("x", s.band_id, event_type=ev.type, episode=ev.episode,
                             wall_time_s=s.wall_time, t_s=0, emitted_at_s=0, details={},
                             published_s=s.wall_time)  # fmt: skip
        expected[eid] = (s, ms)
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate points"
    assert set(ids) == set(expected), (
        f"missing {len(set(expected) - set(ids))}, unexpected {len(set(ids) - set(expected))}"
    )
    for row in rows:
        s, ms = expected[str(row["event_id"])]
        ev = s.event
        assert row["time"] == ms
        assert (row["band"], row["type"], row["episode"]) == (s.band_id, ev.type, ev.episode)
        assert row["t_s"] == pytest.approx(ev.t_s, abs=1e-9)
        assert row["emitted_at_s"] == pytest.approx(ev.emitted_at_s, abs=1e-9)
        for key, value in ev.details.items():
            if isinstance(value, float) and not math.isfinite(value):
                assert row[key] is None
            elif isinstance(value, bool | str):
                assert row[key] == value
            elif value is not None:
                assert row[key] == pytest.approx(float(value), rel=1e-12), key


async def publish(sink: MqttSink, events: list[StampedEvent]) -> None:
    for s in events:
        await sink.publish_event(s.band_id, s)


async def raw_client(cfg: MqttConfig, name: str) -> MqttAdapter:
    adapter = MqttAdapter(cfg, f"test-{name}-{next(names)}")
    adapter.start()
    return adapter


async def until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
