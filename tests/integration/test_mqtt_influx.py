"""Detector events → MqttSink (outbox) → real Mosquitto → Recorder → real influxd, with faults.

Every test starts its own gateway sink and recorder (own client ids, outbox, spool
and database) against the module's Mosquitto and influxd, pushes a stream of
events produced by the real detector, and checks with InfluxQL that each event
is stored exactly once with its values intact.  No fakes: faults are real
process stops/kills and real ACL refusals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
from sensor_gateway.messages import Topics, build_event
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.mqtt_sink import MqttSink
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import Recorder
from tests.fixtures.servers import InfluxServer, MosquittoServer

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 1, 0, 0, tzinfo=UTC).timestamp()
_names = itertools.count()


def _detector_events() -> list[DetectorEvent]:
    """Run the real detector over 90 s of synthetic EMG with four bursts."""
    fs = 1000.0
    rng = np.random.default_rng(11)
    x = rng.normal(scale=5.0, size=int(90 * fs))
    for on, end, rms in ((10.0, 12.0, 90.0), (25.0, 45.0, 120.0), (55.0, 57.5, 80.0),
                         (65.0, 85.0, 150.0)):  # fmt: skip
        x[int(on * fs) : int(end * fs)] += rng.normal(scale=rms, size=int((end - on) * fs))
    return [e for e in detect_array(x, fs) if e.type != "signal_quality"]


_BASE = _detector_events()


def night(n: int, band_id: str = "band-a") -> list[StampedEvent]:
    """``n`` events: the detector's events repeated, each repetition 1000 s later."""
    out: list[StampedEvent] = []
    for k in itertools.count():
        for ev in _BASE:
            if len(out) == n:
                return out
            shifted = replace(ev, episode=ev.episode + 100 * k, t_s=ev.t_s + 1000.0 * k,
                              emitted_at_s=ev.emitted_at_s + 1000.0 * k)  # fmt: skip
            out.append(StampedEvent(band_id, shifted, T0 + shifted.t_s))
    return out


def _cfg(mosquitto: MosquittoServer, user: str, **kw: object) -> MqttConfig:
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
        n = next(_names)
        self.db = f"cw_{n}_{int(time.time())}"
        self.role = f"rec{n}"
        self.gw = f"gw-{n}"
        influxdb.create_database(self.db)
        self.query = InfluxQuery(influxdb.url, self.db)
        self.sink: MqttSink | None = None
        self.recorder: Recorder | None = None

    def new_sink(self, **kw: object) -> MqttSink:
        cfg = _cfg(self.mosquitto, "gateway", gateway_id=self.gw,
                   outbox_dir=self.tmp / "outbox", **kw)  # fmt: skip
        self.sink = MqttSink(cfg, close_timeout_s=1.0)
        return self.sink

    async def new_recorder(self, **kw: object) -> Recorder:
        cfg = _cfg(self.mosquitto, "recorder", **kw)
        spool = Outbox(self.tmp / "spool", name="influx spool")
        writer = InfluxV1Writer(self.influxdb.url, self.db, timeout_s=1.0)
        self.recorder = Recorder(cfg, writer, spool, batch_size=500, flush_interval_s=0.05,
                                 retry_interval_s=0.2, client_role=self.role)  # fmt: skip
        await self.recorder.start()
        assert await self.recorder.adapter.wait_connected(10.0)
        await asyncio.sleep(0.2)  # SUBACK
        return self.recorder

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
        if self.recorder is not None:
            await self.recorder.close()
        await self.query.close()


Body = Callable[[Rig], Awaitable[None]]


def _run(body: Body, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp: Path) -> None:
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


def _check_exactly_once(rows: list[dict[str, object]], sent: list[StampedEvent]) -> None:
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


async def _publish(sink: MqttSink, events: list[StampedEvent]) -> None:
    for s in events:
        await sink.publish_event(s.band_id, s)


async def _test_detector_events_end_to_end_exactly_once(rig: Rig) -> None:
    assert any(e.type == "cramp_end" for e in _BASE), "detector produced no cramp"
    sent = night(len(_BASE) * 2)
    await rig.new_recorder(share_group="recorders")
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await _publish(sink, sent)
    assert await sink.wait_drained(10.0)
    rows = await rig.wait_stored(len(sent))
    _check_exactly_once(rows, sent)
    assert sink.counts["events_acked"] == len(sent)
    # gateway online status is stored too (retained, QoS 1)
    gw = await rig.query.rows(f"SELECT online FROM gateway_status WHERE gateway = '{rig.gw}'")
    assert gw and gw[-1]["online"] is True


