"""Detector events → MqttSink (outbox) → real Mosquitto → Recorder → real influxd, with faults.

Every test starts its own gateway sink and recorder (own client ids, outbox, spool
and database) against the module's Mosquitto and influxd, pushes a stream of
events produced by the real detector, and checks with InfluxQL that each event
is stored exactly once with its values intact.  No fakes: faults are real
process stops/kills and real ACL refusals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from sensor_gateway.influx import InfluxQuery, InfluxV1Writer
from sensor_gateway.messages import Topics, build_event
from sensor_gateway.mqtt import MqttAdapter
from tests.fixtures.servers import InfluxServer, MosquittoServer
from tests.integration.mqtt_rig import (
    BASE_EVENTS,
    T0,
    Body,
    Rig,
    cfg_for,
    check_exactly_once,
    names,
    night,
    publish,
    raw_client,
    run_rig,
    until,
)

pytestmark = pytest.mark.integration


async def _test_detector_events_end_to_end_exactly_once(rig: Rig) -> None:
    assert any(e.type == "cramp_end" for e in BASE_EVENTS), "detector produced no cramp"
    sent = night(len(BASE_EVENTS) * 2)
    await rig.new_recorder(share_group="recorders")
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await publish(sink, sent)
    assert await sink.wait_drained(10.0)
    rows = await rig.wait_stored(len(sent))
    check_exactly_once(rows, sent)
    assert sink.counts["events_acked"] == len(sent)
    # gateway online status is stored too (retained, QoS 1)
    gw = await rig.query.rows(f"SELECT online FROM gateway_status WHERE gateway = '{rig.gw}'")
    assert gw and gw[-1]["online"] is True


async def _test_home_assistant_sees_discovery_and_last_cramp(rig: Rig) -> None:
    sent = night(len(BASE_EVENTS))
    ends = [s for s in sent if s.event.type == "cramp_end"]
    sink = rig.new_sink(homeassistant=True)
    assert await sink.wait_connected()
    await publish(sink, sent)
    assert await sink.wait_drained(10.0)
    await asyncio.sleep(0.3)
    # Home Assistant connects later: everything it needs is retained
    ha = await raw_client(cfg_for(rig.mosquitto, "homeassistant"), "ha")
    assert await ha.wait_connected(5.0)
    ha.subscribe([("homeassistant/+/crampwatch_band_a/+/config", 1),
                  (Topics().last_cramp("band-a"), 1)])  # fmt: skip
    got: dict[str, bytes] = {}
    await until(lambda: _drain(ha, got) >= 5, 5.0)
    await ha.stop()
    configs = sorted(t.split("/")[1] + "/" + t.split("/")[3] for t in got if "config" in t)
    assert configs == ["binary_sensor/connected", "binary_sensor/cramp", "sensor/battery",
                       "sensor/last_cramp"]  # fmt: skip
    last = json.loads(got[Topics().last_cramp("band-a")])
    assert (last["type"], last["episode"]) == ("cramp_end", ends[-1].event.episode)
    print(f"home assistant: {len(got)} retained messages, last cramp = episode {last['episode']}")


def _drain(client: MqttAdapter, into: dict[str, bytes]) -> int:
    while not client.messages.empty():
        msg = client.messages.get_nowait()
        assert msg.retain
        into[msg.topic] = msg.payload
    return len(into)


async def _test_broker_killed_mid_stream_loses_and_duplicates_nothing(rig: Rig) -> None:
    sent = night(120)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await publish(sink, sent[:40])
    rig.mosquitto.kill()  # SIGKILL: PUBACKs, queued messages in flight are cut off
    await publish(sink, sent[40:90])  # the outbox takes them while the broker is gone
    assert len(sink.outbox) >= 50
    rig.mosquitto.start()
    await publish(sink, sent[90:])
    assert await sink.wait_drained(20.0)
    rows = await rig.wait_stored(len(sent))
    print(f"broker kill: sent={len(sent)} received={recorder.counts['received']} "
          f"stored={len(rows)}")  # fmt: skip
    check_exactly_once(rows, sent)
    # the gateway status sent at the reconnect carried the outbox backlog
    backlog = await rig.query.rows("SELECT max(outbox_entries) AS n, max(outbox_bytes) AS b "
                                   f"FROM gateway_status WHERE gateway = '{rig.gw}'")  # fmt: skip
    assert backlog and backlog[0]["n"] >= 50 and backlog[0]["b"] > 0


async def _test_influxdb_down_spools_and_drains_in_order(rig: Rig) -> None:
    sent = night(90)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await publish(sink, sent[:30])
    await rig.wait_stored(30)
    rig.influxdb.stop()
    await publish(sink, sent[30:60])
    deadline = time.monotonic() + 10
    while recorder.buffer.counts["points_spooled"] < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert recorder.buffer.counts["points_spooled"] == 30
    assert len(recorder.buffer.spool) > 0
    backlog = recorder.status()
    assert backlog["spool_batches"] == len(recorder.buffer.spool) and backlog["spool_bytes"] > 0
    await recorder.write_status()  # spooled as well: the outage is on the record afterwards
    await asyncio.get_running_loop().run_in_executor(None, rig.influxdb.start)
    await publish(sink, sent[60:])
    rows = await rig.wait_stored(len(sent))
    print(f"influx stop: sent={len(sent)} received={recorder.counts['received']} "
          f"spooled={recorder.buffer.counts['points_spooled']} stored={len(rows)}")  # fmt: skip
    check_exactly_once(rows, sent)
    await until(lambda: len(recorder.buffer.spool) == 0, 5.0)
    assert len(recorder.buffer.spool) == 0
    status = await rig.query.rows("SELECT spool_batches, spool_bytes FROM recorder_status")
    assert [(r["spool_batches"], r["spool_bytes"]) for r in status] == [
        (backlog["spool_batches"], backlog["spool_bytes"])
    ]


async def _test_full_spool_holds_acks_and_loses_nothing(rig: Rig) -> None:
    sent = night(100)
    # a spool with room for a few batches only
    recorder = await rig.new_recorder(spool_max_bytes=4000)
    buffer = recorder.buffer
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await publish(sink, sent[:20])
    await rig.wait_stored(20)
    rig.influxdb.stop()
    for k in range(20, 80, 4):  # small batches: the spool fills step by step
        await publish(sink, sent[k : k + 4])
        await asyncio.sleep(0.1)
    assert await sink.wait_drained(10.0)  # the broker has them all
    await until(lambda: buffer.counts["store_failed"] > 0, 10.0)
    assert buffer.spool.rejected > 0 and buffer.spool.bytes_used <= 4000
    held = recorder.counts["received"] - 20 - buffer.counts["points_spooled"]
    assert held > 0, "messages beyond the spool are held, not acknowledged"
    await asyncio.get_running_loop().run_in_executor(None, rig.influxdb.start)
    await publish(sink, sent[80:])
    rows = await rig.wait_stored(len(sent))
    print(f"full spool: sent={len(sent)} received={recorder.counts['received']} "
          f"spooled={buffer.counts['points_spooled']} (spool 4000 B, "
          f"{buffer.spool.rejected} appends refused) stored={len(rows)}")  # fmt: skip
    check_exactly_once(rows, sent)
    assert len(buffer.spool) == 0


async def _test_gateway_and_recorder_restarts_lose_nothing(rig: Rig) -> None:
    sent = night(150)
    recorder = await rig.new_recorder()
    sink = rig.new_sink()
    assert await sink.wait_connected()
    await publish(sink, sent[:50])
    sink.crash()  # killed gateway: whatever was not PUBACKed stays in the outbox
    sink = rig.new_sink()  # same client id and outbox dir
    assert len(sink.outbox) <= 50
    await publish(sink, sent[50:80])
    await until(lambda: recorder.counts["stored_EventMessage"] >= 40, 10.0)
    received_first = recorder.counts["received"]
    recorder.crash()  # killed recorder: unacked messages stay with the broker
    await publish(sink, sent[80:120])  # queued in the recorder's persistent session
    assert await sink.wait_drained(10.0)
    recorder = await rig.new_recorder()
    await publish(sink, sent[120:])
    rows = await rig.wait_stored(len(sent))
    print(f"restarts: sent={len(sent)} received={received_first}+{recorder.counts['received']} "
          f"stored={len(rows)}")  # fmt: skip
    check_exactly_once(rows, sent)


async def _test_auth_and_acl_keep_strangers_out(rig: Rig) -> None:
    recorder = await rig.new_recorder()
    topics = Topics()
    # no credentials at all: the broker refuses the connection
    anon = await raw_client(cfg_for(rig.mosquitto, ""), "anon")
    assert not await anon.wait_connected(2.0)
    await anon.stop()
    # wrong password
    wrong = await raw_client(cfg_for(rig.mosquitto, "band-a", password="guess"), "wrong")
    assert not await wrong.wait_connected(2.0)
    await wrong.stop()

    published: list[tuple[int, bool]] = []
    cfg_a = cfg_for(rig.mosquitto, "band-a")
    band_a = MqttAdapter(cfg_a, f"test-band-a-{next(names)}",
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
    ro = MqttAdapter(cfg_for(rig.mosquitto, "recorder"), f"test-ro-{next(names)}",
                     on_published=lambda mid, ok, _r: published.append((mid, ok)))  # fmt: skip
    ro.start()
    assert await ro.wait_connected(5.0)
    mid = ro.publish(topics.event("band-a"), ev("band-a", 3), 1)
    await until(lambda: mid in dict(published), 5.0)
    await ro.stop()
    assert dict(published)[mid] is False


async def _test_bad_payloads_are_counted_and_skipped(rig: Rig) -> None:
    recorder = await rig.new_recorder()
    gw = MqttAdapter(cfg_for(rig.mosquitto, "gateway"), f"test-gw-{next(names)}")
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
        "too_large": json.dumps({**doc, "junk": "y" * (4 << 20)}).encode(),  # 4 MiB
        "topic": good,  # a band-a event on band-b's topic
    }
    for kind, payload in bad.items():
        topic = topics.event("band-b") if kind == "topic" else topics.event("band-a")
        gw.publish(topic, payload, 1)
    # a number float() cannot hold (this once stopped the recorder's consumer)
    gw.publish(topics.event("band-a"), good.replace(b'"duration_s":31.0', b'"duration_s":1'
                                                    + b"0" * 400), 1)  # fmt: skip
    gw.publish(topics.summary("band-a"), b"\x00\x01", 0)
    gw.publish(topics.event("band-a"), good, 1)
    rows = await rig.wait_stored(1, timeout_s=10.0)
    await until(lambda: recorder.counts["received"] >= 8, 5.0)
    await gw.stop()
    assert [r["event_id"] for r in rows] == [good_id]  # the good one after all the bad ones
    for kind in bad:
        assert recorder.counts[f"invalid_{kind}"] >= 1, kind
    assert recorder.counts["invalid_not_json"] == 2  # event + summary
    assert recorder.counts["invalid_range"] == 2  # 1e12 µV and the 400-digit duration
    print(f"bad payloads: sent=8 received={recorder.counts['received']} stored={len(rows)} "
          f"counts={dict(recorder.counts)}")  # fmt: skip


def test_v1_writer_gzip_body_is_stored(influxdb: InfluxServer) -> None:
    """``[influx].gzip``: influxd 1.x takes the compressed body (Content-Encoding: gzip)."""
    db = f"gz_{next(names)}"
    influxdb.create_database(db)
    points = [f"envelope,band=band-a rms_uv={i}.5 {int(T0 * 1000) + i}" for i in range(500)]

    async def main() -> list[dict[str, object]]:
        writer = InfluxV1Writer(influxdb.url, db, gzip=True)
        query = InfluxQuery(influxdb.url, db)
        try:
            await writer.write(points)
            return await query.rows("SELECT rms_uv FROM envelope")
        finally:
            await writer.close()
            await query.close()

    rows = asyncio.run(main())
    assert [r["rms_uv"] for r in rows] == [i + 0.5 for i in range(500)]


@pytest.mark.parametrize(
    "scenario",
    [
        _test_detector_events_end_to_end_exactly_once,
        _test_home_assistant_sees_discovery_and_last_cramp,
        _test_broker_killed_mid_stream_loses_and_duplicates_nothing,
        _test_influxdb_down_spools_and_drains_in_order,
        _test_gateway_and_recorder_restarts_lose_nothing,
        _test_auth_and_acl_keep_strangers_out,
        _test_bad_payloads_are_counted_and_skipped,
    ],
    ids=lambda f: f.__name__.removeprefix("_test_"),
)
def test_rig_scenario(
    scenario: Body, mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """Each scenario above (its docstring says what it checks) on a fresh rig."""
    run_rig(scenario, mosquitto, influxdb, tmp_path)


def test_full_spool_holds_acks_and_loses_nothing(
    mosquitto: MosquittoServer,
    influxdb: InfluxServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """See :func:`_test_full_spool_holds_acks_and_loses_nothing`; the fill is said loudly."""
    with caplog.at_level(logging.WARNING):
        run_rig(_test_full_spool_holds_acks_and_loses_nothing, mosquitto, influxdb, tmp_path)
    said = [r.getMessage() for r in caplog.records]
    assert any("influx spool" in m and "% full" in m for m in said), "warning near full"
    assert sum("FULL" in m for m in said) == 1, "the refusal is an error, once"
    assert sum("cannot store a batch" in m for m in said if "points" in m) == 1
