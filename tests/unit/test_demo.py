"""The demo's pure parts: its config, its children's command lines, its live progress."""

from __future__ import annotations

import asyncio
import io
import sys
import tomllib
from pathlib import Path

import pytest

from sensor_gateway.alerts import AlertsConfig
from sensor_gateway.cli import build_parser
from sensor_gateway.demo import (
    ChildSpec,
    DemoOptions,
    LiveProgress,
    Supervisor,
    child_specs,
    demo_config,
    watch_children,
)
from sensor_gateway.errors import ConfigError
from sensor_gateway.gateway import GatewayConfig
from sensor_gateway.influx import InfluxConfig
from sensor_gateway.messages import Topics, build_event, build_status, parse_message
from sensor_gateway.mqtt import MqttConfig


def test_demo_config_loads_in_every_section(tmp_path: Path) -> None:
    opts = DemoOptions(data_dir=tmp_path, bands=3, speed=40.0)
    doc = tomllib.loads(demo_config(opts, ("127.0.0.1", 18830), "http://127.0.0.1:18086"))
    mqtt = MqttConfig.load(doc)
    assert (mqtt.host, mqtt.port, mqtt.password) == ("127.0.0.1", 18830, "")
    assert InfluxConfig.load(doc).url == "http://127.0.0.1:18086"
    gw = GatewayConfig.load(doc)
    assert (gw.max_bands, gw.speed, gw.data_dir) == (3, 40.0, tmp_path / "recordings")
    # the gateway's queue, like the band's ring, holds 2 wall seconds: 2 s x 40 / 50 ms
    assert gw.queue_size == 1600
    slow = tomllib.loads(demo_config(DemoOptions(data_dir=tmp_path, speed=1.0), ("h", 1), "x"))
    assert GatewayConfig.load(slow).queue_size == GatewayConfig().queue_size  # never less
    assert AlertsConfig.load(doc).state_dir == tmp_path / "state" / "alerts"
    assert "password" not in demo_config(opts, ("h", 1), "http://h:2").lower().replace(
        "passwords come from", ""
    )


def test_children_are_valid_crampwatch_commands_with_secrets_in_files(tmp_path: Path) -> None:
    opts = DemoOptions(data_dir=tmp_path, bands=2, seed=5)
    specs = child_specs(opts, tmp_path / "c.toml", tmp_path / "secrets", ["hci0", "hci1", "hci2"])
    assert [s.name for s in specs] == ["band-1", "band-2", "gateway", "recorder", "alerts",
                                       "dashboard"]  # fmt: skip
    parser = build_parser()
    for spec in specs:
        args = parser.parse_args(list(spec.argv[3:]))  # after "python -m sensor_gateway"
        assert args.command == spec.argv[3]
        assert not any("secret" in a for a in spec.argv)  # no password on a command line
    assert specs[1].argv[specs[1].argv.index("--adapter") + 1] == "hci2"
    assert specs[1].argv[specs[1].argv.index("--seed") + 1] == "6"
    # at the default 60x the band's ring holds 2 wall seconds: 2 s x 60 / 50-ms packets
    band = parser.parse_args(list(specs[0].argv[3:]))
    assert (band.speed, band.queue_packets) == (60.0, 2400)
    assert specs[2].env["CRAMPWATCH_MQTT_PASSWORD_FILE"] == str(tmp_path / "secrets/mqtt-gateway")
    shared = child_specs(opts, tmp_path / "c.toml", None, ["hci0", "hci1", "hci2"])
    assert all(not s.env for s in shared)  # a user's own broker: credentials from their env


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--bands"):
        DemoOptions(data_dir=tmp_path, bands=0)
    with pytest.raises(ConfigError, match="--speed"):
        DemoOptions(data_dir=tmp_path, speed=0)
    with pytest.raises(ConfigError, match="no such file"):
        DemoOptions(data_dir=tmp_path, replay=tmp_path / "missing.edf")


def test_live_progress_counts_cramps_links_and_losses() -> None:
    topics = Topics()
    progress = LiveProgress()

    def feed(topic: str, payload: bytes) -> str | None:
        return progress.update(parse_message(topic, payload, topics))

    status = build_status("demo", "b1", 1.7e9, {"connected": True, "missing_emg": 300,
                                                "battery_pct": 80.0})  # fmt: skip
    assert feed(topics.status("b1"), status) is None
    lines = []
    for episode, kind in ((1, "cramp_confirmed"), (1, "cramp_end"), (2, "cramp_confirmed")):
        _, payload = build_event("demo", "b1", event_type=kind, episode=episode,
                                 wall_time_s=1.7e9 + episode, t_s=1.0, emitted_at_s=1.0,
                                 details={"duration_s": 42.0, "severity": 2},
                                 published_s=1.7e9)  # fmt: skip
        lines.append(feed(topics.event("b1"), payload))
    assert "b1: cramp confirmed" in (lines[0] or "")
    assert "b1: cramp ended after 42 s, severity 2" in (lines[1] or "")
    assert progress.cramps == {"b1": 2}
    line = progress.line(12.0)
    assert "bands 1/1 linked" in line and "cramps 2" in line and "lost samples 300" in line


def _child(name: str, code: int, *, finishes: bool) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", f"raise SystemExit({code})"), finishes=finishes)


@pytest.mark.parametrize(
    ("spec", "stops", "said"),
    [
        (_child("band-1", 0, finishes=True), False, "band-1 has played its whole night"),
        (_child("band-1", 3, finishes=True), True, "band-1 exited with 3"),
        (_child("gateway", 0, finishes=False), True, "gateway exited with 0"),
    ],
)
def test_a_band_at_the_end_of_its_night_is_not_a_failure(
    tmp_path: Path, spec: ChildSpec, stops: bool, said: str
) -> None:
    """A band that played its night exits 0 and the demo stays up; any other exit stops it."""

    async def main() -> tuple[int | None, str]:
        supervisor, out, stop = Supervisor(tmp_path / "logs"), io.StringIO(), asyncio.Event()
        await supervisor.start(spec)
        await supervisor.children[0].proc.wait()
        watch = asyncio.create_task(watch_children(supervisor, LiveProgress(), stop, 0.0, out))
        for _ in range(300):  # the watcher looks once a second; it prints, then decides
            if said in out.getvalue():
                break
            await asyncio.sleep(0.05)
        code = watch.result() if watch.done() else None
        stop.set()
        await watch
        return code, out.getvalue()

    code, text = asyncio.run(main())
    assert said in text
    assert code == (1 if stops else None)  # a finished band leaves the demo running
