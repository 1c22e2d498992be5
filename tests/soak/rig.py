"""The overnight soak rig: the whole live path on one machine, faults on a schedule.

:func:`run_soak` starts, in a fresh directory, exactly what ``crampwatch demo``
starts (and with its code: :class:`~sensor_gateway.demo.Supervisor`,
:func:`~sensor_gateway.demo.child_specs`, :func:`~sensor_gateway.demo.demo_config`,
:class:`~sensor_gateway.local_servers.MosquittoServer`,
:class:`~sensor_gateway.local_servers.InfluxServer`,
:class:`~firmware_sim.testbed.BluezTestbed`)::

    crampwatch band --simulate --wait-start  (bluezoo BLE peripheral, faults below)
      → crampwatch gateway --speed N  (real bleak, detector, EDF+, disk outbox)
      → mosquitto  → crampwatch record  → influxd

Only the alerts service and the night view are left out (they read, they do not
carry events).  The band plays a synthetic night (:mod:`firmware_sim.night`) at
``speed`` band seconds per wall second and, with ``--wait-start``, begins with the
night's first sample at the gateway's ``START_STREAM``, so detector stream seconds
(``t_s`` of every stored event) are night seconds: no wall-clock mapping is needed
to compare with the ground truth.  (A ``--reboot-at`` fault would break that: a
rebooted ``--wait-start`` band idles until the gateway restarts it while the
gateway sizes the gap by its clock, so it is not part of the schedule.)

Faults (:class:`FaultPlan`): packet loss, link drops and notification stalls are
the band's own ``--drop-rate``, ``--disconnect-every`` and ``--stall-every``/
``--stall-for`` (band seconds); a broker restart (SIGTERM, down for a while,
start) and an influxd outage (SIGTERM, down, start) are done by the rig at fixed
fractions of the night.

After the night, the children are stopped the way the demo stops them (SIGINT,
upstream first) and the rig collects what a test needs to judge the run
(:class:`SoakResult`): every ``cramp_event`` point in InfluxDB, the gap intervals
of the gateway's EDF+ recording, the detector's events on that recording and on
the clean night (the offline references), the ground truth, memory / file-handle /
thread samples of the gateway and the recorder, the band's own counters, and what
is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from cramp_signal.detector import CrampDetector, detect_array
from cramp_signal.events import DetectorEvent
from firmware_sim.night import NightConfig, SyntheticNight
from firmware_sim.testbed import BluezTestbed
from sensor_gateway.demo import (
    DATABASE,
    ChildSpec,
    DemoOptions,
    LiveProgress,
    Supervisor,
    child_specs,
    demo_config,
)
from sensor_gateway.local_servers import InfluxServer, MosquittoServer, crampwatch_acl
from sensor_gateway.messages import MessageError, StatusMessage, Topics, parse_message
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.recordings import open_recording
from tests.fixtures.processes import is_zombie, processes_mentioning

__all__ = [
    "FaultPlan",
    "ProcSample",
    "SoakPlan",
    "SoakResult",
    "gap_intervals",
    "influx_rows",
    "run_soak",
]

#: MQTT users of the rig's broker: the two services and the rig's own read-only follower.
USERS = ("gateway", "recorder", "viewer")
#: Environment for the gateway: status every real second (the rig follows it).
GATEWAY_ENV = {"CRAMPWATCH_GATEWAY_STATUS_INTERVAL_S": "1"}
#: The band's EMG rate (``crampwatch band --simulate`` streams 2 kHz, 100 Hz accelerometer).
EMG_FS = 2000.0
ACC_FS = 100.0


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected during the night.

    Attributes
    ----------
    drop_rate
        Fraction of packets lost over the air (``crampwatch band --drop-rate``).
    disconnect_every_s
        The band drops the link every so many band seconds.
    stall_every_s, stall_for_s
        The band stops notifying for ``stall_for_s`` every ``stall_every_s`` band
        seconds (still connected; its 2-s ring overflows).
    broker_restart_at, broker_down_s
        Fraction of the night at which Mosquitto is stopped (SIGTERM) and for how
        many wall seconds it stays down.
    influx_outage_at, influx_down_s
        The same for influxd.
    """

    drop_rate: float = 0.01
    disconnect_every_s: float = 3600.0
    stall_every_s: float = 2500.0
    stall_for_s: float = 40.0
    broker_restart_at: float = 0.3
    broker_down_s: float = 3.0
    influx_outage_at: float = 0.6
    influx_down_s: float = 20.0

    def band_args(self) -> tuple[str, ...]:
        """``crampwatch band`` options for the band's own faults."""
        return (
            "--drop-rate", str(self.drop_rate),
            "--disconnect-every", str(self.disconnect_every_s),
            "--stall-every", str(self.stall_every_s),
            "--stall-for", str(self.stall_for_s),
        )  # fmt: skip


