"""Bad input at every boundary: a clear message, the rest kept (issue 8).

Boundaries and what is already tested elsewhere (not repeated here):

* BLE notifications → the gateway: the codec's error per malformed layout
  (tests/unit/test_protocol.py) and a few short/trailing-byte packets in the
  processing path (tests/integration/test_gateway_ble.py).  Here: random garbage,
  oversized notifications and wrong versions between valid packets, each kind
  logged once, and every valid sample kept with no gap.
* MQTT → the recorder: not JSON, wrong schema, out of range, 4 MiB, wrong topic
  (tests/integration/test_mqtt_influx.py).  Here: the same and binary garbage into
  the alert service (events and status topics) through the real broker, and a
  cramp after them still alerts exactly once.
* Config files: every command that takes ``--config`` on a file that is not TOML
  and on a value of the wrong type (subprocesses: exit code, one line, no traceback).
* Recordings: a truncated EDF+ and a garbage CSV for ``detect``, ``info``,
  ``band --replay``, ``report --from-file`` and ``evaluate`` (``info`` on a truncated
  EDF+ is in tests/unit/test_cli_info.py).
* State directories that cannot be created (the gateway's MQTT outbox, the
  recorder's spool, the alerts state): the service refuses to start, naming the
  directory, rather than run without its durable queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from sensor_gateway.ble import DATA, STATUS, Notification
from sensor_gateway.cli import main
from sensor_gateway.gateway import Gateway, GatewayConfig
from sensor_gateway.messages import MAX_PAYLOAD_BYTES
from sensor_gateway.protocol import (
    BandPacket,
    BandStatus,
    ProtocolError,
    decode_data_packet,
    decode_status,
    encode_data_packet,
    encode_status,
)
from sensor_gateway.recordings import open_recording
from tests.fixtures.servers import MOSQUITTO, MosquittoServer, private_broker
from tests.integration.test_alerts_delivery import TOPICS, Rig, run, until

pytestmark = pytest.mark.integration

CW = (sys.executable, "-m", "sensor_gateway")
FS = 2000
N_EMG = 100


# --------------------------------------------------------------------------- BLE


def test_garbage_ble_notifications_are_counted_logged_once_and_lose_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage between 200 valid packets: counted per kind, one warning each, no gap."""
    rng = np.random.default_rng(8)
    n = 200
    emg = rng.integers(-2000, 2000, n * N_EMG).astype(np.int16)
    acc = rng.integers(-900, 900, (n * 5, 3)).astype(np.int16)
    packets = [
        encode_data_packet(BandPacket.create(i, (i * N_EMG * 32768) // FS,
                                             emg[i * N_EMG : (i + 1) * N_EMG],
                                             acc[i * 5 : (i + 1) * 5]))
        for i in range(n)
    ]  # fmt: skip
    garbage = (
        [
            b"",
            packets[5] + bytes(4096),  # a valid packet with 4 KiB glued on
            rng.bytes(7),
            b"\x01" + rng.bytes(600),  # oversized: larger than any MTU the band negotiates
            b"\x02" + packets[5][1:],  # protocol version 2
            b"\xff" * 244,
        ]
        * 3
    )  # every kind three times: still one warning per kind
    status_garbage = [b"\x00" * 3, rng.bytes(300)]
    good_status = encode_status(BandStatus(battery_pct=64, lead_off=False, firmware=(1, 0, 0)))

    async def scenario() -> Gateway:
        gw = Gateway(GatewayConfig(data_dir=tmp_path, queue_size=64), [])
        rt = gw.add_band("band-x", None)
        gw.start()
        t0 = 1.7e9
        for i, blob in enumerate(packets):
            await rt.queue.put(Notification(DATA, t0 + (i + 1) * 0.05, blob))
            if 10 <= i < 10 + len(garbage):
                await rt.queue.put(Notification(DATA, t0 + (i + 1) * 0.05, garbage[i - 10]))
            if i in (40, 41):
                await rt.queue.put(Notification(STATUS, t0 + i * 0.05, status_garbage[i - 40]))
            if i == 42:
                await rt.queue.put(Notification(STATUS, t0 + i * 0.05, good_status))
            await asyncio.sleep(0)
        while not rt.queue.empty():
            await asyncio.sleep(0.01)
        await gw.shutdown()
        return gw

    with caplog.at_level(logging.WARNING, logger="sensor_gateway.gateway"):
        gw = asyncio.run(scenario())
    rt = gw.bands["band-x"]
    want: Counter[str] = Counter()
    for prefix, blobs, decode in (("", garbage, decode_data_packet),
                                  ("status:", status_garbage, decode_status)):  # fmt: skip
        for blob in blobs:
            with pytest.raises(ProtocolError) as info:
                decode(blob)
            want[prefix + type(info.value).__name__] += 1
    assert rt.malformed == want  # every one counted under its kind
    status = gw.band_status(rt)
    assert status["missing_packets"] == 0
    assert status["malformed"] == len(garbage) + len(status_garbage)
    assert status["battery_pct"] == 64  # the good status after the bad ones
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == len(rt.malformed)  # one per kind, however many arrived
    assert any(
        w.startswith("band-x: malformed data packet (MalformedPacketError; further ones "
                     "counted): ") and "trailing bytes" in w
        for w in warnings
    ), warnings  # fmt: skip
    assert any("data packet: 0 bytes, shorter than the 10-byte header" in w for w in warnings)
    assert any(
        "data packet: protocol version" in w and "this gateway speaks 1" in w for w in warnings
    )
    assert rt.stream.recording_path is not None
    with open_recording(rt.stream.recording_path) as rec:
        got = np.concatenate([c.emg_uv for c in rec.chunks(60.0)])
    np.testing.assert_array_equal(got, emg.astype(np.float64) * 0.5)  # every sample, no NaN


