"""One band's pipeline: packets → timeline with gaps → detector, recorder and sink records.

:class:`BandStream` is the pure core of the gateway for one band.  It owns

* a :class:`~sensor_gateway.sequencing.SequenceTracker` (order, duplicates, exact gap
  sizes from seq + tick),
* a :class:`~sensor_gateway.clock.ClockMapper` (band ticks → UTC, drift, reboots),
* one :class:`cramp_signal.detector.CrampDetector`,
* optionally a recorder (``RecordingWriter``: one EDF+ file per band per night).

Sample index ``i`` of the stream is EMG sample ``i`` counted from the first sample
ever received, **gaps included**: a lost packet becomes ``n_emg`` NaN samples, so
``i / emg_fs`` stays the true elapsed time and detector times, EDF+ onsets and
wall-clock stamps all agree.  After a band reboot the sequence no longer tells how
much was lost; the gap is then sized from the wall clock (the old segment's
mapping vs. the new one), rounded to whole accelerometer periods so the EMG and
accelerometer timelines stay aligned.  Accelerometer rows inside a gap repeat the
last received row (no spurious motion); the EMG NaN marks the gap.

Signal quality comes from the band: the ``LEAD_OFF``, ``EMG_SATURATED`` and
``BATTERY_LOW`` flags of every data packet and the status records (battery,
firmware, uptime, packets dropped on the band).  They go to the status records
for the sinks; the samples are kept as they are (the detector has no input for
flags and finds saturation and flat signal in the samples itself).

The time-sync reply the link waits for at every connect (protocol §5.1) anchors
the band's tick to the host clock within half its round trip (Cristian 1989).
After a band reboot the data cannot say how much time passed; the anchor of the
new session then places the first new sample, rather than the first data
packet's receive time, which is late by the band's backlog (up to 2 s).

The class does no I/O except through the recorder it is given and never awaits:
the gateway feeds it from the processing task and forwards the returned
:class:`BandOutput` to the async sinks.

Clock pairs use the tick at the *end* of a packet (``tick + n_emg`` sample
periods): a packet cannot be sent before its last sample exists, so that is the
instant the lower envelope of the receive times approaches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent, EnvelopeSummary
from sensor_gateway.clock import ClockMapper
from sensor_gateway.protocol import (
    ACC_G_PER_LSB,
    EMG_UV_PER_LSB,
    TICK_HZ,
    BandStatus,
    PacketFlags,
    tick_delta,
)
from sensor_gateway.recordings import SignalChunk
from sensor_gateway.sequencing import Delivered, Gap, GapStats, Reset, SequenceTracker

__all__ = [
    "BandOutput",
    "BandStream",
    "PacketLike",
    "RecorderFactory",
    "RecorderLike",
    "StampedEvent",
    "StampedSummary",
    "night_file",
    "utc_iso",
]

log = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

#: Annotation text prefix for detector events written into the recording.
ANNOTATION_PREFIX = "crampwatch:"
#: A time-sync anchor places a reboot's first sample only within this many seconds of it.
ANCHOR_REACH_S = 10.0

_LEAD_OFF = int(PacketFlags.LEAD_OFF)
_SATURATED = int(PacketFlags.EMG_SATURATED)
_BATTERY_LOW = int(PacketFlags.BATTERY_LOW)


class PacketLike(Protocol):
    """What :class:`BandStream` needs from a decoded data packet (``protocol.BandPacket``)."""

    @property
    def seq(self) -> int: ...
    @property
    def tick(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def emg_fs(self) -> float: ...
    @property
    def emg(self) -> NDArray[Any]: ...
    @property
    def acc(self) -> NDArray[Any]: ...


class RecorderLike(Protocol):
    """What :class:`BandStream` needs from ``recordings.RecordingWriter``."""

    def write(self, chunk: SignalChunk) -> None: ...
    def annotate(self, onset_s: float, duration_s: float | None, text: str) -> None: ...
    def close(self) -> None: ...


#: ``factory(path, start, emg_fs, acc_fs) -> recorder``
RecorderFactory = Callable[[Path, datetime, float, float | None], RecorderLike]
DetectorFactory = Callable[[float, float | None], CrampDetector]


def utc_iso(posix_s: float) -> str:
    """POSIX seconds → ISO 8601 UTC with millisecond resolution and a ``Z`` suffix."""
    dt = datetime.fromtimestamp(posix_s, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def night_file(data_dir: Path, band_id: str, start: datetime, *, suffix: str = ".edf") -> Path:
    """Path of the recording that starts at ``start``: ``<data_dir>/<band_id>/<night>.edf``.

    The night is named after the local calendar date of ``start - 12 h``: a night
    from 22:00 on 1 May to 07:00 on 2 May is ``2024-05-01``.  If that file already
    exists (gateway restarted during the night), ``-2``, ``-3``, ... is appended.
    """
    night = (start.astimezone() - timedelta(hours=12)).date().isoformat()
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in band_id)
    folder = data_dir / safe_id
    path = folder / f"{night}{suffix}"
    n = 2
    while path.exists():
        path = folder / f"{night}-{n}{suffix}"
        n += 1
    return path


@dataclass(frozen=True)
class StampedEvent:
    """A detector event with its band and wall-clock time."""

    band_id: str
    event: DetectorEvent
    wall_time: float  # POSIX seconds of event.t_s

    def to_json(self) -> dict[str, object]:
        """The detector's JSON plus ``band_id``, ``time`` (UTC ISO) and ``emitted_time``."""
        return {"band_id": self.band_id, "time": utc_iso(self.wall_time), **self.event.to_json()}