@dataclass(frozen=True)
class SoakPlan:
    """One soak run: the night, its speed and its faults.

    Attributes
    ----------
    hours, seed, profile
        The synthetic night (``crampwatch band --simulate``).
    speed
        Band seconds per wall second, for the band and the gateway's clock.
    faults
        What goes wrong, and when.
    warmup_fraction
        Fraction of the night after which the first memory / file-handle sample
        is taken (imports, caches and buffers have settled by then).
    """

    hours: float
    speed: float
    seed: int
    faults: FaultPlan
    profile: str = "typical"
    warmup_fraction: float = 0.15

    @property
    def night_s(self) -> float:
        """Length of the night in band seconds."""
        return self.hours * 3600.0

    @property
    def wall_s(self) -> float:
        """Wall seconds the band needs to play the night."""
        return self.night_s / self.speed


@dataclass(frozen=True)
class ProcSample:
    """Resources of one process, read from ``/proc/<pid>``."""

    rss_kb: int
    fds: int
    threads: int
    #: What the file descriptors point at (``readlink`` of each ``fd`` entry), sorted.
    fd_targets: tuple[str, ...] = ()

    @classmethod
    def of(cls, pid: int) -> ProcSample:
        """Sample ``pid`` now (``VmRSS`` and ``Threads`` of ``status``, entries of ``fd``)."""
        fields: dict[str, str] = {}
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = row.partition(":")
            fields[key] = value.strip()
        targets = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return cls(
            rss_kb=int(fields["VmRSS"].split()[0]),
            fds=len(targets),
            threads=int(fields["Threads"]),
            fd_targets=tuple(sorted(targets)),
        )