async def _test_broker_killed_mid_stream_loses_and_duplicates_nothing(rig: Rig) -> None:
    sent = night(120)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await _publish(sink, sent[:40])
    rig.mosquitto.kill()  # SIGKILL: PUBACKs, queued messages in flight are cut off
    await _publish(sink, sent[40:90])  # the outbox takes them while the broker is gone
    assert len(sink.outbox) >= 50
    rig.mosquitto.start()
    await _publish(sink, sent[90:])
    assert await sink.wait_drained(20.0)
    rows = await rig.wait_stored(len(sent))
    print(f"broker kill: sent={len(sent)} received={recorder.counts['received']} "
          f"stored={len(rows)}")  # fmt: skip
    _check_exactly_once(rows, sent)


async def _test_influxdb_down_spools_and_drains_in_order(rig: Rig) -> None:
    sent = night(90)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await _publish(sink, sent[:30])
    await rig.wait_stored(30)
    rig.influxdb.stop()
    await _publish(sink, sent[30:60])
    deadline = time.monotonic() + 10
    while recorder.buffer.counts["points_spooled"] < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert recorder.buffer.counts["points_spooled"] == 30
    assert len(recorder.buffer.spool) > 0
    await asyncio.get_running_loop().run_in_executor(None, rig.influxdb.start)
    await _publish(sink, sent[60:])
    rows = await rig.wait_stored(len(sent))
    print(f"influx stop: sent={len(sent)} received={recorder.counts['received']} "
          f"spooled={recorder.buffer.counts['points_spooled']} stored={len(rows)}")  # fmt: skip
    _check_exactly_once(rows, sent)
    assert len(recorder.buffer.spool) == 0


async def _test_gateway_and_recorder_restarts_lose_nothing(rig: Rig) -> None:
    sent = night(150)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await _publish(sink, sent[:50])
    sink.crash()  # killed gateway: whatever was not PUBACKed stays in the outbox
    sink = rig.new_sink()  # same client id and outbox dir
    assert len(sink.outbox) <= 50
    await _publish(sink, sent[50:80])
    await _until(lambda: recorder.counts["stored_EventMessage"] >= 40, 10.0)
    received_first = recorder.counts["received"]
    recorder.crash()  # killed recorder: unacked messages stay with the broker
    await _publish(sink, sent[80:120])  # queued in the recorder's persistent session
    assert await sink.wait_drained(10.0)
    recorder = await rig.new_recorder()
    await _publish(sink, sent[120:])
    rows = await rig.wait_stored(len(sent))
    print(f"restarts: sent={len(sent)} received={received_first}+{recorder.counts['received']} "
          f"stored={len(rows)}")  # fmt: skip
    _check_exactly_once(rows, sent)


async def _raw_client(cfg: MqttConfig, name: str) -> MqttAdapter:
    adapter = MqttAdapter(cfg, f"test-{name}-{next(_names)}")
    adapter.start()
    return adapter


async def _test_auth_and_acl_keep_strangers_out(rig: Rig) -> None:
    recorder = await rig.new_recorder()
    topics = Topics()
    # no credentials at all: the broker refuses the connection
    anon = await _raw_client(_cfg(rig.mosquitto, ""), "anon")
    assert not await anon.wait_connected(2.0)
    await anon.stop()
    # wrong password
    wrong = await _raw_client(_cfg(rig.mosquitto, "band-a", password="guess"), "wrong")
    assert not await wrong.wait_connected(2.0)
    await wrong.stop()

    published: list[tuple[int, bool]] = []
    cfg_a = _cfg(rig.mosquitto, "band-a")
    band_a = MqttAdapter(cfg_a, f"test-band-a-{next(_names)}",
                         on_published=lambda mid, ok, _r: published.append((mid, ok)))  # fmt: skip
    band_a.start()
    assert await band_a.wait_connected(5.0)

    def ev(band: str, k: int) -> bytes:
        return build_event("gw-test", band, event_type="spasm_onset", episode=k,
                           wall_time_s=T0 + k, t_s=float(k), emitted_at_s=float(k),
                           details={}, published_s=T0 + k)[1]  # fmt: skip

    forged = band_a.publish(topics.event("band-b"), ev("band-b", 1), 1)  # band A as band B
    forged_status = band_a.publish(topics.gateway_status("gw-test"), b"{}", 1, retain=True)
    own = band_a.publish(topics.event("band-a"), ev("band-a", 2), 1)  # its own topic: allowed
    rows = await rig.wait_stored(1, timeout_s=10.0)
    outcome = dict(published)
    await band_a.stop()
    assert outcome.get(forged) is False and outcome.get(forged_status) is False  # MQTT 5 refusal
    assert outcome.get(own) is True
    assert [(r["band"], r["episode"]) for r in rows] == [("band-a", 2)]
    band_b = await rig.query.rows("SELECT * FROM cramp_event WHERE band = 'band-b'")
    assert band_b == []
    print(f"acl: sent=2 events (1 forged) received={recorder.counts['received']} "
          f"stored={len(rows)}")  # fmt: skip

    # the recorder user is read-only
    ro = MqttAdapter(_cfg(rig.mosquitto, "recorder"), f"test-ro-{next(_names)}",
                     on_published=lambda mid, ok, _r: published.append((mid, ok)))  # fmt: skip
    ro.start()
    assert await ro.wait_connected(5.0)
    mid = ro.publish(topics.event("band-a"), ev("band-a", 3), 1)
    await _until(lambda: mid in dict(published), 5.0)
    await ro.stop()
    assert dict(published)[mid] is False