@dataclass(frozen=True)
class StampedSummary:
    """A per-second envelope summary with its band and wall-clock time."""

    band_id: str
    summary: EnvelopeSummary
    wall_time: float

    def to_json(self) -> dict[str, object]:
        """The summary's JSON plus ``band_id`` and ``time`` (UTC ISO)."""
        return {"band_id": self.band_id, "time": utc_iso(self.wall_time), **self.summary.to_json()}


@dataclass
class BandOutput:
    """What one call into :class:`BandStream` produced for the sinks."""

    events: list[StampedEvent] = field(default_factory=list)
    summaries: list[StampedSummary] = field(default_factory=list)

    def extend(self, other: BandOutput) -> None:
        """Append another output's records."""
        self.events.extend(other.events)
        self.summaries.extend(other.summaries)


@dataclass
class _Segment:
    """A stretch of stream with one clock segment: sample ``idx0`` has tick ``ext0``."""

    idx0: int
    ext0: int
    frozen_wall0: float | None = None  # set when the segment is over
    frozen_spt: float = 0.0  # seconds per tick, frozen


@dataclass(frozen=True)
class _Anchor:
    """A time-sync reply: band tick ``tick`` was latched at host time ``wall`` (± ``rtt`` / 2)."""

    tick: int
    wall: float
    rtt: float


def _default_detector(emg_fs: float, acc_fs: float | None) -> CrampDetector:
    return CrampDetector(emg_fs, acc_fs)