@dataclass
class SoakResult:
    """What one soak run measured (filled by :func:`run_soak`)."""

    plan: SoakPlan
    truth_onsets_s: list[float] = field(default_factory=list)
    truth_offsets_s: list[float] = field(default_factory=list)
    #: Every ``cramp_event`` point in InfluxDB (columns as returned, ``time`` in ms).
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Last ``band_status`` point in InfluxDB.
    final_status: dict[str, Any] = field(default_factory=dict)
    #: ``[start, end)`` stream seconds of each NaN run in the gateway's EDF+ recording.
    gaps_s: list[tuple[float, float]] = field(default_factory=list)
    recording: Path | None = None
    recording_start_ms: int = 0
    recorded_s: float = 0.0
    nan_samples: int = 0
    #: The detector on the gateway's recording (gaps included, as the gateway's detector saw
    #: them) and on the clean night.
    recorded_reference: list[DetectorEvent] = field(default_factory=list)
    clean_reference: list[DetectorEvent] = field(default_factory=list)
    #: ``name -> [(night fraction, sample)]`` for ``gateway`` and ``recorder``.
    samples: dict[str, list[tuple[float, ProcSample]]] = field(default_factory=dict)
    #: The band's counters (its last stdout line, JSON).
    band_summary: dict[str, Any] = field(default_factory=dict)
    #: Notifications the band sent that the gateway never counted as received.
    unreceived: int = 0
    #: ``(what, night seconds when it started, wall seconds it took to recover)``.
    faults_done: list[tuple[str, float, float]] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    forced: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def first_last(self, name: str) -> tuple[ProcSample, ProcSample]:
        """The warm-up and the final sample of ``name``."""
        series = self.samples[name]
        return series[0][1], series[-1][1]

    def summary_lines(self) -> list[str]:
        """The figures worth printing (and pasting into docs/soak.md)."""
        p = self.plan
        confirmed = [e for e in self.events if e["type"] == "cramp_confirmed"]
        gap_fraction = self.nan_samples / max(1.0, self.recorded_s * EMG_FS)
        lines = [
            f"night: {p.hours:g} h (seed {p.seed}, {p.profile}) at {p.speed:g}x in "
            f"{self.wall_s:.0f} s wall",
            f"cramps: truth {len(self.truth_onsets_s)}, offline detector "
            f"{sum(e.type == 'cramp_confirmed' for e in self.clean_reference)}, "
            f"in InfluxDB {len(confirmed)} (event ids unique: "
            f"{len({e['event_id'] for e in self.events}) == len(self.events)}, "
            f"{len(self.events)} cramp_event points)",
            f"gaps: {len(self.gaps_s)} recorded, {self.nan_samples / EMG_FS:.1f} s of "
            f"{self.recorded_s:.0f} s ({100 * gap_fraction:.2f} %)",
        ]  # fmt: skip
        for name in sorted(self.samples):
            first, last = self.first_last(name)
            peak = max(s.rss_kb for _f, s in self.samples[name])
            lines.append(
                f"{name}: RSS {first.rss_kb / 1024:.1f} -> {last.rss_kb / 1024:.1f} MiB "
                f"(peak {peak / 1024:.1f}), fds {first.fds} -> {last.fds}, "
                f"threads {first.threads} -> {last.threads}"
            )
        b = self.band_summary
        st = self.final_status
        lines.append(
            f"band: {b.get('produced')} packets, {b.get('lost_injected')} lost on purpose, "
            f"{b.get('overflowed')} overflowed its ring, {b.get('forced_disconnects')} forced "
            f"disconnects, {b.get('skipped_periods')} periods skipped (fell behind)"
        )
        lines.append(
            f"gateway: received {st.get('received')}, missing {st.get('missing_packets')} "
            f"packets, {st.get('connects')} connects, {st.get('stalls')} stalls, "
            f"{st.get('queue_drops')} queue drops, {st.get('malformed')} malformed, "
            f"{self.unreceived} notifications sent but not received"
        )
        for what, at_s, took in self.faults_done:
            lines.append(f"fault: {what} at night {at_s:.0f} s, back after {took:.1f} s wall")
        lines.append(
            f"shutdown: exit codes {self.exit_codes}, forced {self.forced or 'none'}, "
            f"left running {len(self.leftovers)} {self.leftovers or ''}"
        )
        return lines


def influx_rows(influx: InfluxServer, query: str) -> list[dict[str, Any]]:
    """Rows of one InfluxQL query as dicts (``time`` in ms)."""
    doc: Any = influx.query(query, DATABASE)
    out: list[dict[str, Any]] = []
    for result in doc["results"]:
        if "error" in result:
            raise AssertionError(f"{query}: {result['error']}")
        for series in result.get("series", []):
            tags = series.get("tags", {})
            out.extend({**tags, **dict(zip(series["columns"], v, strict=True))}
                       for v in series["values"])  # fmt: skip
    return out


def gap_intervals(isnan: NDArray[np.bool_], first: int, fs: float) -> list[tuple[int, int]]:
    """``[start, end)`` sample indices (offset by ``first``) of the NaN runs in ``isnan``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], isnan.astype(np.int8), [0]))))
    return [(first + int(a), first + int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _hold_last_row(
    acc: NDArray[np.float64], last: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``acc`` with NaN rows replaced by the last complete row before them; the new last row.

    The reader marks accelerometer rows inside EMG gaps NaN; the gateway's detector saw
    the last received row repeated there (sensor_gateway/band_stream.py), and so must the
    offline reference, or the two disagree next to long gaps.
    """
    rows = np.vstack([last[None, :], acc])
    ok = ~np.isnan(rows).any(axis=1)
    source = np.maximum.accumulate(np.where(ok, np.arange(rows.shape[0]), 0))
    held = rows[source]
    return held[1:], held[-1]