async def _until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _test_bad_payloads_are_counted_and_skipped(rig: Rig) -> None:
    recorder = await rig.new_recorder()
    gw = MqttAdapter(_cfg(rig.mosquitto, "gateway"), f"test-gw-{next(_names)}")
    gw.start()
    assert await gw.wait_connected(5.0)
    topics = Topics()
    good_id, good = build_event("gw-test", "band-a", event_type="cramp_end", episode=7,
                                wall_time_s=T0 + 7, t_s=7.0, emitted_at_s=7.5,
                                details={"duration_s": 31.0}, published_s=T0 + 8)  # fmt: skip
    doc = json.loads(good)
    bad = {
        "not_json": b"{oops",
        "schema": json.dumps({**doc, "schema": 99}).encode(),
        "range": json.dumps({**doc, "details": {"peak_rms_uv": 1e12}}).encode(),
        "too_large": json.dumps(
            {**doc, "details": {"pad": "x" * 200}} | {"junk": "y" * 20000}
        ).encode(),
        "topic": good,  # a band-a event on band-b's topic
    }
    for kind, payload in bad.items():
        topic = topics.event("band-b") if kind == "topic" else topics.event("band-a")
        gw.publish(topic, payload, 1)
    gw.publish(topics.summary("band-a"), b"\x00\x01", 0)
    gw.publish(topics.event("band-a"), good, 1)
    rows = await rig.wait_stored(1, timeout_s=10.0)
    await _until(lambda: recorder.counts["received"] >= 7, 5.0)
    await gw.stop()
    assert [r["event_id"] for r in rows] == [good_id]
    for kind in bad:
        assert recorder.counts[f"invalid_{kind}"] >= 1, kind
    assert recorder.counts["invalid_not_json"] == 2  # event + summary
    print(f"bad payloads: sent=7 received={recorder.counts['received']} stored={len(rows)} "
          f"counts={dict(recorder.counts)}")  # fmt: skip


def test_detector_events_end_to_end_exactly_once(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_detector_events_end_to_end_exactly_once`."""
    _run(_test_detector_events_end_to_end_exactly_once, mosquitto, influxdb, tmp_path)


def test_broker_killed_mid_stream_loses_and_duplicates_nothing(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_broker_killed_mid_stream_loses_and_duplicates_nothing`."""
    _run(_test_broker_killed_mid_stream_loses_and_duplicates_nothing, mosquitto, influxdb, tmp_path)


def test_influxdb_down_spools_and_drains_in_order(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_influxdb_down_spools_and_drains_in_order`."""
    _run(_test_influxdb_down_spools_and_drains_in_order, mosquitto, influxdb, tmp_path)


def test_gateway_and_recorder_restarts_lose_nothing(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_gateway_and_recorder_restarts_lose_nothing`."""
    _run(_test_gateway_and_recorder_restarts_lose_nothing, mosquitto, influxdb, tmp_path)


def test_auth_and_acl_keep_strangers_out(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_auth_and_acl_keep_strangers_out`."""
    _run(_test_auth_and_acl_keep_strangers_out, mosquitto, influxdb, tmp_path)


def test_bad_payloads_are_counted_and_skipped(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_bad_payloads_are_counted_and_skipped`."""
    _run(_test_bad_payloads_are_counted_and_skipped, mosquitto, influxdb, tmp_path)