# --------------------------------------------------------------------------- MQTT


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """A broker with an ``alerts`` user (as in tests/integration/test_alerts_delivery.py)."""
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip("mosquitto is not installed")
    server = private_broker(tmp_path_factory.mktemp("mosquitto-bad"), alerters=("alerts",))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_alert_service_skips_bad_payloads_and_still_alerts_once(
    mosquitto: MosquittoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Oversized, binary, wrong-schema and wrong-topic payloads; then a cramp alerts once."""

    async def body(rig: Rig) -> None:
        service = await rig.service({}, cramp_cooldown_s=0.0)  # every cramp alerts
        event, status = TOPICS.event(rig.band), TOPICS.status(rig.band)
        payload = rig.publish_cramp(episode=1)  # a reference payload to corrupt
        assert await until(lambda: len(rig.alerts) == 1)
        bad = [
            (event, b"{" + b" " * (4 << 20) + b"}"),  # 4 MiB, valid JSON
            (event, payload + b" " * MAX_PAYLOAD_BYTES),  # just over the limit
            (event, b"\xff\xfe\x00garbage"),
            (event, payload.replace(b'"schema":1', b'"schema":7')),
            (TOPICS.event("other-band"), payload),  # the band id disagrees with the topic
            (status, b"[1, 2, 3]"),
            (status, b"\x00" * 100),
            (f"{TOPICS.prefix}/band/{rig.band}/nonsense", payload),
        ]
        for topic, raw in bad:
            rig.gateway.publish(topic, raw, 1)
        rig.gateway.publish(event, payload, 1)  # a redelivery: no second alert
        rig.publish_cramp(episode=2)
        assert await until(lambda: len(rig.alerts) == 2, 20.0), rig.alerts
        await asyncio.sleep(0.5)
        invalid = {k: v for k, v in service.counts.items() if k.startswith("invalid_")}
        assert sum(invalid.values()) >= len(bad) - 1, invalid  # "nonsense" may not be subscribed
        assert invalid.get("invalid_too_large") == 2, invalid
        assert invalid.get("invalid_topic", 0) >= 1, invalid
        assert [doc["details"]["episode"] for _t, doc in rig.alerts] == [1, 2]

    with caplog.at_level(logging.WARNING, logger="sensor_gateway.alert_service"):
        run(body, mosquitto, tmp_path)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(
        m.startswith("invalid message on crampwatch/band/") and "(too_large)" in m and "bytes >"
        in m for m in skipped
    ), skipped  # fmt: skip
    assert sum("(too_large)" in m for m in skipped) == 1  # logged once, counted twice


# --------------------------------------------------------------------------- command line


def _run_all(commands: Sequence[Sequence[str]], cwd: Path, env: dict[str, str] | None = None
             ) -> list[subprocess.CompletedProcess[str]]:  # fmt: skip
    """Run ``crampwatch`` commands side by side; their results in order."""
    procs = [
        subprocess.Popen([*CW, *cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, **(env or {})})
        for cmd in commands
    ]  # fmt: skip
    out = []
    for cmd, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(list(cmd), proc.returncode, stdout, stderr))
    return out


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, start: str) -> None:
    what = f"{' '.join(result.args)}: exit {result.returncode}, stderr {result.stderr!r}"
    assert result.returncode == code, what
    assert "Traceback" not in result.stderr, what
    assert result.stderr.startswith(start), what
    assert len(result.stderr.strip().splitlines()) == 1, what


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a good short night, a truncated copy and garbage CSVs (+ truth)."""
    d = tmp_path_factory.mktemp("bad-recordings")
    assert main(["simulate", "--out", str(d / "night.edf"), "--hours", "0.02", "--seed", "3"]) == 0
    (d / "cut.edf").write_bytes((d / "night.edf").read_bytes()[:3000])
    (d / "garbage.csv").write_bytes(b"time,emg\nfoo,bar\n\x00\x01\xff garbage\n")
    (d / "headless.csv").write_text("# crampwatch-csv 1\n1,2,3\nnot,a,number\n")
    for stem in ("cut", "garbage", "headless"):  # so `evaluate` reads the recording itself
        shutil.copy(d / "night.truth.json", d / f"{stem}.truth.json")
    return d


TRUNCATED = "truncated: the header announces 72 data records"
NOT_CSV = "not a crampwatch CSV (first line must be '# crampwatch-csv 1')"
NO_START = "malformed CSV header: missing '# start=...'"


def test_corrupt_recordings_are_one_line_errors_for_every_reader(recordings: Path) -> None:
    d = recordings
    cases = []
    for name, message in (("cut.edf", TRUNCATED), ("garbage.csv", NOT_CSV),
                          ("headless.csv", NO_START)):  # fmt: skip
        path = str(d / name)
        commands = [
            ["detect", path],
            ["band", "--replay", path, "--adapter", "hci99"],
            ["report", "--from-file", path, "--output", str(d / "report.html")],
            ["evaluate", path],
        ]
        if name != "cut.edf":  # tests/unit/test_cli_info.py has it
            commands.append(["info", path])
        cases += [(cmd, f"crampwatch: {path}: {message}") for cmd in commands]
    results = _run_all([cmd for cmd, _ in cases], d)
    for (_cmd, start), result in zip(cases, results, strict=True):
        _one_line_error(result, 1, start)
        assert result.stdout == ""
    assert not (d / "report.html").exists()


#: Commands with ``--config`` and the options that make them read it and stop early.
CONFIG_COMMANDS = {
    "detect": ["night.edf"],
    "record": ["--duration", "1"],
    "report": ["--night", "2026-01-01", "--output", "r.html"],
    "dashboard": ["--port", "1"],
    "gateway": ["--duration", "1", "--no-record"],
    "alerts": ["--duration", "1"],
}
#: One wrong-typed value each command reads first, and the message naming it.
WRONG_TYPES = (
    '[mqtt]\nport = "many"\n[influx]\nurl = 5\n[gateway]\nspeed = "fast"\n'
    '[detector]\nband_order = "three"\n'
)
WRONG_TYPE_MESSAGES = {
    "detect": "crampwatch: [detector].band_order: expected a number, got 'three'",
    "record": "crampwatch: [mqtt].port: expected a number, got 'many'",
    "report": "crampwatch: [influx].url: expected a string, got 5",
    "dashboard": "crampwatch: [influx].url: expected a string, got 5",
    "gateway": "crampwatch: [gateway].speed: expected a number, got 'fast'",
    "alerts": "crampwatch: [mqtt].port: expected a number, got 'many'",
}


def test_corrupt_config_is_a_one_line_error_for_every_command(recordings: Path) -> None:
    d = recordings
    (d / "broken.toml").write_text("[mqtt\nport = 1\n")
    (d / "typed.toml").write_text(WRONG_TYPES)
    commands = [[name, "--config", str(d / toml), *extra]
                for toml in ("broken.toml", "typed.toml")
                for name, extra in CONFIG_COMMANDS.items()]  # fmt: skip
    env = {"CRAMPWATCH_MQTT_USERNAME": "u", "CRAMPWATCH_MQTT_PASSWORD": "p"}
    results = _run_all(commands, d, env)
    for cmd, result in zip(commands, results, strict=True):
        if cmd[2].endswith("broken.toml"):
            start = f"crampwatch: {d / 'broken.toml'}: not valid TOML: Expected ']'"
            _one_line_error(result, 2, start)
            assert "(at line 1, column 6)" in result.stderr
        else:
            _one_line_error(result, 2, WRONG_TYPE_MESSAGES[cmd[0]])
    assert not (d / "r.html").exists()


def test_state_directories_that_cannot_be_made_stop_the_service_with_their_name(
    tmp_path: Path,
) -> None:
    """Outbox, spool and alert state under a regular file (root ignores permission bits)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    configs = {
        "gateway": f'[mqtt]\nport = 1\noutbox_dir = "{blocker}/outbox"\n'
                   '[gateway]\nadapter = "hci99"\n',
        "record": f'[mqtt]\nport = 1\n[influx]\nspool_dir = "{blocker}/spool"\n',
        "alerts": f'[mqtt]\nport = 1\n[alerts]\nstate_dir = "{blocker}/alerts"\n',
    }  # fmt: skip
    commands = []
    for name, text in configs.items():
        (tmp_path / f"{name}.toml").write_text(text)
        commands.append([name, "--config", str(tmp_path / f"{name}.toml"), "--duration", "5"])
    commands[0].append("--no-record")
    env = {"CRAMPWATCH_MQTT_USERNAME": "u", "CRAMPWATCH_MQTT_PASSWORD": "p"}
    gateway, record, alerts = _run_all(commands, tmp_path, env)
    _one_line_error(gateway, 1, f"crampwatch: mqtt outbox {blocker}/outbox: Not a directory")
    _one_line_error(record, 1, f"crampwatch: influx spool {blocker}/spool: Not a directory")
    _one_line_error(alerts, 1, f"crampwatch: alerts state {blocker}/alerts: Not a directory")
    assert blocker.read_text() == "a file where a directory should be\n"