def _scan_recording(path: Path, result: SoakResult) -> None:
    """Gaps of the gateway's recording and the detector's events on it (one pass)."""
    with open_recording(path) as rec:
        info = rec.info
        result.recording_start_ms = round(info.start.timestamp() * 1000)
        acc_fs = float(info.acc[0].fs_hz) if info.acc else None
        det = CrampDetector(float(info.emg.fs_hz), acc_fs)
        runs: list[tuple[int, int]] = []
        n = 0
        last_acc = np.zeros(3)
        for chunk in rec.chunks(600.0):
            isnan = np.isnan(chunk.emg_uv)
            for a, b in gap_intervals(isnan, chunk.start_sample, info.emg.fs_hz):
                if runs and runs[-1][1] == a:  # a gap across a chunk boundary
                    runs[-1] = (runs[-1][0], b)
                else:
                    runs.append((a, b))
            result.nan_samples += int(isnan.sum())
            n += chunk.emg_uv.size
            acc = None
            if acc_fs is not None:
                acc, last_acc = _hold_last_row(chunk.acc_g, last_acc)
            events = det.process(chunk.emg_uv, acc)
            result.recorded_reference.extend(events)
        result.recorded_reference.extend(det.finish())
    fs = float(info.emg.fs_hz)
    result.recorded_s = n / fs
    result.gaps_s = [(a / fs, b / fs) for a, b in runs]


def _clean_reference(plan: SoakPlan, result: SoakResult) -> None:
    """Ground truth and :func:`detect_array` on the night the band played, without faults."""
    # The settings of `crampwatch band --simulate`.
    night = SyntheticNight(
        NightConfig(
            hours=plan.hours,
            seed=plan.seed,
            emg_fs=int(EMG_FS),
            acc_fs=int(ACC_FS),
            mains_hz=50,
            profile=plan.profile,
        )
    )
    result.truth_onsets_s = list(night.truth.onsets_s)
    result.truth_offsets_s = list(night.truth.offsets_s or ())
    chunks = list(night.chunks(600.0))
    emg = np.concatenate([c.emg_uv for c in chunks])
    acc = np.concatenate([c.acc_g for c in chunks])
    del chunks
    result.clean_reference = detect_array(emg, EMG_FS, acc, ACC_FS)


def _leftovers(directory: Path, pids: Sequence[int]) -> list[str]:
    """Live processes of the run: mentioning ``directory``, or one of ``pids``."""
    found = processes_mentioning(str(directory))
    return found + [f"{pid}: BlueZ test bed" for pid in pids
                    if not is_zombie(Path(f"/proc/{pid}"))]  # fmt: skip


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)


class _Follower:
    """A read-only MQTT client following band status and events (the demo's progress)."""

    def __init__(self, broker: MosquittoServer) -> None:
        cfg = MqttConfig(
            host="127.0.0.1",
            port=broker.port,
            username="viewer",
            password=broker.passwords["viewer"],
            session_expiry_s=60,
            reconnect_max_s=1.0,
        )
        self.topics = Topics(cfg.topic_prefix)
        self.progress = LiveProgress()
        self.status: dict[str, Any] = {}
        self.adapter = MqttAdapter(
            cfg, "crampwatch-soak-follower",
            on_connect=lambda _present: self.adapter.subscribe(self.topics.subscriptions()),
        )  # fmt: skip
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.adapter.start()
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            received = await self.adapter.messages.get()
            try:
                msg = parse_message(received.topic, received.payload, self.topics)
            except MessageError:
                continue
            self.progress.update(msg)
            if isinstance(msg, StatusMessage):
                self.status = dict(msg.status)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.adapter.kill()


