"""Home Assistant MQTT discovery: the configs, and their templates rendered with Jinja2
(the engine Home Assistant uses) against real crampwatch payloads."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from sensor_gateway.messages import (
    Topics,
    build_event,
    build_gateway_status,
    build_status,
    build_summary,
)
from sensor_gateway.mqtt import MqttConfig
from sensor_gateway.mqtt_sink import discovery_configs

T0 = 1_709_254_800.0
TOPICS = Topics()
ENV = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)


def _render(template: str, payload: bytes) -> str:
    return ENV.from_string(template).render(value_json=json.loads(payload)).strip()


def _configs() -> dict[str, dict[str, Any]]:
    cfg = MqttConfig(gateway_id="bedroom-pi", homeassistant=True)
    out = {}
    for topic, payload in discovery_configs(cfg, TOPICS, "band-a.1"):
        parts = topic.split("/")
        assert parts[0] == "homeassistant" and parts[2] == "crampwatch_band_a_1"
        assert parts[-1] == "config" and len(parts) == 5
        out[f"{parts[1]}/{parts[3]}"] = json.loads(payload)
    return out


def test_discovery_announces_cramp_connection_battery_and_last_cramp() -> None:
    configs = _configs()
    assert set(configs) == {"binary_sensor/cramp", "binary_sensor/connected",
                            "sensor/battery", "sensor/last_cramp"}  # fmt: skip
    ids = {c["unique_id"] for c in configs.values()}
    assert len(ids) == 4 and all(i.startswith("crampwatch_band_a_1_") for i in ids)
    for conf in configs.values():
        assert conf["device"]["identifiers"] == ["crampwatch_band_a_1"]
        assert conf["availability_topic"] == TOPICS.gateway_status("bedroom-pi")
    assert configs["binary_sensor/cramp"]["name"] == "Calf cramp"
    assert configs["binary_sensor/cramp"]["state_topic"] == TOPICS.summary("band-a.1")
    assert configs["sensor/last_cramp"]["state_topic"] == TOPICS.last_cramp("band-a.1")


def test_templates_render_real_payloads() -> None:
    configs = _configs()
    summary = {"t_s": 1.0, "rms_uv": 90.0, "peak_uv": 200.0, "noise_floor_uv": 4.0,
               "on_threshold_uv": 20.0, "quality": "ok", "acc_activity_g": 0.0}  # fmt: skip
    cramp = configs["binary_sensor/cramp"]["value_template"]
    for state, want in (("cramp", "ON"), ("spasm", "OFF"), ("idle", "OFF")):
        payload = build_summary("bedroom-pi", "band-a.1", T0, {**summary, "state": state})
        assert _render(cramp, payload) == want

    status = build_status("bedroom-pi", "band-a.1", T0, {"connected": True, "battery_pct": 81})
    assert _render(configs["binary_sensor/connected"]["value_template"], status) == "ON"
    assert _render(configs["sensor/battery"]["value_template"], status) == "81"

    _, end = build_event("bedroom-pi", "band-a.1", event_type="cramp_end", episode=2,
                         wall_time_s=T0, t_s=50.0, emitted_at_s=50.4, published_s=T0 + 1,
                         details={"duration_s": 42.5, "severity": "moderate"})  # fmt: skip
    last = configs["sensor/last_cramp"]
    assert _render(last["value_template"], end) == "2024-03-01T01:00:00.000Z"
    attrs = json.loads(_render(last["json_attributes_template"], end))
    assert attrs == {"duration_s": 42.5, "severity": "moderate"}

    avail = configs["sensor/battery"]["availability_template"]
    assert _render(avail, build_gateway_status("bedroom-pi", True, T0)) == "online"
    assert _render(avail, build_gateway_status("bedroom-pi", False, None)) == "offline"
