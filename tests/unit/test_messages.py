"""Payload schema: building, strict validation, deterministic ids, line-protocol escaping."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sensor_gateway.influx import line
from sensor_gateway.messages import (
    MAX_PAYLOAD_BYTES,
    EventMessage,
    GatewayStatusMessage,
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
)
from sensor_gateway.recorder import to_line

T0 = datetime(2024, 3, 1, 2, 30, 15, 250000, tzinfo=UTC).timestamp()
TOPICS = Topics()


def _event(**overrides: object) -> tuple[str, bytes]:
    kwargs: dict[str, object] = {
        "event_type": "cramp_end",
        "episode": 3,
        "wall_time_s": T0,
        "t_s": 9015.25,
        "emitted_at_s": 9015.9,
        "details": {"duration_s": 42.5, "peak_rms_uv": 180.0, "severity": "moderate"},
        "published_s": T0 + 0.7,
    }
    kwargs.update(overrides)
    return build_event("gw1", "band-a", **kwargs)  # type: ignore[arg-type]


def _doc(payload: bytes) -> dict[str, object]:
    doc = json.loads(payload)
    assert isinstance(doc, dict)
    return doc


def test_event_round_trip_keeps_every_value() -> None:
    eid, payload = _event()
    msg = parse_message(TOPICS.event("band-a"), payload)
    assert isinstance(msg, EventMessage)
    assert msg.event_id == eid
    assert (msg.band_id, msg.gateway, msg.type, msg.episode) == ("band-a", "gw1", "cramp_end", 3)
    assert msg.time_ms == 1709260215250
    assert msg.published_ms - msg.time_ms == 700
    assert (msg.t_s, msg.emitted_at_s) == (9015.25, 9015.9)
    assert msg.details == {"duration_s": 42.5, "peak_rms_uv": 180.0, "severity": "moderate"}
    assert _doc(payload)["time"] == "2024-03-01T02:30:15.250Z"


def test_event_id_is_deterministic_and_distinguishes_events() -> None:
    a, _ = _event()
    b, _ = _event(published_s=T0 + 5.0)  # re-sent later: same event, same id
    assert a == b
    ids = {
        a,
        _event(episode=4)[0],
        _event(event_type="spasm_onset")[0],
        _event(wall_time_s=T0 + 0.001)[0],
        build_event("gw1", "band-b", event_type="cramp_end", episode=3, wall_time_s=T0,
                    t_s=1.0, emitted_at_s=1.0, details={}, published_s=T0)[0],
    }  # fmt: skip
    assert len(ids) == 5


def test_nan_details_become_null() -> None:
    _, payload = _event(details={"median_frequency_hz": float("nan"), "ok": True})
    details = _doc(payload)["details"]
    assert details == {"median_frequency_hz": None, "ok": True}


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda d: d.update(schema=2), "schema"),
        (lambda d: d.pop("schema"), "schema"),
        (lambda d: d.update(type="explosion"), "range"),
        (lambda d: d.update(episode=-1), "range"),
        (lambda d: d.update(episode="3"), "type"),
        (lambda d: d.update(episode=True), "type"),
        (lambda d: d.update(t_s=1e12), "range"),
        (lambda d: d.update(time="2024-03-01 02:30:15"), "time"),
        (lambda d: d.update(time="1970-01-01T00:00:00.000Z"), "range"),
        (lambda d: d.update(time="2999-01-01T00:00:00.000Z"), "range"),
        (lambda d: d.update(band_id="band-b"), "topic"),
        (lambda d: d.update(kind="summary"), "topic"),
        (lambda d: d.update(event_id="00000000-0000-0000-0000-000000000000"), "event_id"),
        (lambda d: d["details"].update(peak_rms_uv=5e9), "range"),
        (lambda d: d["details"].update(duration_s=-3.0), "range"),
        (lambda d: d["details"].update(nested={"a": 1}), "type"),
        (lambda d: d["details"].update({"Bad Key": 1}), "key"),
        (lambda d: d.update(gateway="gw/1"), "id"),
        (lambda d: d.pop("published"), "time"),
        (lambda d: d.pop("type"), "missing"),
    ],
)
def test_invalid_events_are_refused_with_their_kind(mutate: object, kind: str) -> None:
    _, payload = _event()
    doc = _doc(payload)
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(MessageError) as info:
        parse_message(TOPICS.event("band-a"), json.dumps(doc).encode())
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_json"),
        (b'{"schema": 1, "t_s": NaN}', "not_json"),
        (b"{}", "schema"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "too_large"),
    ],
)
def test_garbage_is_refused(payload: bytes, kind: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_message(TOPICS.event("band-a"), payload)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    "topic",
    ["crampwatch/band/band-a", "crampwatch/band/band-a/event/x", "other/band/band-a/event",
     "crampwatch/band/+/event", "crampwatch/band/band-a/debug", "crampwatch/gateway/gw1/event"],
)  # fmt: skip
def test_foreign_topics_are_refused(topic: str) -> None:
    _, payload = _event()
    with pytest.raises(MessageError) as info:
        parse_message(topic, payload)
    assert info.value.kind in ("topic", "id")


def test_ids_that_would_break_topics_or_tags_are_refused() -> None:
    for bad in ("", "a/b", "a+b", "a#", "a b", "x" * 65, "a,b", "a=b"):
        with pytest.raises(MessageError):
            build_status("gw1", bad, T0, {})


def test_summary_status_and_gateway_status_round_trip() -> None:
    summary = {"t_s": 12.0, "rms_uv": 3.5, "peak_uv": 9.0, "noise_floor_uv": float("nan"),
               "on_threshold_uv": float("nan"), "quality": "ok", "acc_activity_g": None,
               "state": "idle"}  # fmt: skip
    s = parse_message(TOPICS.summary("band-a"), build_summary("gw1", "band-a", T0, summary))
    assert isinstance(s, SummaryMessage)
    assert (s.rms_uv, s.noise_floor_uv, s.quality, s.state) == (3.5, None, "ok", "idle")
    assert s.tilt_deg is None  # no "tilt_deg" key at all in this summary: sent as null
    tilted = build_summary("gw1", "band-a", T0, {**summary, "tilt_deg": 87.5})
    s = parse_message(TOPICS.summary("band-a"), tilted)
    assert isinstance(s, SummaryMessage) and s.tilt_deg == 87.5


def test_summary_without_tilt_from_an_older_gateway_is_accepted() -> None:
    """``tilt_deg`` was added within schema 1: a payload without the key is valid."""
    summary = {"t_s": 1.0, "rms_uv": 3.0, "peak_uv": 4.0, "noise_floor_uv": 1.0,
               "on_threshold_uv": 2.0, "quality": "ok", "acc_activity_g": 0.0,
               "state": "idle", "tilt_deg": 12.0}  # fmt: skip
    doc = json.loads(build_summary("gw1", "band-a", T0, summary))
    assert doc["tilt_deg"] == 12.0
    del doc["tilt_deg"]
    s = parse_message(TOPICS.summary("band-a"), json.dumps(doc).encode())
    assert isinstance(s, SummaryMessage)
    assert (s.tilt_deg, s.acc_activity_g) == (None, 0.0)

    status = {"connected": True, "battery_pct": 81, "drift_ppm": None, "nested": {"x": 1},
              "recording": "/data/a.edf", "band_id": "ignored"}  # fmt: skip
    st = parse_message(TOPICS.status("band-a"), build_status("gw1", "band-a", T0, status))
    assert isinstance(st, StatusMessage)
    assert st.status == {"connected": True, "battery_pct": 81, "drift_ppm": None,
                         "recording": "/data/a.edf"}  # fmt: skip

    will = parse_message(TOPICS.gateway_status("gw1"), build_gateway_status("gw1", False, None))
    assert will == GatewayStatusMessage(gateway="gw1", online=False, time_ms=None)
    with pytest.raises(MessageError):
        parse_message(TOPICS.gateway_status("gw2"), build_gateway_status("gw1", True, T0))


def test_gateway_status_carries_the_outbox_backlog() -> None:
    backlog = {"outbox_entries": 12, "outbox_bytes": 4096, "summaries_dropped": 3,
               "events_refused": 0}  # fmt: skip
    up = parse_message(TOPICS.gateway_status("gw1"),
                       build_gateway_status("gw1", True, T0, backlog))  # fmt: skip
    assert isinstance(up, GatewayStatusMessage)
    assert up.backlog == {k: float(v) for k, v in backlog.items()} and up.online
    with pytest.raises(MessageError):  # only the documented counters
        build_gateway_status("gw1", True, T0, {"outbox_entries": 1, "cpu": 2})
    for bad in (-1, "12", True, 1e300):
        doc = json.loads(build_gateway_status("gw1", True, T0))
        doc["outbox_entries"] = bad
        with pytest.raises(MessageError):
            parse_message(TOPICS.gateway_status("gw1"), json.dumps(doc).encode())


def test_summary_with_absurd_or_unknown_values_is_refused() -> None:
    base = {"t_s": 1.0, "rms_uv": 3.0, "peak_uv": 4.0, "noise_floor_uv": 1.0,
            "on_threshold_uv": 2.0, "quality": "ok", "acc_activity_g": 0.0,
            "state": "idle"}  # fmt: skip
    for key, value in (("rms_uv", -1.0), ("peak_uv", 1e9), ("quality", "great"),
                       ("state", "dancing"), ("tilt_deg", 181.0), ("tilt_deg", -1.0),
                       ("tilt_deg", "flat")):  # fmt: skip
        with pytest.raises(MessageError):
            parse_message(TOPICS.summary("band-a"),
                          build_summary("gw1", "band-a", T0, {**base, key: value}))  # fmt: skip


def test_line_protocol_escaping() -> None:
    got = line('we ird,m', {"b a,n=d": 'x y,z=w"', "empty": ""},
               {"f k": 'say "hi" \\ there', "n": 2, "x": 1.5, "ok": False}, 1234)  # fmt: skip
    assert got == (
        'we\\ ird\\,m,b\\ a\\,n\\=d=x\\ y\\,z\\=w" f\\ k="say \\"hi\\" \\\\ there",n=2i,x=1.5,'
        "ok=false 1234"
    )
    with pytest.raises(ValueError):
        line("m", {}, {"x": None}, 1)


def test_event_point_uses_event_time_and_bounded_tags() -> None:
    eid, payload = _event()
    msg = parse_message(TOPICS.event("band-a"), payload)
    got = to_line(msg, received_ms=0)
    assert got.startswith("cramp_event,band=band-a,gateway=gw1,type=cramp_end ")
    assert got.endswith(" 1709260215250")
    assert f'event_id="{eid}"' in got
    assert "episode=3i" in got and "duration_s=42.5" in got and 'severity="moderate"' in got
    assert "publish_delay_s=0.7" in got
    # the same event re-sent later maps to the identical point
    _, again = _event(published_s=T0 + 0.7)
    assert to_line(parse_message(TOPICS.event("band-a"), again), received_ms=99) == got


def test_event_id_function_matches_build() -> None:
    eid, _ = _event()
    assert eid == event_id("band-a", 3, "cramp_end", 1709260215250)