class BandStream:
    """Per-band pipeline from decoded packets to detector events and a lossless recording.

    Parameters
    ----------
    band_id
        Stable name of the band (address or advertised name), used in records and paths.
    batch_packets
        Packets gathered before the detector and recorder run (latency
        ``batch_packets`` x 50 ms; fewer, larger calls cost less CPU).
    reorder_window
        Packets held back for reordering (see :class:`SequenceTracker`).
    detector_factory
        ``(emg_fs, acc_fs) -> CrampDetector``; created at the first packet.
    recorder_factory
        ``(path, start, emg_fs, acc_fs) -> recorder`` or ``None`` for no recording.
    data_dir
        Where :func:`night_file` puts the recording.
    """

    def __init__(
        self,
        band_id: str,
        *,
        batch_packets: int = 5,
        reorder_window: int = 4,
        detector_factory: DetectorFactory = _default_detector,
        recorder_factory: RecorderFactory | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.band_id = band_id
        self.tick_hz = float(TICK_HZ)
        self.batch_packets = max(1, int(batch_packets))
        self._reorder_window = reorder_window
        self._detector_factory = detector_factory
        self._recorder_factory = recorder_factory
        self.data_dir = data_dir
        self.clock = ClockMapper(self.tick_hz)
        self.detector: CrampDetector | None = None
        self.recorder: RecorderLike | None = None
        self.recording_path: Path | None = None
        self.emg_fs = 0.0
        self.acc_fs: float | None = None
        self._tracker: SequenceTracker[tuple[PacketLike, float]] | None = None
        self._tps = 0.0  # ticks per EMG sample
        self._emg_per_acc = 0
        self._n_emg = 0  # next EMG sample index (timeline, gaps included)
        self._n_acc = 0
        self._buf_emg: list[FloatArray] = []
        self._buf_acc: list[FloatArray] = []
        self._buf_packets = 0
        self._chunk_start = 0
        self._last_acc: FloatArray = np.zeros(3)
        self._segments: list[_Segment] = []
        self._reset_pending = False
        self.reset_gap_samples = 0
        self.clock_only_reboots = 0
        self.connected = False
        self.lead_off: bool | None = None
        self.battery_low: bool | None = None
        self.lead_off_packets = 0
        self.saturated_packets = 0
        self.band: BandStatus | None = None  # the newest status record
        self._anchor: _Anchor | None = None
        self._last_host = -math.inf  # receive time of the newest packet applied
        self.last_packet_time: float | None = None
        self.closed = False

    # ------------------------------------------------------------------ properties

    @property
    def samples(self) -> int:
        """EMG samples on the timeline so far (gaps included, batch buffer included)."""
        return self._n_emg

    @property
    def gap_stats(self) -> GapStats:
        """The sequence tracker's counters (zeros before the first packet)."""
        return self._tracker.stats() if self._tracker is not None else GapStats()

    # ------------------------------------------------------------------ input

    def on_packet(self, packet: PacketLike, host_time: float) -> BandOutput:
        """Feed one decoded data packet received at ``host_time`` (POSIX seconds)."""
        out = BandOutput()
        if self.closed:
            return out
        self.last_packet_time = host_time
        if self._tracker is None:
            self._start(packet)
        assert self._tracker is not None
        items = self._tracker.push(
            packet.seq, packet.tick, int(packet.emg.shape[0]), int(packet.acc.shape[0]),
            (packet, host_time),
        )  # fmt: skip
        for item in items:
            out.extend(self._apply(item))
        return out

    def on_link_lost(self) -> BandOutput:
        """The BLE link went down: release held packets, process what is buffered."""
        self.connected = False
        out = BandOutput()
        if self._tracker is not None:
            for item in self._tracker.flush():
                out.extend(self._apply(item))
        out.extend(self._run_batch())
        return out

    def on_status(self, status: BandStatus, host_time: float) -> None:
        """Take a status record received at ``host_time`` (read, periodic or time-sync reply).

        Battery, lead-off, firmware, uptime and the band's own drop count go to
        :meth:`status`.  A time-sync reply (``sync_host_ms`` echoes the request's host
        time *T1*, received at *T2* = ``host_time``) anchors ``status.tick`` at
        (*T1* + *T2*) / 2 (protocol §5.1).
        """
        self.band = status
        self.lead_off = status.lead_off
        self.battery_low = status.battery_low
        if status.sync_host_ms is not None:
            sent = status.sync_host_ms / 1000.0
            self._anchor = _Anchor(status.tick, (sent + host_time) / 2, max(0.0, host_time - sent))

    def finish(self) -> BandOutput:
        """End of stream: flush, run the detector's :meth:`finish`, close the recorder."""
        if self.closed:
            return BandOutput()
        out = self.on_link_lost()
        if self.detector is not None:
            out.events.extend(self._stamp_events(self.detector.finish()))
            out.summaries.extend(self._stamp_summaries(self.detector.drain_summaries()))
        if self.recorder is not None:
            self.recorder.close()
        self.closed = True
        return out

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, object]:
        """Band status for sinks: link, battery, lead-off, clock drift, gaps, counters."""
        drift = self.clock.drift_ppm if self.clock.started else math.nan
        band = self.band
        doc: dict[str, object] = {
            "band_id": self.band_id,
            "connected": self.connected,
            "battery_pct": None if band is None else band.battery_pct,
            "battery_low": self.battery_low,
            "charging": None if band is None else band.charging,
            "lead_off": self.lead_off,
            "lead_off_packets": self.lead_off_packets,
            "saturated_packets": self.saturated_packets,
            "firmware": None if band is None else band.firmware_version,
            "uptime_s": None if band is None else band.uptime_s,
            "band_dropped_packets": None if band is None else band.dropped_packets,
            "sync_rtt_ms": None if self._anchor is None else round(self._anchor.rtt * 1e3, 1),
            "drift_ppm": None if math.isnan(drift) else round(drift, 2),
            "clock_segment": max(self.clock.segment, 0),
            "reboots": self.clock.reboots,
            "clock_only_reboots": self.clock_only_reboots,
            "samples": self._n_emg,
            "seconds": self._n_emg / self.emg_fs if self.emg_fs else 0.0,
            "reset_gap_samples": self.reset_gap_samples,
            "recording": None if self.recording_path is None else str(self.recording_path),
            "last_packet": None if self.last_packet_time is None else utc_iso(
                self.last_packet_time),
            **self.gap_stats.to_json(),
        }  # fmt: skip
        return doc

    def wall_time(self, t_s: float) -> float:
        """Wall-clock POSIX seconds of stream time ``t_s`` (seconds since sample 0)."""
        if not self._segments:
            raise RuntimeError("no packet yet")
        idx = t_s * self.emg_fs
        seg = self._segments[-1]
        for s in reversed(self._segments):
            if s.idx0 <= idx:
                seg = s
                break
        ext = seg.ext0 + (idx - seg.idx0) * self._tps
        if seg.frozen_wall0 is not None:
            return seg.frozen_wall0 + (ext - seg.ext0) * seg.frozen_spt
        return self.clock.wall_of(round(ext)) + (ext - round(ext)) * self.clock.seconds_per_tick()

    # ------------------------------------------------------------------ internals

    def _start(self, packet: PacketLike) -> None:
        self.emg_fs = float(packet.emg_fs)
        n_emg, n_acc = int(packet.emg.shape[0]), int(packet.acc.shape[0])
        if n_acc > 0 and n_emg % n_acc == 0:
            self._emg_per_acc = n_emg // n_acc
            self.acc_fs = self.emg_fs / self._emg_per_acc
        self._tps = self.tick_hz / self.emg_fs
        self._tracker = SequenceTracker(self._tps, reorder_window=self._reorder_window)
        self.detector = self._detector_factory(self.emg_fs, self.acc_fs)
        self.connected = True

    def _apply(self, item: Delivered[tuple[PacketLike, float]] | Gap | Reset) -> BandOutput:
        if isinstance(item, Reset):
            log.warning("%s: stream reset (%s)", self.band_id, item.reason)
            self._reset_pending = True
            return BandOutput()
        if isinstance(item, Gap):
            return self._append_gap(item.n_emg, item.n_acc)
        packet, host_time = item.packet
        flags = int(packet.flags)
        self.lead_off = bool(flags & _LEAD_OFF)
        self.battery_low = bool(flags & _BATTERY_LOW)
        self.lead_off_packets += self.lead_off
        self.saturated_packets += bool(flags & _SATURATED)
        n = int(packet.emg.shape[0])
        end_tick = (packet.tick + round(n * self._tps)) % (1 << 32)
        obs = self.clock.observe(end_tick, host_time, reboot=self._reset_pending)
        ext_first = obs.ext_tick - round(n * self._tps)
        if obs.reboot:
            if self._segments and not self._reset_pending:
                self.clock_only_reboots += 1  # clock saw it, sequence did not
            out = self._new_segment(ext_first, packet.tick, sized_by_clock=self._reset_pending)
        else:
            out = BandOutput()
        self._reset_pending = False
        self._last_host = host_time
        if self.recorder is None and self._recorder_factory is not None and self._n_emg == 0:
            self._open_recorder()
        emg = packet.emg.astype(np.float64) * EMG_UV_PER_LSB
        acc = packet.acc.astype(np.float64).reshape(-1, 3) * ACC_G_PER_LSB
        self._buf_emg.append(emg)
        self._buf_acc.append(acc)
        if acc.shape[0]:
            self._last_acc = acc[-1]
        self._n_emg += emg.size
        self._n_acc += acc.shape[0]
        self._buf_packets += 1
        self.connected = True
        out.extend(self._maybe_run())
        return out

    def _first_wall(self, ext_first: int, raw_first: int) -> float:
        """Wall time of a new segment's first sample: from the session's time-sync anchor
        when it was taken after the old segment's data and lies close enough in ticks,
        else from the new segment's clock (its first, backlog-delayed packets)."""
        a = self._anchor
        if a is not None and a.wall > self._last_host:
            dt = tick_delta(raw_first, a.tick) / self.tick_hz
            if abs(dt) <= ANCHOR_REACH_S:
                return a.wall + dt
        return self.clock.wall_of(ext_first)

    def _new_segment(self, ext_first: int, raw_first: int, *, sized_by_clock: bool) -> BandOutput:
        out = BandOutput()
        prev = self.clock.previous
        if self._segments and prev is not None:
            old = self._segments[-1]
            old.frozen_wall0 = prev.wall_of(old.ext0)
            old.frozen_spt = prev.seconds_per_tick
            if sized_by_clock:
                # wall time of the next sample under the old mapping vs. the new first sample
                expected = prev.wall_of(old.ext0 + (self._n_emg - old.idx0) * self._tps)
                gap_s = max(0.0, self._first_wall(ext_first, raw_first) - expected)
                per = self._emg_per_acc or 1
                n_gap = round(gap_s * self.emg_fs / per) * per
                self.reset_gap_samples += n_gap
                out.extend(self._append_gap(n_gap, n_gap // per if self._emg_per_acc else 0))
        self._segments.append(_Segment(self._n_emg, ext_first))
        return out

    #: Largest NaN block appended at once (10 s at 2 kHz): long outages stay bounded in memory.
    MAX_GAP_PIECE = 20000

    def _append_gap(self, n_emg: int, n_acc: int) -> BandOutput:
        out = BandOutput()
        per = n_emg // n_acc if n_acc else 0
        while n_emg > 0:
            piece = min(n_emg, self.MAX_GAP_PIECE - self.MAX_GAP_PIECE % (per or 1))
            piece_acc = min(n_acc, piece // per) if per else 0
            if n_emg - piece <= 0:
                piece_acc = n_acc
            self._buf_emg.append(np.full(piece, np.nan))
            if piece_acc > 0:
                self._buf_acc.append(np.tile(self._last_acc, (piece_acc, 1)))
            self._n_emg += piece
            self._n_acc += piece_acc
            n_emg -= piece
            n_acc -= piece_acc
            self._buf_packets += self.batch_packets  # run now: keep buffers small
            out.extend(self._maybe_run())
        return out

    def _open_recorder(self) -> None:
        assert self._recorder_factory is not None
        start = datetime.fromtimestamp(self.wall_time(0.0), tz=UTC)
        path = night_file(self.data_dir or Path("."), self.band_id, start)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.recorder = self._recorder_factory(path, start, self.emg_fs, self.acc_fs)
        self.recording_path = path
        log.info("%s: recording to %s", self.band_id, path)

    def _maybe_run(self) -> BandOutput:
        if self._buf_packets >= self.batch_packets:
            return self._run_batch()
        return BandOutput()

    def _run_batch(self) -> BandOutput:
        out = BandOutput()
        if not self._buf_emg:
            return out
        emg = np.concatenate(self._buf_emg)
        acc = np.concatenate(self._buf_acc) if self._buf_acc else np.zeros((0, 3))
        self._buf_emg, self._buf_acc, self._buf_packets = [], [], 0
        chunk = SignalChunk(self._chunk_start, emg, acc)
        self._chunk_start += emg.size
        if self.recorder is not None:
            self.recorder.write(chunk)
        assert self.detector is not None
        events = self.detector.process(emg, acc if self.acc_fs is not None else None)
        out.events.extend(self._stamp_events(events))
        out.summaries.extend(self._stamp_summaries(self.detector.drain_summaries()))
        return out

    def _stamp_events(self, events: list[DetectorEvent]) -> list[StampedEvent]:
        stamped = []
        for ev in events:
            stamped.append(StampedEvent(self.band_id, ev, self.wall_time(ev.t_s)))
            if self.recorder is not None:
                self.recorder.annotate(ev.t_s, None, f"{ANNOTATION_PREFIX}{ev.type}#{ev.episode}")
        return stamped

    def _stamp_summaries(self, summaries: list[EnvelopeSummary]) -> list[StampedSummary]:
        return [StampedSummary(self.band_id, s, self.wall_time(s.t_s)) for s in summaries]
