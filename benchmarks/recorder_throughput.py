"""Recorder throughput into a real influxd, and onset-to-MQTT / onset-to-InfluxDB latency.

Starts a private Mosquitto and influxd exactly as the test fixtures do
(``tests/fixtures/servers.py``: auth, ACL, persistence with autosave) and
measures, in one run, on the same points (half ``cramp_end`` events, half 1 Hz
envelope summaries, as the recorder writes them):

reference
    the recorder's own line protocol for those points, prebuilt, POSTed straight
    to ``/write`` in batches of the recorder's batch size, plain and gzip'd: the
    ceiling influxd sets on this machine;
recorder
    ``Recorder.store`` (strict validation + mapping per message) and
    ``BufferedWriter`` (batching, pipelined writes, acks after the write) into
    influxd, fed with the MQTT payloads directly: points/s, target >= 50,000, and
    the ratio to the reference.  Reference and recorder run twice, alternated
    (influxd compacts in the background after each); the best of each is shown;
recorder via Mosquitto
    QoS 1 events published by ``mosquitto_pub`` (a separate C process, like a
    gateway) through the broker to an online recorder (manual PUBACK after the
    write, in-flight window 1000) until influxd holds all of them: messages/s,
    once with a broker that does not save its database on every change and once
    with the fixtures' broker, which does (docs/mqtt.md explains the price);
latency
    a spasm onset handed to ``MqttSink.publish_event`` (outbox fsync included) →
    a subscriber receives it (onset-to-MQTT) and → the recorder's InfluxDB write
    containing it returned (onset-to-InfluxDB): p50 / p95.  The detector's own
    delay (onset in the signal → event emitted) is in ``benchmarks/detector_speed.py``.

Run: ``.venv/bin/python benchmarks/recorder_throughput.py [--points N] [--mqtt-events N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cramp_signal.events import DetectorEvent
from sensor_gateway.band_stream import StampedEvent
from sensor_gateway.influx import InfluxV1Writer
from sensor_gateway.messages import Topics, build_event, build_summary
from sensor_gateway.mqtt import MqttAdapter, MqttConfig, Received
from sensor_gateway.mqtt_sink import MqttSink
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import Recorder
from tests.fixtures.servers import MOSQUITTO_PUB, InfluxServer, MosquittoServer, private_broker

T0 = 1_709_254_800.0
BATCH = 5000


def _event(band: str, i: int) -> tuple[str, bytes]:
    return Topics().event(band), build_event(
        "gw", band, event_type="cramp_end", episode=i, wall_time_s=T0 + i / 4, t_s=i / 4,
        emitted_at_s=i / 4 + 0.5, published_s=T0 + i / 4 + 1,
        details={"duration_s": 30.0, "peak_rms_uv": 150.0, "severity": "moderate"},
    )[1]  # fmt: skip


def _payloads(n: int) -> list[tuple[str, bytes]]:
    """``n`` valid payloads: events and summaries alternating, four bands."""
    topics = Topics()
    out = []
    for i in range(n):
        band = f"band-{i % 4}"
        if i % 2:
            s = {"t_s": i / 4, "rms_uv": 3.0 + i % 7, "peak_uv": 9.0, "noise_floor_uv": 2.0,
                 "on_threshold_uv": 8.0, "quality": "ok", "acc_activity_g": 0.01,
                 "state": "idle"}  # fmt: skip
            out.append((topics.summary(band), build_summary("gw", band, T0 + i / 4, s)))
        else:
            out.append(_event(band, i))
    return out


def _pct(values: Sequence[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


class TimingWriter(InfluxV1Writer):
    """An :class:`InfluxV1Writer` noting when each event id's write returned."""

    stored_at: dict[str, float]

    async def write(self, lines: Sequence[str]) -> None:
        """Write, then note the time for every ``event_id`` in the batch."""
        await super().write(lines)
        now = time.perf_counter()
        for ln in lines:
            if 'event_id="' in ln:
                self.stored_at[ln.split('event_id="', 1)[1].split('"', 1)[0]] = now


