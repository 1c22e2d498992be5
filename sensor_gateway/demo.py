"""The live demo: every crampwatch part running on one machine, owned by one process.

``crampwatch demo`` starts, as child processes in their own process groups:

1. Mosquitto and influxd on loopback with freshly generated credentials
   (:mod:`sensor_gateway.local_servers`), unless ``--mqtt-url`` / ``--influx-url``
   point at servers the user already runs;
2. the BlueZ emulation (private ``dbus-daemon`` + ``bluezoo``,
   :class:`firmware_sim.testbed.BluezTestbed`) with one adapter per band plus one
   for the gateway;
3. ``--bands`` simulated bands (``crampwatch band``), each playing a night at
   ``--speed`` (or a recording with ``--replay``);
4. ``crampwatch gateway``, ``crampwatch record``, ``crampwatch alerts`` and
   ``crampwatch dashboard``, all configured by one TOML file written to the data
   directory; passwords reach them through ``*_FILE`` environment variables
   pointing at 0600 files, never on a command line.

While it runs, a read-only MQTT client follows the events and prints live progress
(bands, link health, cramps so far).  Ctrl-C or SIGTERM stops the children in
the order the data flows — bands first, then the gateway (which flushes its outbox
to the broker), the recorder (which flushes to InfluxDB), and the servers last —
so nothing is left running and nothing recorded is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sensor_gateway.errors import ConfigError, CrampwatchError
from sensor_gateway.gateway import GatewayConfig
from sensor_gateway.local_servers import (
    InfluxServer,
    MosquittoServer,
    crampwatch_acl,
)
from sensor_gateway.messages import (
    EventMessage,
    GatewayStatusMessage,
    MessageError,
    StatusMessage,
    SummaryMessage,
    Topics,
    parse_message,
)
from sensor_gateway.protocol import PACKET_SECONDS
from sensor_gateway.stop_signals import on_stop_signals

__all__ = [
    "ChildSpec",
    "DemoError",
    "DemoOptions",
    "LiveProgress",
    "Supervisor",
    "child_specs",
    "demo_config",
    "run_demo",
]

log = logging.getLogger(__name__)

#: MQTT users of the demo's own broker and the role each plays in the ACL.
DEMO_USERS = ("gateway", "recorder", "alerts", "viewer")
DATABASE = "crampwatch"
GATEWAY_ID = "demo"
_STOP_GRACE_S = 15.0
#: Wall seconds of packets a simulated band can hold while the link is busy.
BAND_RING_WALL_S = 2.0


class DemoError(CrampwatchError):
    """The demo could not start, or a part of it died."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``crampwatch demo`` was asked to run (one field per command-line option)."""

    data_dir: Path
    bands: int = 1
    speed: float = 60.0
    seed: int = 12
    hours: float = 8.0
    profile: str = "typical"
    replay: Path | None = None
    mqtt_url: str | None = None
    influx_url: str | None = None
    http_port: int = 8080
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.bands <= 8:
            raise ConfigError(f"--bands must be 1..8, got {self.bands}")
        if not self.speed > 0:
            raise ConfigError(f"--speed must be positive, got {self.speed}")
        if self.replay is not None and not self.replay.is_file():
            raise ConfigError(f"--replay: no such file: {self.replay}")


