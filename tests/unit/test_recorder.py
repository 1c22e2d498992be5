"""Recorder core without servers: fast formatting matches the reference, hostile input is
counted and never raises, batches are written in order with acks only after the write.

The batching tests use a FAKE writer (its writes finish when the test says so):
the interleaving of a write in flight and the next batch filling up is timing a
real influxd cannot be made to show on demand.  The real-server versions of these
paths are in tests/integration/test_mqtt_influx.py and test_recorder_spool.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from sensor_gateway.errors import ConfigError
from sensor_gateway.influx import BufferedWriter, line
from sensor_gateway.messages import (
    EVENT_NAMESPACE,
    EventMessage,
    MessageError,
    StatusMessage,
    SummaryMessage,
    Topics,
    build_event,
    build_gateway_status,
    build_status,
    build_summary,
    event_id,
    parse_message,
    utc_ms,
)
from sensor_gateway.mqtt import MqttConfig, Received, default_gateway_id, tls_context
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import Recorder, status_line, to_line

T0 = 1_709_254_800.0
TOPICS = Topics()


def _event(i: int, details: dict[str, object] | None = None) -> tuple[str, bytes]:
    band = f"band-{i % 3}"
    return TOPICS.event(band), build_event(
        "gw1", band, event_type="cramp_end", episode=i, wall_time_s=T0 + i * 0.25,
        t_s=i * 0.25, emitted_at_s=i * 0.25 + 0.5, published_s=T0 + i * 0.25 + 0.8,
        details={"duration_s": 30 + i, "peak_rms_uv": 150.5, "severity": 'mod "x"',
                 "ok": i % 2 == 0, "median_frequency_hz": None} if details is None else details,
    )[1]  # fmt: skip


def _summary(i: int, rms: float | None = 3.5) -> tuple[str, bytes]:
    s = {"t_s": float(i), "rms_uv": rms, "peak_uv": 9.0, "noise_floor_uv": None,
         "on_threshold_uv": 8.0, "quality": "ok", "acc_activity_g": 0.01,
         "state": "idle", "tilt_deg": None if i % 2 else 10.0 * i}  # fmt: skip
    return TOPICS.summary("band-a"), build_summary("gw1", "band-a", T0 + i, s)


def test_event_id_is_rfc4122_uuid5() -> None:
    rng = random.Random(5)
    for _ in range(300):
        band = "".join(rng.choices("abcXYZ019_.:-", k=rng.randint(1, 20)))
        args = (band, rng.randint(0, 10**7), rng.choice(["spasm_onset", "cramp_end"]),
                rng.randint(946_684_800_000, 4_102_444_799_999))  # fmt: skip
        name = "/".join(map(str, args))
        assert event_id(*args) == str(uuid.uuid5(EVENT_NAMESPACE, name))


def test_fast_event_and_summary_points_equal_the_generic_line_protocol() -> None:
    for i in range(50):
        msg = parse_message(*_event(i))
        assert isinstance(msg, EventMessage)
        fields = {"event_id": msg.event_id, "episode": msg.episode, "t_s": msg.t_s,
                  "emitted_at_s": msg.emitted_at_s,
                  "publish_delay_s": (msg.published_ms - msg.time_ms) / 1000.0,
                  **{k: float(v) if type(v) is int else v
                     for k, v in msg.details.items()}}  # fmt: skip
        tags = {"type": msg.type, "band": msg.band_id, "gateway": msg.gateway}
        assert to_line(msg, 0) == line("cramp_event", tags, fields, msg.time_ms)
    for i, rms in enumerate((3.5, None, 0.0, 1e6)):
        msg = parse_message(*_summary(i, rms))
        assert isinstance(msg, SummaryMessage)
        fields = {k: getattr(msg, k) for k in ("t_s", "rms_uv", "peak_uv", "noise_floor_uv",
                                                "on_threshold_uv", "acc_activity_g",
                                                "tilt_deg", "quality", "state")}  # fmt: skip
        tags = {"band": msg.band_id, "gateway": msg.gateway}
        assert to_line(msg, 0) == line("envelope", tags, fields, msg.time_ms)
    point = to_line(parse_message(*_event(1)), 0)
    assert 'severity="mod \\"x\\""' in point and "ok=false" in point and "duration_s=31.0," in point
    assert "median_frequency_hz" not in point  # null details are left out


def test_status_points_keep_the_timestamp_out_of_the_fields() -> None:
    """A band status' ``time`` key is the point's time, never a field named ``time``
    (InfluxQL cannot select such a field); the gateway status keeps its backlog."""
    status = {"connected": True, "battery_pct": 80, "time": T0 + 5.0}  # as Gateway.band_status
    msg = parse_message(TOPICS.status("band-a"), build_status("gw1", "band-a", T0, status))
    assert isinstance(msg, StatusMessage) and "time" in msg.status
    point = to_line(msg, 0)
    assert point == line("band_status", {"band": "band-a", "gateway": "gw1"},
                         {"connected": True, "battery_pct": 80.0}, msg.time_ms)  # fmt: skip
    only_time = parse_message(TOPICS.status("band-a"),
                              build_status("gw1", "band-a", T0, {"time": T0}))  # fmt: skip
    assert to_line(only_time, 0).split(" ")[1] == "present=true"
    gw = parse_message(TOPICS.gateway_status("gw1"),
                       build_gateway_status("gw1", True, T0, {"outbox_entries": 7}))  # fmt: skip
    assert to_line(gw, 0) == line("gateway_status", {"gateway": "gw1"},
                                  {"online": True, "outbox_entries": 7.0}, utc_ms(T0))  # fmt: skip


def test_recorder_status_point_has_its_backlog_and_counters(tmp_path: Path) -> None:
    async def main() -> None:
        rec = Recorder(MqttConfig(username="recorder", gateway_id="gw1"), _Writer(),
                       Outbox(tmp_path / "spool"), status_interval_s=60.0,
                       clock=lambda: T0)  # fmt: skip
        rec.buffer.spool.append(b"envelope x=1 1")  # a batch left from an InfluxDB outage
        messages = [_event(1), _summary(2), (TOPICS.event("b"), b"{")]  # the last one invalid
        await rec.store([Received(t, p, 0, False, k, 0) for k, (t, p) in enumerate(messages)])
        status = rec.status()
        assert status["spool_batches"] == 1 and status["spool_bytes"] > 0
        assert (status["received"], status["invalid"], status["buffered"]) == (3, 1, 2)
        point = status_line(rec.client_id, status, utc_ms(T0))
        assert point.startswith("recorder_status,recorder=crampwatch-recorder-gw1 ")
        assert "spool_batches=1.0," in point and point.endswith(f" {utc_ms(T0)}")
        assert await rec.write_status() and rec.buffer.buffered == 3
        rec.buffer.batch_size = 4  # the next point would start a write: never waited for
        assert not await rec.write_status() and rec.counts["status_skipped"] == 1
        assert rec.buffer.buffered == 3
        rec.buffer.spool.close()

    asyncio.run(main())


def _recorder(tmp: Path) -> Recorder:
    return Recorder(MqttConfig(username="recorder", gateway_id="gw1"),
                    _Writer(), Outbox(tmp / "spool"))  # fmt: skip


def _mutations(rng: random.Random, payload: bytes) -> bytes:
    doc = json.loads(payload)
    kind = rng.randrange(6)
    if kind == 0:  # flip bytes
        raw = bytearray(payload)
        for _ in range(rng.randint(1, 5)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 1:  # truncate
        return payload[: rng.randrange(len(payload))]
    hostile: list[object] = [None, True, -1, 10**400, int("9" * 4000), 1e308, -1e308, "",
                             "x" * 300, "\x00", [], {}, {"a": {"b": 1}}, 3.5, "band-b"]  # fmt: skip
    target = doc if kind < 4 or not isinstance(doc.get("details"), dict) else doc["details"]
    key = rng.choice([*target, "extra", "Bad Key"])
    target[key] = rng.choice(hostile)
    if kind == 5:
        del doc[rng.choice(list(doc))]
    return json.dumps(doc).encode()


def test_hostile_payloads_are_counted_and_never_raise(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rng = random.Random(12)
    valid = [_event(i) for i in range(20)] + [_summary(i) for i in range(20)]
    n = 3000
    points = 0
    for k in range(n):
        topic, payload = rng.choice(valid)
        point = rec.handle(Received(topic, _mutations(rng, payload), 1, False, k, 0))
        points += point is not None
    invalid = sum(v for k, v in rec.counts.items() if k.startswith("invalid_"))
    stored = sum(v for k, v in rec.counts.items() if k.startswith("stored_"))
    assert rec.counts["received"] == n == invalid + stored and stored == points
    assert rec.counts["invalid_unexpected"] == 0, "validation let something through"
    assert invalid > n // 2 and {"invalid_not_json", "invalid_range", "invalid_type"} <= set(
        rec.counts
    )


@pytest.mark.parametrize(
    ("key", "literal", "kind"),
    [
        ("x", "1" + "0" * 400, "range"),  # an int float() would overflow on
        ("t_s", "1" + "0" * 400, "range"),
        ("episode", "1" + "0" * 400, "range"),
        ("x", "9" * 4400, "not_json"),  # beyond Python's int digit limit
        ("x", "1e999", "range"),  # parses as inf
        ("x", "Infinity", "not_json"),
        ("x", "-NaN", "not_json"),
    ],
)
def test_absurd_numbers_are_refused_not_crashing(key: str, literal: str, kind: str) -> None:
    topic, payload = _event(1, details={"x": 0})
    doc = json.loads(payload)
    if key != "x":  # a top-level key; "x" is in details
        doc[key] = 0
    raw = json.dumps(doc).replace(f'"{key}": 0', f'"{key}": {literal}').encode()
    assert literal.encode() in raw and len(raw) <= 8192
    with pytest.raises(MessageError) as info:
        parse_message(topic, raw)
    assert info.value.kind == kind


class _Writer:
    """FAKE InfluxWriter: records batches; a write finishes when ``release`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started: list[int] = []
        self.release = asyncio.Event()
        self.release.set()
        self.in_flight = 0
        self.max_in_flight = 0

    async def write(self, lines: Sequence[str]) -> None:
        self.started.append(len(lines))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        self.batches.append(list(lines))

    async def close(self) -> None:
        """Nothing to release."""


def test_batches_are_written_in_order_acks_after_their_write(tmp_path: Path) -> None:
    async def main() -> None:
        writer = _Writer()
        buf = BufferedWriter(writer, Outbox(tmp_path / "spool"), batch_size=3)
        acked: list[int] = []
        writer.release.clear()
        await buf.add(["a 1", "a 2", "a 3"], lambda: acked.append(1))  # full: write starts
        assert writer.started == [3] and acked == []  # in flight, not acknowledged
        await buf.add(["b 1", "b 2"], lambda: acked.append(2))  # fills while 1 is written
        assert buf.buffered == 2
        blocked = asyncio.create_task(buf.add(["b 3"], lambda: acked.append(3)))
        await asyncio.sleep(0.05)
        assert not blocked.done(), "a full batch waits for the previous write"
        writer.release.set()
        await blocked
        await buf.flush()
        assert writer.batches == [["a 1", "a 2", "a 3"], ["b 1", "b 2", "b 3"]]
        assert acked == [1, 2, 3] and writer.max_in_flight == 1
        await buf.add([], lambda: acked.append(4))  # an ack without points (invalid messages)
        await buf.flush()
        assert acked[-1] == 4 and len(writer.batches) == 2
        await buf.close()

    asyncio.run(main())


def test_mqtt_tls_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls = true"):
        MqttConfig(ca_file="/etc/ca.crt")  # tls forgotten: the password would go in clear
    with pytest.raises(ValueError, match="cert_file"):
        MqttConfig(tls=True, key_file="client.key")
    with pytest.raises(ConfigError, match="TLS files"):
        tls_context(MqttConfig(tls=True, ca_file=str(tmp_path / "missing.crt")))
    ctx = tls_context(MqttConfig(tls=True))
    assert ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"


def test_client_ids_are_stable_per_gateway() -> None:
    cfg = MqttConfig(gateway_id="bedroom-pi")
    again = MqttConfig(gateway_id="bedroom-pi", port=8883)
    assert cfg.client_id_for("recorder") == again.client_id_for("recorder")
    assert cfg.client_id_for("recorder") == "crampwatch-recorder-bedroom-pi"
    assert cfg.client_id_for("gw") == "crampwatch-gw-bedroom-pi"
    assert MqttConfig(client_id="fixed").client_id_for("gw") == "fixed"
    assert MqttConfig().gateway == default_gateway_id() == default_gateway_id()