async def _count(influx: InfluxServer, db: str, q: str) -> int:
    doc = await asyncio.get_running_loop().run_in_executor(None, influx.query, q, db)
    series = doc["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


async def _reference(influx: InfluxServer, lines: list[str], db: str, gzip: bool) -> float:
    """Points/s of prebuilt line protocol POSTed in batches (gzip level 1 or plain)."""
    influx.create_database(db)
    raw = InfluxV1Writer(influx.url, db, gzip=gzip)
    bodies = ["\n".join(lines[i : i + BATCH]).encode() for i in range(0, len(lines), BATCH)]
    t = time.perf_counter()
    for body in bodies:
        await raw.write_body(body)
    rate = len(lines) / (time.perf_counter() - t)
    await raw.close()
    return rate


def _mq(mosq: MosquittoServer, user: str, **kw: object) -> MqttConfig:
    return MqttConfig(port=mosq.port, username=user, password=mosq.passwords[user],
                      gateway_id="gw", **kw)  # type: ignore[arg-type]  # fmt: skip


async def _recorder_core(
    mosq: MosquittoServer, influx: InfluxServer, msgs: list[Received], db: str, tmp: Path
) -> float:
    """Points/s of ``Recorder.store`` (validate, map, batch, pipelined write) into influxd."""
    influx.create_database(db)
    rec = Recorder(_mq(mosq, "recorder"), InfluxV1Writer(influx.url, db), Outbox(tmp / db),
                   batch_size=BATCH)  # fmt: skip
    t = time.perf_counter()
    for i in range(0, len(msgs), 1000):
        await rec.store(msgs[i : i + 1000])  # what the recorder does per received burst
    await rec.buffer.flush()
    rate = len(msgs) / (time.perf_counter() - t)
    await rec.buffer.writer.close()
    stored = await _count(influx, db, "SELECT count(rms_uv) FROM envelope")
    stored += await _count(influx, db, "SELECT count(event_id) FROM cramp_event")
    assert rec.counts["received"] == len(msgs) == stored
    assert not any(k.startswith("invalid") for k in rec.counts)
    return rate


async def _via_mosquitto(mosq: MosquittoServer, influx: InfluxServer, n: int, tmp: Path) -> float:
    """Messages/s: mosquitto_pub (QoS 1) -> broker -> online recorder -> influxd, all stored."""
    db = f"mqtt_{mosq.directory.name}"
    influx.create_database(db)
    rec = Recorder(_mq(mosq, "recorder", max_inflight=1000, queue_size=20_000),
                   InfluxV1Writer(influx.url, db), Outbox(tmp / f"spool-{db}"),
                   batch_size=BATCH, client_role="bench")  # fmt: skip
    await rec.start()
    assert await rec.adapter.wait_connected(10)
    await asyncio.sleep(0.3)  # SUBACK
    feed = tmp / "events.txt"
    feed.write_bytes(b"\n".join(_event("band-a", i)[1] for i in range(n)) + b"\n")
    t = time.perf_counter()
    with feed.open("rb") as stdin:
        pub = subprocess.Popen(
            [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(mosq.port), "-u", "gateway", "-P",
             mosq.passwords["gateway"], "-V", "5", "-q", "1", "-M", "1000", "-l",
             "-t", Topics().event("band-a")], stdin=stdin,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while rec.buffer.counts["points_written"] < n:
            assert time.monotonic() < deadline, f"stuck: {dict(rec.counts)}"
            await asyncio.sleep(0.01)
        rate = n / (time.perf_counter() - t)
        assert pub.wait(30) == 0
    await rec.close()
    assert await _count(influx, db, "SELECT count(event_id) FROM cramp_event") == n
    return rate


async def bench(points: int, mqtt_events: int, tmp: Path) -> None:
    mosq = private_broker(tmp / "mosq")
    # the same broker without saving its database on every change (see docs/mqtt.md)
    lazy = private_broker(tmp / "mosq-lazy")
    conf = lazy.config_file.read_text()
    lazy.config_file.write_text(
        conf.replace("autosave_on_changes true", "autosave_on_changes false")
    )
    influx = InfluxServer.create(tmp / "influx")
    for server in (mosq, lazy, influx):
        server.start()
    try:
        payloads = _payloads(points)
        msgs = [Received(tp, pl, 1, False, i, 0) for i, (tp, pl) in enumerate(payloads)]
        rec = Recorder(_mq(mosq, "recorder"), InfluxV1Writer(influx.url, "-"), Outbox(tmp / "x"))
        ref_lines = [p for p in map(rec.handle, msgs) if p is not None]
        gc.freeze()  # the test data is not the recorder's: keep it out of GC passes

        # ---- reference and recorder, alternated twice (influxd compacts in between): best
        ref_plain, ref_gzip, core_rate = 0.0, 0.0, 0.0
        for k in range(2):
            ref_plain = max(ref_plain, await _reference(influx, ref_lines, f"ref{k}", gzip=False))
            ref_gzip = max(ref_gzip, await _reference(influx, ref_lines, f"gz{k}", gzip=True))
            core_rate = max(core_rate, await _recorder_core(mosq, influx, msgs, f"core{k}", tmp))

        # ---- recorder via Mosquitto, the fixtures' broker and the lazy-autosave one
        saving_events = min(mqtt_events, 4000)
        mqtt_saving = await _via_mosquitto(mosq, influx, saving_events, tmp)
        mqtt_lazy = await _via_mosquitto(lazy, influx, mqtt_events, tmp)

        # ---- latency: onset handed to the sink -> MQTT subscriber / InfluxDB write
        def mq(user: str, **kw: object) -> MqttConfig:
            return _mq(mosq, user, **kw)

        influx.create_database("lat")
        timing = TimingWriter(influx.url, "lat")
        timing.stored_at = {}
        lat_rec = Recorder(mq("recorder"), timing, Outbox(tmp / "spool-lat"),
                           batch_size=BATCH, flush_interval_s=0.05, client_role="lat")  # fmt: skip
        await lat_rec.start()
        seen_at: dict[str, float] = {}
        watcher = MqttAdapter(mq("recorder"), "bench-watch")
        watcher.start()
        assert await watcher.wait_connected(10) and await lat_rec.adapter.wait_connected(10)
        watcher.subscribe([("crampwatch/band/+/event", 1)])

        async def watch() -> None:
            while True:
                m = await watcher.messages.get()
                seen_at[json.loads(m.payload)["event_id"]] = time.perf_counter()

        watch_task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        sink = MqttSink(mq("gateway", outbox_dir=tmp / "outbox"))
        assert await sink.wait_connected()
        handed: dict[str, float] = {}
        for k in range(200):
            ev = DetectorEvent("spasm_onset", k + 1, 10.0 * k, 10.0 * k + 0.075,
                               {"env_uv": 80.0})  # fmt: skip
            stamped = StampedEvent("band-a", ev, T0 + 10.0 * k)
            eid = build_event("gw", "band-a", event_type=ev.type, episode=ev.episode,
                              wall_time_s=stamped.wall_time, t_s=0, emitted_at_s=0,
                              details={}, published_s=0)[0]  # fmt: skip
            handed[eid] = time.perf_counter()
            await sink.publish_event("band-a", stamped)
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 10
        while len(timing.stored_at) < len(handed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        to_mqtt = [1000 * (seen_at[e] - t0) for e, t0 in handed.items() if e in seen_at]
        to_influx = [1000 * (timing.stored_at[e] - t0) for e, t0 in handed.items()
                     if e in timing.stored_at]  # fmt: skip
        watch_task.cancel()
        await sink.close()
        await watcher.stop()
        await lat_rec.close()

        ref = max(ref_plain, ref_gzip)
        print(
            f"points: {points} (half cramp_end events, half envelope summaries, 4 bands); "
            f"batches of {BATCH}; 2 shared cores, influxd {influx.version()} on loopback"
        )
        print(f"reference /write, same points, plain : {ref_plain:9.0f} points/s")
        print(
            f"reference /write, same points, gzip 1: {ref_gzip:9.0f} points/s  "
            f"([influx].gzip = false by default; faster here: "
            f"{'gzip' if ref_gzip > ref_plain else 'plain'})"
        )
        print(
            f"recorder -> influxd                  : {core_rate:9.0f} points/s  "
            f"ratio vs reference {core_rate / ref:.2f}  (target >= 50000; best of 2 like "
            f"the reference)"
        )
        print(
            f"recorder via Mosquitto, QoS 1        : {mqtt_lazy:9.0f} msgs/s    "
            f"ratio vs reference {mqtt_lazy / ref:.2f}  ({mqtt_events} events, "
            f"mosquitto_pub -> broker -> recorder -> influxd)"
        )
        print(
            f"  same, broker saving every change   : {mqtt_saving:9.0f} msgs/s    "
            f"({saving_events} events; autosave_on_changes + autosave_interval 1, as the "
            f"fixtures and docs/mqtt.md configure it for crash safety)"
        )
        print(
            f"onset -> MQTT subscriber             : p50 {_pct(to_mqtt, 50):6.1f} ms  "
            f"p95 {_pct(to_mqtt, 95):6.1f} ms  (n={len(to_mqtt)})"
        )
        print(
            f"onset -> InfluxDB written            : p50 {_pct(to_influx, 50):6.1f} ms  "
            f"p95 {_pct(to_influx, 95):6.1f} ms  (n={len(to_influx)}, flush timer 50 ms)"
        )
    finally:
        mosq.kill()
        lazy.kill()
        influx.stop()


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--mqtt-events", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.points, args.mqtt_events, Path(tmp)))


if __name__ == "__main__":
    main()