async def _until(cond: Any, timeout_s: float, what: str, supervisors: Sequence[Supervisor]) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        dead = [d for s in supervisors for d in s.dead()]  # (a band done with its night is not)
        if dead:
            raise AssertionError(f"while waiting for {what}: children died: {dead}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


class _Run:
    """One soak run's moving parts (see :func:`run_soak`)."""

    def __init__(self, plan: SoakPlan, directory: Path, out: TextIO) -> None:
        self.plan = plan
        self.dir = directory
        self.out = out
        self.result = SoakResult(plan)
        self.broker = MosquittoServer.create(directory / "mosquitto", USERS,
                                             crampwatch_acl(("recorder", "viewer")))  # fmt: skip
        self.influx = InfluxServer.create(directory / "influxdb")
        # Two supervisors: the recorder starts first (its persistent session must exist
        # before the first event) and stops last (after the gateway flushed its outbox).
        self.upstream = Supervisor(directory / "logs")
        self.sink = Supervisor(directory / "logs")
        self.bed: BluezTestbed | None = None
        self.follower: _Follower | None = None
        self.t0 = 0.0

    def night_pos(self) -> float:
        """Night seconds the band has played by now (it keeps real-time pace)."""
        return (time.monotonic() - self.t0) * self.plan.speed

    def say(self, line: str) -> None:
        print(f"[soak {time.monotonic() - self.t0:6.1f} s] {line}", file=self.out, flush=True)

    def options(self) -> DemoOptions:
        """The demo options this run corresponds to."""
        p = self.plan
        return DemoOptions(data_dir=self.dir, speed=p.speed, seed=p.seed, hours=p.hours,
                           profile=p.profile)  # fmt: skip

    def specs(self, config_file: Path, adapters: Sequence[str]) -> dict[str, ChildSpec]:
        """The demo's band, gateway and recorder, the band with ``--wait-start`` and faults."""
        p = self.plan
        secrets = self.dir / "secrets"
        specs = {s.name: s for s in child_specs(self.options(), config_file, secrets, adapters)}
        band = specs["band-1"]
        specs["band-1"] = dataclasses.replace(
            band, argv=(*band.argv, "--wait-start", *p.faults.band_args())
        )
        gateway = specs["gateway"]
        specs["gateway"] = dataclasses.replace(gateway, env={**gateway.env, **GATEWAY_ENV})
        return specs

    async def start(self) -> None:
        p = self.plan
        self.broker.start()
        for user, password in self.broker.passwords.items():
            _write_secret(self.dir / "secrets" / f"mqtt-{user}", password)
        self.influx.start()
        self.influx.create_database(DATABASE)
        config_file = self.dir / "crampwatch.toml"
        mqtt = ("127.0.0.1", self.broker.port)
        config_file.write_text(demo_config(self.options(), mqtt, self.influx.url))
        self.bed = await BluezTestbed.astart(n_adapters=2)
        specs = self.specs(config_file, self.bed.adapters)
        self.follower = _Follower(self.broker)
        self.follower.start()
        await self.sink.start(specs["recorder"])
        recorder_id = "as crampwatch-recorder-"
        await _until(lambda: recorder_id in self.broker.log_text(), 30.0, "the recorder",
                     [self.sink])  # fmt: skip
        await asyncio.sleep(0.5)  # its SUBSCRIBE
        await self.upstream.start(specs["band-1"])
        await self.upstream.start(specs["gateway"])
        follower = self.follower
        await _until(lambda: int(follower.status.get("received") or 0) > 0, 60.0,
                     "the first packets", [self.upstream, self.sink])  # fmt: skip
        self.t0 = time.monotonic() - float(follower.status.get("seconds") or 0.0) / p.speed
        self.say(f"streaming; night of {p.night_s:.0f} s takes {p.wall_s:.0f} s")

    async def _outage(self, what: str, at: float, down_s: float, server: Any) -> None:
        night_at = at * self.plan.night_s
        while self.night_pos() < night_at:
            await asyncio.sleep(0.1)
        self.say(f"{what}: stopping at night {self.night_pos():.0f} s")
        began = time.monotonic()
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(server.start)
        took = time.monotonic() - began
        self.result.faults_done.append((what, night_at, took))
        self.say(f"{what}: back after {took:.1f} s")

    def sample(self) -> None:
        frac = self.night_pos() / self.plan.night_s
        for child in self.upstream.children + self.sink.children:
            name = child.spec.name
            if name in ("gateway", "recorder") and child.proc.returncode is None:
                sample = ProcSample.of(child.proc.pid)
                self.result.samples.setdefault(name, []).append((round(frac, 3), sample))

    async def play(self) -> None:
        p = self.plan
        f = p.faults
        faults = [
            asyncio.create_task(self._outage("broker restart", f.broker_restart_at,
                                             f.broker_down_s, self.broker)),
            asyncio.create_task(self._outage("influxd outage", f.influx_outage_at,
                                             f.influx_down_s, self.influx)),
        ]  # fmt: skip
        band = self.upstream.children[0]
        assert self.follower is not None
        next_sample = p.warmup_fraction
        next_line = time.monotonic() + 10.0
        try:
            while band.proc.returncode is None:
                await asyncio.sleep(0.2)
                dead = self.upstream.dead() + self.sink.dead()
                if dead:
                    raise AssertionError(f"children died mid-night: {dead}")
                if self.night_pos() >= next_sample * p.night_s:
                    self.sample()
                    next_sample += 0.05
                if time.monotonic() >= next_line:
                    next_line += 10.0
                    self.say(self.follower.progress.line(time.monotonic() - self.t0))
                if self.night_pos() > 1.5 * p.night_s + 60:
                    raise AssertionError("the band did not finish its night")
            await asyncio.gather(*faults)
        finally:
            for task in faults:
                task.cancel()
        tail = band.log_path.read_text(errors="replace").strip().splitlines()
        assert band.proc.returncode == 0, "\n".join(tail[-20:])
        self.result.band_summary = json.loads(tail[-1])
        notified = int(self.result.band_summary["notified"])
        follower = self.follower
        # Every notification, or as many as arrive: the count stops growing for 5 s.
        last = (-1, time.monotonic())

        def settled() -> bool:
            nonlocal last
            received = int(follower.status.get("received") or 0)
            if received != last[0]:
                last = (received, time.monotonic())
            return received >= notified or time.monotonic() - last[1] > 5.0

        await _until(settled, 60.0, "the gateway to receive the band's notifications",
                     [self.upstream, self.sink])  # fmt: skip
        self.result.unreceived = notified - int(follower.status.get("received") or 0)
        self.sample()  # the final sample: the night is over, nothing is shut down yet
        self.say(f"night over: {follower.progress.line(time.monotonic() - self.t0)}")

    async def stop(self) -> None:
        r = self.result
        if self.follower is not None:
            await self.follower.stop()
        r.forced = await self.upstream.stop_all() + await self.sink.stop_all()
        r.exit_codes = {c.spec.name: c.proc.returncode
                        for c in self.upstream.children + self.sink.children}  # fmt: skip
        if self.bed is not None:
            self.bed.stop()
        if self.influx.proc is not None and self.influx.proc.poll() is None:
            r.events = influx_rows(self.influx, 'SELECT * FROM "cramp_event"')
            status = influx_rows(self.influx, 'SELECT * FROM "band_status" ORDER BY time DESC '
                                              "LIMIT 1")  # fmt: skip
            r.final_status = status[0] if status else {}
        self.influx.stop()
        self.broker.stop()
        pids = self.bed.pids if self.bed is not None else ()
        deadline = time.monotonic() + 5.0  # a process may still be on its way out
        while (left := _leftovers(self.dir, pids)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        r.leftovers = left


def run_soak(plan: SoakPlan, directory: Path, out: TextIO = sys.stdout) -> SoakResult:
    """Play one night through the whole live path with ``plan``'s faults; what was measured.

    Every child and server is stopped on the way out, also when the run fails.

    Raises
    ------
    AssertionError
        If a child dies mid-night, the night does not start or finish in time, or
        the gateway does not receive what the band sent.
    """

    async def main() -> SoakResult:
        run = _Run(plan, directory, out)
        started = time.monotonic()
        try:
            await run.start()
            await run.play()
        finally:
            await run.stop()
        run.result.wall_s = time.monotonic() - started
        recordings = sorted((directory / "recordings").rglob("*.edf"))
        assert len(recordings) == 1, recordings
        run.result.recording = recordings[0]
        _scan_recording(recordings[0], run.result)
        _clean_reference(plan, run.result)
        return run.result

    return asyncio.run(main())
