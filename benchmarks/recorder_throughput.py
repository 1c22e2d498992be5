"""Recorder throughput into a real influxd, and onset-to-MQTT / onset-to-InfluxDB latency.

Starts a private Mosquitto and influxd (the test fixtures' classes) and measures,
in one run:

reference
    raw HTTP ``/write`` of prebuilt line protocol (batches of 5000) - the ceiling;
recorder core
    ``Recorder.handle`` (validate + map) + ``BufferedWriter`` into influxd, fed with
    MQTT payloads directly (points/s, target >= 50,000);
full path
    QoS 1 payloads published to Mosquitto, consumed by the recorder (manual acks),
    stored in influxd (messages/s);
latency
    ``MqttSink.publish_event`` of a spasm onset (the moment the gateway hands it
    over) → a subscriber receives it (onset-to-MQTT) and → the recorder's InfluxDB
    write containing it returned (onset-to-InfluxDB): p50 / p95.

Run: ``.venv/bin/python benchmarks/recorder_throughput.py [--points N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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
from tests.fixtures.servers import InfluxServer, MosquittoServer

T0 = 1_709_254_800.0


def _payloads(n: int) -> list[tuple[str, bytes]]:
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
            out.append((topics.event(band), build_event(
                "gw", band, event_type="cramp_end", episode=i, wall_time_s=T0 + i / 4,
                t_s=i / 4, emitted_at_s=i / 4 + 0.5, published_s=T0 + i / 4 + 1,
                details={"duration_s": 30.0, "peak_rms_uv": 150.0, "severity": "moderate"},
            )[1]))  # fmt: skip
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


async def _count(influx: InfluxServer, db: str) -> int:
    doc = await asyncio.get_running_loop().run_in_executor(
        None, influx.query, "SELECT count(rms_uv) FROM envelope", db
    )
    series = doc["results"][0].get("series")  # type: ignore[index]
    return int(series[0]["values"][0][1]) if series else 0


async def bench(points: int, tmp: Path) -> None:
    mosq = MosquittoServer.create(tmp / "mosq")
    influx = InfluxServer.create(tmp / "influx")
    mosq.start()
    influx.start()
    try:
        payloads = _payloads(points)

        def mq(user: str, **kw: object) -> MqttConfig:
            return MqttConfig(port=mosq.port, username=user, password=mosq.passwords[user],
                              gateway_id="gw", **kw)  # type: ignore[arg-type]  # fmt: skip

        # ---- reference: raw /write of prebuilt line protocol
        influx.create_database("ref")
        ref_lines = [f"envelope,band=band-{i % 4},gateway=gw rms_uv={i % 7}.5 "
                     f"{int(T0 * 1000) + i}" for i in range(points)]  # fmt: skip
        raw = InfluxV1Writer(influx.url, "ref")
        bodies = ["\n".join(ref_lines[i : i + 5000]).encode() for i in range(0, points, 5000)]
        t = time.perf_counter()
        for body in bodies:
            await raw.write_body(body)
        ref_s = time.perf_counter() - t
        await raw.close()
        ref_rate = points / ref_s

        # ---- recorder core: validate + map + batch + write, no MQTT
        influx.create_database("core")
        rec = Recorder(mq("recorder"), InfluxV1Writer(influx.url, "core"),
                       Outbox(tmp / "spool-core"), batch_size=5000)  # fmt: skip
        msgs = [Received(tp, pl, 1, False, i, 0) for i, (tp, pl) in enumerate(payloads)]
        t = time.perf_counter()
        for i in range(0, len(msgs), 1000):
            lines = [p for p in map(rec.handle, msgs[i : i + 1000]) if p is not None]
            await rec.buffer.add(lines)
        await rec.buffer.flush()
        core_s = time.perf_counter() - t
        core_rate = points / core_s
        await rec.buffer.writer.close()
        assert rec.counts["received"] == points and sum(
            v for k, v in rec.counts.items() if k.startswith("invalid")) == 0  # fmt: skip

        # ---- full path through Mosquitto (summaries part only, QoS 1 to be lossless)
        influx.create_database("full")
        n_full = min(points, 40_000)
        full = Recorder(mq("recorder", max_inflight=1000, queue_size=20_000),
                        InfluxV1Writer(influx.url, "full"), Outbox(tmp / "spool-full"),
                        batch_size=5000, flush_interval_s=0.05, client_role="bench")  # fmt: skip
        await full.start()
        assert await full.adapter.wait_connected(10)
        await asyncio.sleep(0.3)
        pub = MqttAdapter(mq("gateway", max_inflight=1000), "bench-pub")
        pub.start()
        assert await pub.wait_connected(10)
        summaries = [p for p in payloads if p[0].endswith("summary")][:n_full]
        t = time.perf_counter()
        for k, (tp, pl) in enumerate(summaries):
            pub.publish(tp, pl, 1)
            if k % 2000 == 0:
                await asyncio.sleep(0)
        while await _count(influx, "full") < len(summaries):
            await asyncio.sleep(0.05)
        full_s = time.perf_counter() - t
        full_rate = len(summaries) / full_s
        await pub.stop()

        # ---- latency: onset handed to the sink -> MQTT subscriber / InfluxDB write
        influx.create_database("lat")
        timing = TimingWriter(influx.url, "lat")
        timing.stored_at = {}
        lat_rec = Recorder(mq("recorder"), timing, Outbox(tmp / "spool-lat"),
                           batch_size=5000, flush_interval_s=0.05, client_role="lat")  # fmt: skip
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
        await full.close()

        print(f"points: {points}  (half events, half summaries; 2 shared cores, influxd local)")
        print(f"reference raw /write      : {ref_rate:10.0f} points/s")
        print(f"recorder core -> influxd  : {core_rate:10.0f} points/s  "
              f"ratio vs reference {core_rate / ref_rate:.2f}  (target >= 50000)")  # fmt: skip
        print(
            f"full path via Mosquitto   : {full_rate:10.0f} msgs/s    "
            f"ratio vs reference {full_rate / ref_rate:.2f}  ({len(summaries)} QoS 1 msgs)"
        )
        print(f"onset -> MQTT subscriber  : p50 {_pct(to_mqtt, 50):6.1f} ms  "
              f"p95 {_pct(to_mqtt, 95):6.1f} ms  (n={len(to_mqtt)})")  # fmt: skip
        print(
            f"onset -> InfluxDB written : p50 {_pct(to_influx, 50):6.1f} ms  "
            f"p95 {_pct(to_influx, 95):6.1f} ms  (n={len(to_influx)}, flush 50 ms)"
        )
    finally:
        mosq.kill()
        influx.stop()


def main() -> None:
    """Parse ``--points`` and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args.points, Path(tmp)))


if __name__ == "__main__":
    main()