@dataclass(frozen=True)
class ChildSpec:
    """One child process: its name, argv and extra environment.

    ``finishes``: the child exits 0 by itself when its work is done (a band at the
    end of its night or recording), which is not a failure.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    finishes: bool = False


def _split_url(url: str, schemes: tuple[str, ...], default_port: int) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"expected {'/'.join(schemes)}://host[:port], got {url!r}")
    return parts.hostname, parts.port or default_port


def _toml_str(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def wall_packets(speed: float) -> int:
    """Packets a band sends in ``BAND_RING_WALL_S`` of wall time at ``speed``.

    The band's ring and the gateway's queue hold this many, as on a real band at 1x:
    at 60x a 2-s ring would be 33 ms, and the gateway's default queue (10 s at 1x)
    170 ms, which one scheduling hiccup of a busy laptop overflows.
    """
    return math.ceil(BAND_RING_WALL_S / PACKET_SECONDS * max(1.0, speed))


def demo_config(
    opts: DemoOptions, mqtt: tuple[str, int], influx_url: str, *, tls: bool = False
) -> str:
    """The TOML config every child reads (no secrets in it).

    Parameters
    ----------
    opts
        The demo's options.
    mqtt
        Broker host and port.
    influx_url
        InfluxDB 1.x base URL.
    tls
        Whether the broker is reached over TLS (``mqtts://``).
    """
    state = opts.data_dir / "state"
    return "\n".join(
        [
            "# Written by `crampwatch demo`; passwords come from *_FILE variables.",
            "[mqtt]",
            f"host = {_toml_str(mqtt[0])}",
            f"port = {mqtt[1]}",
            f"tls = {'true' if tls else 'false'}",
            f"gateway_id = {_toml_str(GATEWAY_ID)}",
            f"outbox_dir = {_toml_str(state / 'mqtt-outbox')}",
            "",
            "[influx]",
            f"url = {_toml_str(influx_url)}",
            f"database = {_toml_str(DATABASE)}",
            f"spool_dir = {_toml_str(state / 'influx-spool')}",
            "",
            "[gateway]",
            'adapter = "hci0"',
            f"speed = {opts.speed}",
            f"queue_size = {max(GatewayConfig.queue_size, wall_packets(opts.speed))}",
            f"max_bands = {opts.bands}",
            f"data_dir = {_toml_str(opts.data_dir / 'recordings')}",
            "",
            "[alerts]",
            f"state_dir = {_toml_str(state / 'alerts')}",
            "",
        ]
    )


def child_specs(
    opts: DemoOptions, config_file: Path, secrets_dir: Path | None, adapters: Sequence[str]
) -> list[ChildSpec]:
    """The crampwatch children in start order (bands first, the night view last).

    ``adapters[0]`` is the gateway's; band ``i`` advertises on ``adapters[i + 1]``.
    With ``secrets_dir`` (the demo's own broker) each child logs in as its own MQTT
    user; without, every child uses the credentials of the caller's environment.
    """
    cw = (sys.executable, "-m", "sensor_gateway")
    if opts.replay is not None:
        source: tuple[str, ...] = ("--replay", str(opts.replay))
    else:
        source = ("--simulate", "--profile", opts.profile, "--hours", str(opts.hours))
    ring = str(wall_packets(opts.speed))
    specs = [
        ChildSpec(
            f"band-{i + 1}",
            (*cw, "band", "--adapter", adapters[i + 1], "--band-id", f"{i + 1:04d}", *source,
             "--seed", str(opts.seed + i), "--speed", str(opts.speed), "--queue-packets", ring),
            finishes=True,
        )
        for i in range(opts.bands)
    ]  # fmt: skip

    def secret_env(user: str) -> dict[str, str]:
        if secrets_dir is None:
            return {}
        return {
            "CRAMPWATCH_MQTT_USERNAME": user,
            "CRAMPWATCH_MQTT_PASSWORD_FILE": str(secrets_dir / f"mqtt-{user}"),
        }

    conf = ("--config", str(config_file))
    specs += [
        ChildSpec("gateway", (*cw, "gateway", *conf), secret_env("gateway")),
        ChildSpec("recorder", (*cw, "record", *conf), secret_env("recorder")),
        ChildSpec("alerts", (*cw, "alerts", *conf), secret_env("alerts")),
        ChildSpec(
            "dashboard",
            (*cw, "dashboard", *conf, "--host", "127.0.0.1", "--port", str(opts.http_port)),
        ),
    ]
    return specs


@dataclass
class _Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def finished(self) -> bool:
        """Exited 0 because its work was done (``ChildSpec.finishes``)."""
        return self.spec.finishes and self.proc.returncode == 0


class Supervisor:
    """Starts children in their own process groups and stops them in reverse order.

    Each child's stdout and stderr go to ``<log_dir>/<name>.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[_Child] = []

    async def start(self, spec: ChildSpec) -> None:
        """Start one child."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{spec.name}.log"
        with log_path.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **spec.env},
                start_new_session=True,
            )
        self.children.append(_Child(spec, proc, log_path))

    def finished(self) -> list[str]:
        """Children that exited 0 because their work was done (``ChildSpec.finishes``)."""
        return [c.spec.name for c in self.children if c.finished]

    def dead(self) -> list[tuple[str, int, str]]:
        """Other children that exited: ``(name, exit code, last lines of its log)``."""
        out = []
        for child in self.children:
            code = child.proc.returncode
            if code is not None and not child.finished:
                tail = child.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                out.append((child.spec.name, code, "\n".join(tail)))
        return out

    async def stop_all(self) -> list[str]:
        """SIGINT each child in start order (upstream first), escalate; names that needed it.

        Stopping the producers first lets every consumer drain what they sent.
        """
        forced = []
        for child in self.children:
            if not await self._stop(child):
                forced.append(child.spec.name)
        return forced

    @staticmethod
    async def _stop(child: _Child) -> bool:
        """Stop one child; ``True`` if SIGINT (a clean shutdown) was enough."""
        proc = child.proc
        for sig, wait_s in (
            (signal.SIGINT, _STOP_GRACE_S),
            (signal.SIGTERM, 5.0),
            (signal.SIGKILL, 5.0),
        ):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), wait_s)
            if proc.returncode is not None:
                return sig == signal.SIGINT
        return False


@dataclass
class LiveProgress:
    """What the demo shows while it runs, updated from MQTT messages (pure state)."""

    bands: dict[str, str] = field(default_factory=dict)  # band id -> link state
    cramps: dict[str, int] = field(default_factory=dict)
    lost_samples: dict[str, int] = field(default_factory=dict)
    battery: dict[str, float] = field(default_factory=dict)
    gateway_online: bool = False
    last_event: str = ""
    messages: int = 0

    def update(self, msg: object) -> str | None:
        """Fold one parsed message in; a line worth printing on its own, if any."""
        self.messages += 1
        if isinstance(msg, GatewayStatusMessage):
            self.gateway_online = msg.online
        elif isinstance(msg, StatusMessage):
            st = msg.status
            if isinstance(st.get("connected"), bool):
                self.bands[msg.band_id] = "connected" if st["connected"] else "lost"
            lost = st.get("missing_emg")
            if isinstance(lost, int | float):
                self.lost_samples[msg.band_id] = int(lost)
            battery = st.get("battery_pct")
            if isinstance(battery, int | float):
                self.battery[msg.band_id] = float(battery)
        elif isinstance(msg, SummaryMessage):
            self.bands.setdefault(msg.band_id, "connected")
        elif isinstance(msg, EventMessage):
            self.bands.setdefault(msg.band_id, "connected")
            clock = time.strftime("%H:%M:%S", time.localtime(msg.time_ms / 1000))
            if msg.type == "cramp_confirmed":
                self.cramps[msg.band_id] = self.cramps.get(msg.band_id, 0) + 1
                self.last_event = f"{clock} {msg.band_id}: cramp"
                return f"[{clock}] band {msg.band_id}: cramp confirmed"
            if msg.type == "cramp_end":
                secs = msg.details.get("duration_s")
                grade = msg.details.get("severity")
                what = f"cramp ended after {secs:.0f} s" if isinstance(secs, float) else "ended"
                if grade is not None:
                    what += f", severity {grade}"
                return f"[{clock}] band {msg.band_id}: {what}"
        return None

    def line(self, elapsed_s: float) -> str:
        """One status line."""
        linked = sum(1 for s in self.bands.values() if s == "connected")
        total = sum(self.cramps.values())
        lost = sum(self.lost_samples.values())
        gw = "up" if self.gateway_online else "down"
        return (
            f"{elapsed_s:6.0f} s | gateway {gw} | bands {linked}/{len(self.bands)} linked"
            f" | cramps {total} | lost samples {lost}"
        )


async def _follow(progress: LiveProgress, cfg_doc: dict[str, object], out: TextIO) -> None:
    """Follow the broker as the read-only ``viewer`` user and fold messages into progress."""
    from sensor_gateway.mqtt import MqttAdapter, MqttConfig  # noqa: PLC0415

    cfg = MqttConfig.load(cfg_doc)
    topics = Topics(cfg.topic_prefix)
    adapter = MqttAdapter(
        cfg,
        "crampwatch-demo-viewer",
        on_connect=lambda _session_present: adapter.subscribe(topics.subscriptions()),
    )
    adapter.start()
    try:
        while True:
            received = await adapter.messages.get()
            try:
                msg = parse_message(received.topic, received.payload, topics)
            except MessageError:
                continue
            line = progress.update(msg)
            if line:
                print(f"\r\033[K{line}" if out.isatty() else line, file=out, flush=True)
    finally:
        adapter.kill()


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)


async def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the whole demo until SIGINT/SIGTERM or ``opts.duration_s``; the exit code.

    The signal handlers stay during shutdown: another Ctrl-C cannot interrupt the
    stopping of the children (the supervisor escalates to SIGTERM/SIGKILL itself).
    """
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        return await _run_until(opts, stop, out)


async def _run_until(opts: DemoOptions, stop: asyncio.Event, out: TextIO) -> int:
    """Start everything, follow progress until ``stop``, stop everything."""
    from firmware_sim.testbed import BluezTestbed  # noqa: PLC0415

    data = opts.data_dir
    data.mkdir(parents=True, exist_ok=True)
    secrets_dir = data / "secrets"
    servers: list[MosquittoServer | InfluxServer] = []
    supervisor = Supervisor(data / "logs")
    bed: BluezTestbed | None = None
    progress = LiveProgress()
    follower: asyncio.Task[None] | None = None
    started = time.monotonic()
    code = 0
    try:
        if opts.mqtt_url:
            mqtt_addr = _split_url(opts.mqtt_url, ("mqtt", "mqtts"), 1883)
            tls = opts.mqtt_url.startswith("mqtts")
        else:
            broker = MosquittoServer.create(
                data / "mosquitto", DEMO_USERS, crampwatch_acl(("recorder", "viewer"), ("alerts",))
            )
            broker.start()
            servers.append(broker)
            for user, password in broker.passwords.items():
                _write_secret(secrets_dir / f"mqtt-{user}", password)
            mqtt_addr, tls = ("127.0.0.1", broker.port), False
        if opts.influx_url:
            _split_url(opts.influx_url, ("http", "https"), 8086)
            influx_url = opts.influx_url
        else:
            influx = InfluxServer.create(data / "influxdb")
            influx.start()
            servers.append(influx)
            influx.create_database(DATABASE)
            influx_url = influx.url
        config_file = data / "crampwatch.toml"
        config_file.write_text(demo_config(opts, mqtt_addr, influx_url, tls=tls))
        bed = await BluezTestbed.astart(n_adapters=opts.bands + 1)
        own_broker = not opts.mqtt_url
        for spec in child_specs(opts, config_file, secrets_dir if own_broker else None,
                                bed.adapters):  # fmt: skip
            await supervisor.start(spec)
        viewer: dict[str, object] = {
            "host": mqtt_addr[0],
            "port": mqtt_addr[1],
            "tls": tls,
            "session_expiry_s": 60,  # a viewer needs no backlog from yesterday
        }
        if own_broker:
            viewer.update(username="viewer", password=_read_secret(secrets_dir / "mqtt-viewer"))
        viewer_doc: dict[str, object] = {"mqtt": viewer}
        follower = asyncio.create_task(_follow(progress, viewer_doc, out))
        print(
            f"crampwatch demo: {opts.bands} band(s) at {opts.speed:g}x; night view at "
            f"http://127.0.0.1:{opts.http_port}/ ; logs in {supervisor.log_dir} ; "
            "Ctrl-C stops everything.",
            file=out,
            flush=True,
        )
        if opts.duration_s is not None:
            asyncio.get_running_loop().call_later(opts.duration_s, stop.set)
        code = await watch_children(supervisor, progress, stop, started, out)
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        forced = await supervisor.stop_all()
        if bed is not None:
            bed.stop()
        for server in reversed(servers):
            server.stop()
        print(
            f"\nstopped: {sum(progress.cramps.values())} cramp(s) seen; "
            f"{'forced: ' + ', '.join(forced) if forced else 'every child exited cleanly'}",
            file=out,
            flush=True,
        )
    return code


def _read_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise DemoError(f"cannot read {path}: {exc.strerror}") from None


async def watch_children(
    supervisor: Supervisor, progress: LiveProgress, stop: asyncio.Event, t0: float, out: TextIO
) -> int:
    """Print the live progress line until ``stop`` is set (then 0).

    A band that has played its night is announced once and the demo stays up; any
    other child that exits ends the watch at once with 1, its log's tail printed.
    """
    tty = out.isatty()
    last_print = 0.0
    announced: set[str] = set()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        for name in supervisor.finished():
            if name not in announced:
                announced.add(name)
                print(
                    f"\ncrampwatch demo: {name} has played its whole night; the night view "
                    "stays up until Ctrl-C",
                    file=out,
                    flush=True,
                )
        dead = supervisor.dead()
        if dead:
            for name, rc, tail in dead:
                print(f"\ncrampwatch demo: {name} exited with {rc}:\n{tail}", file=out)
            return 1
        now = time.monotonic()
        if tty:
            print(f"\r\033[K{progress.line(now - t0)}", end="", file=out, flush=True)
        elif now - last_print >= 10.0:
            print(progress.line(now - t0), file=out, flush=True)
            last_print = now
    return 0
