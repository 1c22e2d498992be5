"""Gateway orchestration: N bands, each with its BLE link, queue, pipeline and recording.

Per band the gateway runs two tasks on the one event loop::

    BandLink.run  ──put_nowait──▶  asyncio.Queue(maxsize=queue_size)  ──get──▶  _process
    (bleak, sync callbacks)                                                     decode → BandStream
                                                                                → sinks (await)

plus one task publishing every band's status each ``status_interval_s``.
Malformed notifications are counted per error kind and logged once per kind; a
sink error is logged once per kind too, and neither stops the band.

Shutdown (``stop`` set, ``--duration`` over, SIGINT/SIGTERM): links disconnect, the
queues are drained, each :class:`BandStream` finishes (detector ``finish``, EDF+
closed) and the sinks are flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sensor_gateway.band_stream import BandOutput, BandStream, PacketLike, RecorderLike
from sensor_gateway.ble import (
    DATA,
    LINK_LOST,
    LINK_UP,
    STATUS,
    BandLink,
    BandProtocol,
    LinkSettings,
    Notification,
    discover_bands,
)
from sensor_gateway.config import load_section
from sensor_gateway.errors import CrampwatchError, LinkError
from sensor_gateway.sinks import EventSink

__all__ = ["BandCodec", "BandRuntime", "Gateway", "GatewayConfig", "load_band_protocol"]

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

    def __post_init__(self) -> None:
        for name in ("watchdog_s", "backoff_initial_s", "backoff_max_s", "connect_timeout_s",
                     "scan_timeout_s", "status_interval_s"):  # fmt: skip
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


@dataclass(frozen=True)
class BandCodec:
    """Decoders and scales of the band protocol (from ``sensor_gateway.protocol``)."""

    decode_data: Callable[[bytes], PacketLike]
    decode_status: Callable[[bytes], Any] | None
    error_types: tuple[type[BaseException], ...]
    tick_hz: float = 32768.0
    emg_uv_per_lsb: float = 0.5
    acc_g_per_lsb: float = 0.001


def _first_attr(module: Any, *names: str) -> Any:
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    return None


def load_band_protocol() -> tuple[BandProtocol, BandCodec]:
    """Bind the gateway to :mod:`sensor_gateway.protocol` (UUIDs, decoders, time sync).

    Raises
    ------
    LinkError
        If the protocol module is missing or lacks the data UUID / decoder.
    """
    try:
        proto = importlib.import_module("sensor_gateway.protocol")
    except ImportError as exc:
        raise LinkError(f"band protocol module unavailable: {exc}") from exc
    service = _first_attr(proto, "SERVICE_UUID", "BAND_SERVICE_UUID", "CRAMPWATCH_SERVICE_UUID")
    data = _first_attr(proto, "DATA_CHAR_UUID", "DATA_UUID", "EMG_DATA_UUID")
    decode = _first_attr(proto, "decode_data_packet")
    if service is None or data is None or decode is None:
        raise LinkError("sensor_gateway.protocol lacks SERVICE_UUID / DATA_CHAR_UUID / decoder")
    time_sync = None
    encode = _first_attr(proto, "encode_control")
    command = _first_attr(proto, "ControlCommand")
    if encode is not None and command is not None:
        member = _first_attr(command, "TIME_SYNC", "SYNC_TIME", "SET_TIME")
        if member is not None:

            def time_sync(host_time: float) -> bytes:
                # the protocol's own contract decides the argument form
                try:
                    return bytes(encode(member, unix_ms=round(host_time * 1000)))
                except TypeError:
                    return bytes(encode(member))

    band_proto = BandProtocol(
        service_uuid=str(service),
        data_uuid=str(data),
        status_uuid=_first_attr(proto, "STATUS_CHAR_UUID", "STATUS_UUID"),
        control_uuid=_first_attr(proto, "CONTROL_CHAR_UUID", "CONTROL_UUID"),
        time_sync=time_sync,
    )
    errors = _first_attr(proto, "ProtocolError")
    from sensor_gateway.errors import ProtocolError  # noqa: PLC0415

    codec = BandCodec(
        decode_data=decode,
        decode_status=_first_attr(proto, "decode_status"),
        error_types=(ProtocolError,) if errors is None else (ProtocolError, errors),
        tick_hz=float(_first_attr(proto, "TICK_HZ") or 32768.0),
        emg_uv_per_lsb=float(_first_attr(proto, "EMG_UV_PER_LSB") or 0.5),
        acc_g_per_lsb=float(_first_attr(proto, "ACC_G_PER_LSB") or 0.001),
    )
    return band_proto, codec


def default_recorder(
    path: Path, start: datetime, emg_fs: float, acc_fs: float | None
) -> RecorderLike:
    """Open a ``RecordingWriter`` (EDF+) for one band-night."""
    recordings = importlib.import_module("sensor_gateway.recordings")
    writer: RecorderLike = recordings.RecordingWriter(
        path, emg_fs=emg_fs, acc_fs=acc_fs, start=start, emg_label="EMG Calf", file_format="EDF+"
    )
    return writer


def status_to_dict(status: Any) -> dict[str, object]:
    """A decoded status record as a plain dict (dataclass, mapping or object)."""
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        return {k: v for k, v in dataclasses.asdict(status).items()}
    if isinstance(status, Mapping):
        return dict(status)
    return {k: v for k, v in vars(status).items() if not k.startswith("_")}


@dataclass
class BandRuntime:
    """Everything the gateway holds for one band."""

    band_id: str
    stream: BandStream
    link: BandLink | None
    queue: asyncio.Queue[Notification]
    malformed: Counter[str] = field(default_factory=Counter)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Gateway:
    """Runs several bands on one event loop and fans their output out to the sinks.

    Parameters
    ----------
    config
        Gateway settings.
    sinks
        Event sinks (JSON Lines, MQTT, ...).
    protocol, codec
        Band protocol binding; default :func:`load_band_protocol`.
    recorder_factory
        Recording writer factory; default EDF+ via ``RecordingWriter`` when
        ``config.record``.
    """

    def __init__(
        self,
        config: GatewayConfig,
        sinks: Sequence[EventSink],
        *,
        protocol: BandProtocol | None = None,
        codec: BandCodec | None = None,
        recorder_factory: Callable[[Path, datetime, float, float | None], RecorderLike]
        | None = None,
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        if protocol is None or codec is None:
            protocol, codec = load_band_protocol()
        self.protocol = protocol
        self.codec = codec
        if recorder_factory is None and config.record:
            recorder_factory = default_recorder
        self._recorder_factory = recorder_factory
        self.bands: dict[str, BandRuntime] = {}
        self.stop = asyncio.Event()
        self._sink_errors: Counter[str] = Counter()
        self._status_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ bands

    def add_band(self, band_id: str, target: Any | None) -> BandRuntime:
        """Register a band; ``target`` is a BLEDevice/address, or ``None`` for no BLE link."""
        c = self.codec
        stream = BandStream(
            band_id,
            tick_hz=c.tick_hz,
            emg_uv_per_lsb=c.emg_uv_per_lsb,
            acc_g_per_lsb=c.acc_g_per_lsb,
            batch_packets=self.config.batch_packets,
            recorder_factory=self._recorder_factory,
            data_dir=self.config.data_dir,
        )
        queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=self.config.queue_size)
        link = None
        if target is not None:
            link = BandLink(band_id, target, self.protocol, self.config.link_settings(), queue)
        rt = BandRuntime(band_id, stream, link, queue)
        self.bands[band_id] = rt
        return rt

    async def discover(self) -> None:
        """Scan (or resolve pinned bands) and register what was found."""
        cfg = self.config
        found = await discover_bands(
            self.protocol,
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
        """Discover (optional), stream until :attr:`stop` or ``duration_s``, then shut down."""
        if discover:
            await self.discover()
        self.start()
        try:
            if duration_s is None:
                await self.stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=duration_s)
        finally:
            await self.shutdown()

    def start(self) -> None:
        """Start the link and processing tasks of every registered band."""
        for rt in self.bands.values():
            if rt.tasks:
                continue
            if rt.link is not None:
                rt.tasks.append(
                    asyncio.create_task(rt.link.run(self.stop), name=f"link-{rt.band_id}")
                )
            rt.tasks.append(asyncio.create_task(self._process(rt), name=f"proc-{rt.band_id}"))
        if self._status_task is None:
            self._status_task = asyncio.create_task(self._status_loop(), name="status")

    async def shutdown(self) -> None:
        """Stop links, drain queues, finish streams (EDF+ closed), flush and close sinks."""
        self.stop.set()
        for rt in self.bands.values():
            if rt.tasks:
                await asyncio.gather(*rt.tasks, return_exceptions=True)
                rt.tasks.clear()
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
        q = rt.queue
        while True:
            link_done = rt.link is None or rt.tasks[0].done()
            if self.stop.is_set() and q.empty() and link_done:
                return
            try:
                item = await asyncio.wait_for(q.get(), timeout=0.2)
            except TimeoutError:
                continue
            await self.handle(rt, item)

    async def handle(self, rt: BandRuntime, item: Notification) -> None:
        """Process one queue item (public for tests and the benchmark)."""
        if item.kind == DATA:
            try:
                packet = self.codec.decode_data(item.payload)
            except self.codec.error_types as exc:
                kind = type(exc).__name__
                rt.malformed[kind] += 1
                if rt.malformed[kind] == 1:
                    log.warning("%s: malformed notification (%s): %s", rt.band_id, kind, exc)
                return
            out = rt.stream.on_packet(packet, item.host_time)
            await self._publish(rt, out)
        elif item.kind == STATUS:
            if self.codec.decode_status is None:
                return
            try:
                status = status_to_dict(self.codec.decode_status(item.payload))
            except self.codec.error_types as exc:
                kind = "status:" + type(exc).__name__
                rt.malformed[kind] += 1
                if rt.malformed[kind] == 1:
                    log.warning("%s: malformed status (%s): %s", rt.band_id, kind, exc)
                return
            rt.stream.on_status(status)
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
                reconnect_s=round(s.reconnect_times_s[-1], 3) if s.reconnect_times_s else None,
            )
        doc["malformed"] = sum(rt.malformed.values())
        doc["time"] = time.time()
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
