"""Gateway orchestration: N bands, each with its BLE link, queue, pipeline and recording.

Per band the gateway runs two tasks on the one event loop::

    BandLink.run  ──put_nowait──▶  asyncio.Queue(maxsize=queue_size)  ──get──▶  _process
    (bleak, sync callbacks)                                                     decode → BandStream
                                                                                → sinks (await)

plus one task publishing every band's status each ``status_interval_s``.  The
codec is :mod:`sensor_gateway.protocol`; malformed notifications are counted per
error kind and logged once per kind; a sink error is logged once per kind too,
and neither stops the band.

Shutdown (``stop`` set, ``--duration`` over, SIGINT/SIGTERM): links disconnect, an
end marker queued behind each link's last item lets the processing task drain
its queue and return, each :class:`BandStream` finishes (detector ``finish``,
EDF+ closed) and the sinks are flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sensor_gateway.band_stream import BandOutput, BandStream, RecorderFactory, RecorderLike
from sensor_gateway.ble import (
    DATA,
    LINK_LOST,
    LINK_UP,
    STATUS,
    BandLink,
    LinkSettings,
    Notification,
    discover_bands,
)
from sensor_gateway.clock import scaled_clock
from sensor_gateway.config import load_section
from sensor_gateway.edf_repair import EdfRepair, find_unclosed, repair_unclosed
from sensor_gateway.errors import CrampwatchError, LinkError, ProtocolError, RecordingError
from sensor_gateway.protocol import decode_data_packet, decode_status
from sensor_gateway.recordings import RecordingWriter
from sensor_gateway.sinks import EventSink

__all__ = ["BandRuntime", "Gateway", "GatewayConfig", "default_recorder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    """``[gateway]`` table of the config file (env: ``CRAMPWATCH_GATEWAY_<FIELD>``).

    Attributes
    ----------
    adapter
        BlueZ adapter the gateway scans and connects with.
    bands
        Pinned band addresses or advertised names; empty = every band advertising
        the crampwatch service.
    max_bands
        Stop scanning after this many bands (0 = no limit).
    data_dir
        Recordings go to ``<data_dir>/<band_id>/<night>.edf``.
    record
        Write EDF+ recordings.
    watchdog_s
        No notification for this long while connected = stall → reconnect.
    backoff_initial_s, backoff_max_s, backoff_factor
        Reconnect backoff: exponential, capped.
    connect_timeout_s, scan_timeout_s
        BLE timeouts.
    queue_size
        Bounded queue between bleak's callback and processing, per band (packets).
    batch_packets
        Packets per detector/recorder call (latency x 50 ms).
    status_interval_s
        Period of status records.
    speed
        Band seconds per real second: 1 for real bands, *N* for bands simulated with
        ``crampwatch band --speed N`` (receive times are then stamped on a clock
        running *N* x from the gateway's start, see :func:`~sensor_gateway.clock.scaled_clock`).
    """

    adapter: str = "hci0"
    bands: tuple[str, ...] = ()
    max_bands: int = 0
    data_dir: Path = Path("data")
    record: bool = True
    watchdog_s: float = 3.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 2.0
    backoff_factor: float = 2.0
    connect_timeout_s: float = 10.0
    scan_timeout_s: float = 10.0
    queue_size: int = 200
    batch_packets: int = 5
    status_interval_s: float = 10.0
    speed: float = 1.0

    def __post_init__(self) -> None:
        for name in ("watchdog_s", "backoff_initial_s", "backoff_max_s", "connect_timeout_s",
                     "scan_timeout_s", "status_interval_s", "speed"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.backoff_factor < 1:
            raise ValueError("backoff_factor must be >= 1")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.queue_size < 1 or self.batch_packets < 1 or self.max_bands < 0:
            raise ValueError("queue_size and batch_packets must be >= 1, max_bands >= 0")

    @classmethod
    def load(
        cls, document: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> GatewayConfig:
        """Build from the ``[gateway]`` table and the environment (see :mod:`config`)."""
        return load_section(cls, "gateway", document, environ)

    def link_settings(self) -> LinkSettings:
        """The per-link timing."""
        return LinkSettings(
            adapter=self.adapter,
            connect_timeout_s=self.connect_timeout_s,
            watchdog_s=self.watchdog_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            backoff_factor=self.backoff_factor,
        )


def default_recorder(
    path: Path, start: datetime, emg_fs: float, acc_fs: float | None
) -> RecorderLike:
    """Open a :class:`~sensor_gateway.recordings.RecordingWriter` (EDF+) for one band-night."""
    return RecordingWriter(
        path, emg_fs=emg_fs, acc_fs=acc_fs, start=start, emg_label="EMG Calf", file_format="EDF+"
    )


@dataclass
class BandRuntime:
    """Everything the gateway holds for one band."""

    band_id: str
    stream: BandStream
    link: BandLink | None
    queue: asyncio.Queue[Notification]
    malformed: Counter[str] = field(default_factory=Counter)
    link_task: asyncio.Task[None] | None = None
    process_task: asyncio.Task[None] | None = None


#: Queue item that ends a band's processing task (put by :meth:`Gateway.shutdown`).
_END = Notification("end", 0.0)


class Gateway:
    """Runs several bands on one event loop and fans their output out to the sinks.

    Parameters
    ----------
    config
        Gateway settings.
    sinks
        Event sinks (JSON Lines, MQTT, ...).
    recorder_factory
        Recording writer factory; default EDF+ (:func:`default_recorder`) when
        ``config.record``, none otherwise.
    """

    def __init__(
        self,
        config: GatewayConfig,
        sinks: Sequence[EventSink],
        *,
        recorder_factory: RecorderFactory | None = None,
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        if recorder_factory is None and config.record:
            recorder_factory = default_recorder
        self._recorder_factory = recorder_factory
        #: Host time of receive stamps and records (runs ``config.speed`` x).
        self.clock = scaled_clock(config.speed)
        self.bands: dict[str, BandRuntime] = {}
        self.stop = asyncio.Event()
        self._sink_errors: Counter[str] = Counter()
        self._status_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ bands

    def add_band(self, band_id: str, target: Any | None) -> BandRuntime:
        """Register a band; ``target`` is a BLEDevice/address, or ``None`` for no BLE link."""
        stream = BandStream(
            band_id,
            batch_packets=self.config.batch_packets,
            recorder_factory=self._recorder_factory,
            data_dir=self.config.data_dir,
        )
        queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=self.config.queue_size)
        link = None
        if target is not None:
            link = BandLink(band_id, target, self.config.link_settings(), queue, self.clock)
        rt = BandRuntime(band_id, stream, link, queue)
        self.bands[band_id] = rt
        return rt

    async def discover(self) -> None:
        """Scan (or resolve pinned bands) and register what was found."""
        cfg = self.config
        found = await discover_bands(
            adapter=cfg.adapter,
            pinned=cfg.bands,
            max_bands=cfg.max_bands,
            timeout_s=cfg.scan_timeout_s,
        )
        if not found and cfg.bands:
            # pinned but not seen yet: connect by address, BlueZ keeps looking
            found = {b: b for b in cfg.bands}
        for band_id, device in sorted(found.items()):
            if cfg.max_bands and len(self.bands) >= cfg.max_bands:
                break
            if band_id not in self.bands:
                self.add_band(band_id, device)
        if not self.bands:
            raise LinkError(f"{cfg.adapter}: no band found within {cfg.scan_timeout_s:g} s")

    # ------------------------------------------------------------------ run

    async def run(self, duration_s: float | None = None, *, discover: bool = True) -> None:
        """Discover (optional), stream until :attr:`stop` or ``duration_s``, then shut down.

        The sinks are closed on the way out even when discovery fails.
        """
        try:
            self.recover_recordings()
            if discover:
                await self.discover()
            self.start()
            if duration_s is None:
                await self.stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=duration_s)
        finally:
            await self.shutdown()

    def recover_recordings(self) -> list[EdfRepair]:
        """Repair the recordings a previous run left unclosed (power cut, kill -9).

        Runs before any band streams, so no file below ``data_dir`` is open; each
        repair is logged once.  A file that cannot be repaired is logged and left as
        it is.
        """
        if not self.config.record:
            return []
        repaired = []
        for path in find_unclosed(self.config.data_dir):
            try:
                fix = repair_unclosed(path)
            except RecordingError as exc:
                log.error("unclosed recording left as it is: %s", exc)
                continue
            log.warning("a previous run did not close its recording: %s", fix.describe())
            repaired.append(fix)
        return repaired

    def start(self) -> None:
        """Start the link and processing tasks of every registered band."""
        for rt in self.bands.values():
            if rt.process_task is not None:
                continue
            if rt.link is not None:
                link = rt.link.run(self.stop)
                rt.link_task = asyncio.create_task(link, name=f"link-{rt.band_id}")
            rt.process_task = asyncio.create_task(self._process(rt), name=f"proc-{rt.band_id}")
        if self._status_task is None:
            self._status_task = asyncio.create_task(self._status_loop(), name="status")

    async def shutdown(self) -> None:
        """Stop links, drain queues, finish streams (EDF+ closed), flush and close sinks."""
        self.stop.set()
        links = [rt.link_task for rt in self.bands.values() if rt.link_task is not None]
        await asyncio.gather(*links, return_exceptions=True)
        for rt in self.bands.values():
            if rt.process_task is not None:
                await rt.queue.put(_END)  # after everything the link queued
                await asyncio.gather(rt.process_task, return_exceptions=True)
            rt.link_task = rt.process_task = None
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
            self._status_task = None
        for rt in self.bands.values():
            out = rt.stream.finish()
            await self._publish(rt, out)
            await self._publish_status(rt)
        for sink in self.sinks:
            try:
                await sink.close()
            except CrampwatchError as exc:
                log.error("closing sink %s failed: %s", type(sink).__name__, exc)

    # ------------------------------------------------------------------ processing

    async def _process(self, rt: BandRuntime) -> None:
        while (item := await rt.queue.get()) is not _END:
            await self.handle(rt, item)

    def _malformed(self, rt: BandRuntime, what: str, exc: ProtocolError) -> None:
        kind = f"{what}{type(exc).__name__}"
        rt.malformed[kind] += 1
        if rt.malformed[kind] == 1:
            log.warning("%s: malformed %s (%s; further ones counted): %s", rt.band_id,
                        what.rstrip(":") or "data packet", kind, exc)  # fmt: skip

    async def handle(self, rt: BandRuntime, item: Notification) -> None:
        """Process one queue item (public for tests and the benchmark)."""
        if item.kind == DATA:
            try:
                packet = decode_data_packet(item.payload)
            except ProtocolError as exc:
                self._malformed(rt, "", exc)
                return
            await self._publish(rt, rt.stream.on_packet(packet, item.host_time))
        elif item.kind == STATUS:
            try:
                status = decode_status(item.payload)
            except ProtocolError as exc:
                self._malformed(rt, "status:", exc)
                return
            rt.stream.on_status(status, item.host_time)
        elif item.kind == LINK_LOST:
            await self._publish(rt, rt.stream.on_link_lost())
            await self._publish_status(rt)
        elif item.kind == LINK_UP:
            rt.stream.connected = True
            await self._publish_status(rt)

    def band_status(self, rt: BandRuntime) -> dict[str, object]:
        """The stream's status plus link counters and malformed counts."""
        doc = rt.stream.status()
        if rt.link is not None:
            s = rt.link.stats
            doc.update(
                connected=rt.link.connected,
                connects=s.connects,
                stalls=s.stalls,
                queue_drops=s.queue_drops,
                time_syncs=s.time_syncs,
                reconnect_s=round(s.reconnect_times_s[-1], 3) if s.reconnect_times_s else None,
            )
        doc["malformed"] = sum(rt.malformed.values())
        doc["time"] = self.clock()
        return doc

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            for rt in list(self.bands.values()):
                await self._publish_status(rt)

    async def _publish_status(self, rt: BandRuntime) -> None:
        doc = self.band_status(rt)
        for sink in self.sinks:
            await self._guard(sink.publish_status(rt.band_id, doc), sink)

    async def _publish(self, rt: BandRuntime, out: BandOutput) -> None:
        for sink in self.sinks:
            for ev in out.events:
                await self._guard(sink.publish_event(rt.band_id, ev), sink)
            for summary in out.summaries:
                await self._guard(sink.publish_summary(rt.band_id, summary), sink)

    async def _guard(self, coro: Any, sink: EventSink) -> None:
        try:
            await coro
        except CrampwatchError as exc:
            kind = f"{type(sink).__name__}:{type(exc).__name__}"
            self._sink_errors[kind] += 1
            if self._sink_errors[kind] == 1:
                log.error("sink %s failed: %s (further errors of this kind counted)", kind, exc)
