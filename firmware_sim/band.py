"""A pure model of the calf band's firmware: signal in, protocol packets out, no I/O.

:class:`BandFirmware` turns a stream of :class:`~sensor_gateway.recordings.SignalChunk`
(EMG in µV, accelerometer in g; from :class:`firmware_sim.night.SyntheticNight` or
a replayed recording) into the byte strings the band notifies on its data
characteristic (``docs/band-protocol.md`` §3), one 50 ms packet per :meth:`~BandFirmware.step`.
Time is the band's own: *band seconds since boot* by its crystal, advanced by 50 ms
per step.  The caller (the BLE peripheral, :mod:`firmware_sim.peripheral`, or a unit
test) decides how fast band time runs against the wall clock; a crystal that is
``drift_ppm`` fast makes a band second last :attr:`BandFirmware.period_s` / 0.05
true seconds.

Device behaviour modelled here
------------------------------
* **Tick clock**: ``TICK_HZ`` ticks per band second from ``tick_offset`` (u32, wraps).
  EMG sample *k* since boot is taken at tick ``tick_offset + floor(k · TICK_HZ / fs)``
  (protocol §2: the samples sit on the tick grid); a packet carries the tick of its
  first sample.  The crystal error ``drift_ppm`` makes the whole band clock (ticks,
  sampling, band time) run ``1 + drift_ppm·1e-6`` times too fast against true time,
  so it shows only against the host's clock: the pacer runs one packet per
  :attr:`BandFirmware.period_s` true seconds.
* **Sequence**: u16, +1 per packet produced (also for packets that are then lost),
  restarts at 0 on ``START_STREAM`` and at boot; *not* on a reconnect, so the
  gateway sees what it missed.
* **Streaming**: the band streams from boot (``autostart``, the default) or from the
  first ``START_STREAM``, until ``STOP_STREAM``; whether the packets reach anyone is
  the link's business.  While it is not streaming its front end is off: band time
  passes but the signal source is not read, so a replay resumes where it stopped.
* **On-band queue** (§3.6): packets wait in a ring of :attr:`BandConfig.queue_packets`
  (40 = 2 s) until the link takes them (:meth:`BandFirmware.drain`); when the ring is
  full the *oldest* packet is discarded and ``dropped_packets`` (status) counts it.
* **Flags**: ``LEAD_OFF`` when the packet's EMG is flat (peak-to-peak below
  :attr:`BandConfig.lead_off_ptp_uv`) or has gaps (NaN in a replay);
  ``EMG_SATURATED`` when a sample is at or beyond the int16 rail;
  ``TIME_SYNCED`` after a ``TIME_SYNC``; ``BATTERY_LOW`` below 15 %.
* **Battery**: linear drain, % per hour of band time.
* **Faults** (:class:`BandFaults`): seeded packet loss "over the air" (the band does
  not know; seq numbers recorded in :attr:`BandCounters.lost_seqs`), link drops every
  N s, stalls (queue not drained, link kept) for S s every N s, a reboot at a
  given time (seq and tick restart at 0, queue lost, link dropped).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from sensor_gateway.errors import SimulationError
from sensor_gateway.protocol import (
    ACC_FS,
    EMG_RATES,
    PACKET_SECONDS,
    SEQ_MODULUS,
    TICK_HZ,
    TICK_MODULUS,
    BandPacket,
    BandStatus,
    PacketFlags,
    acc_g_to_counts,
    emg_uv_to_counts,
    encode_data_packet,
    encode_status,
)

__all__ = [
    "BATTERY_LOW_PCT",
    "BandConfig",
    "BandCounters",
    "BandFaults",
    "BandFirmware",
    "ChunkLike",
    "Emitted",
]

#: Battery level (%) below which ``BATTERY_LOW`` is set (docs/band-protocol.md §3.2).
BATTERY_LOW_PCT = 15.0
_I16_MIN, _I16_MAX = -32768, 32767


class ChunkLike(Protocol):
    """What the firmware needs of a :class:`~sensor_gateway.recordings.SignalChunk`."""

    @property
    def emg_uv(self) -> NDArray[np.float64]:
        """EMG samples in µV (NaN = gap)."""
        ...

    @property
    def acc_g(self) -> NDArray[np.float64]:
        """``(n, 3)`` accelerometer samples in g (``(0, 3)`` without accelerometer)."""
        ...


@dataclass(frozen=True)
class BandFaults:
    """Faults injected into a simulated band (all off by default).

    Attributes
    ----------
    drop_rate
        Probability that a packet is lost over the air (0 ... 1).  Lost packets use
        up their sequence number; the band does not know (its ``dropped_packets``
        does not count them).  Their seq numbers go to :attr:`BandCounters.lost_seqs`.
    seed
        Seed of the loss pattern (``numpy.random.default_rng``).
    disconnect_every_s
        Drop the link every so many band seconds (``None``: never).
    stall_every_s, stall_for_s
        Every ``stall_every_s`` band seconds the link stops taking packets for
        ``stall_for_s`` seconds without disconnecting (packets pile up in the
        on-band queue, then overflow).  Stall *k* (k ≥ 1) covers
        ``[k·every, k·every + for)``.
    reboot_at_s
        Band time at which the band reboots (``None``: never).
    reboot_duration_s
        Seconds the band is dead while rebooting (its signal is lost).
    """

    drop_rate: float = 0.0
    seed: int = 0
    disconnect_every_s: float | None = None
    stall_every_s: float | None = None
    stall_for_s: float = 0.0
    reboot_at_s: float | None = None
    reboot_duration_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_rate <= 1.0:
            raise SimulationError(f"drop_rate {self.drop_rate} outside 0..1")
        for name in ("disconnect_every_s", "stall_every_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise SimulationError(f"{name} must be positive, got {v}")
        if self.stall_every_s is not None and not 0 < self.stall_for_s < self.stall_every_s:
            raise SimulationError(
                f"stall_for_s {self.stall_for_s} must be in (0, stall_every_s {self.stall_every_s})"
            )
        if self.reboot_at_s is not None and not self.reboot_at_s > 0:
            raise SimulationError(f"reboot_at_s must be positive, got {self.reboot_at_s}")
        if self.reboot_duration_s < 0:
            raise SimulationError("reboot_duration_s must not be negative")

    def stalled_at(self, t_s: float) -> bool:
        """Whether the link is stalled at band time ``t_s``."""
        if self.stall_every_s is None or t_s < self.stall_every_s:
            return False
        return (t_s % self.stall_every_s) < self.stall_for_s

    def disconnects_between(self, t0_s: float, t1_s: float) -> bool:
        """Whether a scheduled link drop falls in ``(t0_s, t1_s]``."""
        n = self.disconnect_every_s
        if n is None:
            return False
        return math.floor(t1_s / n) > math.floor(t0_s / n)


@dataclass(frozen=True)
class BandConfig:
    """Static settings of one simulated band.

    Attributes
    ----------
    band_id
        Short id (e.g. ``"0001"``); the advertised name is ``CalfBand-<band_id>``.
    emg_fs
        EMG rate at boot, 1000 or 2000 Hz (must match the signal source).
    has_acc
        Whether the band variant has an accelerometer.
    drift_ppm
        Crystal error: the band's clock (tick, sampling, band time) runs
        ``(1 + drift_ppm·1e-6)`` times too fast against true time.
    tick_offset
        Tick at boot (u32; use values near 2**32 to test the wrap).
    battery_start_pct, battery_drain_pct_per_h
        Charge at boot and linear drain.
    firmware
        Version reported in the status record.
    queue_packets
        Size of the on-band ring of packets awaiting transmission (40 = 2 s).
    lead_off_ptp_uv
        EMG peak-to-peak (µV) below which a packet counts as flat (electrode off).
    autostart
        Stream from boot; ``False``: wait for ``START_STREAM`` (after every boot).
    faults
        Injected faults.
    """

    band_id: str = "0001"
    emg_fs: int = 2000
    has_acc: bool = True
    drift_ppm: float = 0.0
    tick_offset: int = 0
    battery_start_pct: float = 100.0
    battery_drain_pct_per_h: float = 3.0
    firmware: tuple[int, int, int] = (1, 0, 0)
    queue_packets: int = 40
    lead_off_ptp_uv: float = 1.0
    autostart: bool = True
    faults: BandFaults = field(default_factory=BandFaults)

    def __post_init__(self) -> None:
        if self.emg_fs not in EMG_RATES:
            raise SimulationError(f"emg_fs {self.emg_fs} not one of {EMG_RATES}")
        if not 0 <= self.tick_offset < TICK_MODULUS:
            raise SimulationError(f"tick_offset {self.tick_offset} outside u32")
        if abs(self.drift_ppm) >= 1e4:
            raise SimulationError(f"drift_ppm {self.drift_ppm} is not a crystal error")
        if not 0 <= self.battery_start_pct <= 100 or self.battery_drain_pct_per_h < 0:
            raise SimulationError("battery must start in 0..100 % and not charge")
        if self.queue_packets < 1:
            raise SimulationError("queue_packets must be at least 1")
        if not self.band_id or not self.band_id.isascii() or len(self.band_id) > 16:
            raise SimulationError(f"band_id {self.band_id!r}: 1..16 ASCII characters")


@dataclass
class BandCounters:
    """Everything the band did since it was created (across reboots).

    Attributes
    ----------
    produced
        Packets built (seq numbers used).
    lost
        Packets lost by the ``drop_rate`` fault; ``lost_seqs`` holds their seq numbers.
    overflowed
        Packets discarded because the on-band queue was full (status ``dropped_packets``
        counts the same since the last boot).
    sent
        Packets handed to the link by :meth:`BandFirmware.drain`.
    reboots, time_syncs
        Events.
    """

    produced: int = 0
    lost: int = 0
    overflowed: int = 0
    sent: int = 0
    reboots: int = 0
    time_syncs: int = 0
    lost_seqs: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Emitted:
    """One packet the band produced.

    Attributes
    ----------
    seq, tick, flags
        As in the packet header.
    t_s
        Band time (s since boot) of the packet's first sample.
    data
        The encoded packet (the data characteristic's value).
    """

    seq: int
    tick: int
    flags: PacketFlags
    t_s: float
    data: bytes


class BandFirmware:
    """The band's firmware, stepped 50 ms at a time.

    Parameters
    ----------
    config
        Band settings and faults.
    source
        Signal chunks at ``config.emg_fs`` (EMG) and 100 Hz (accelerometer).  When it
        runs out the band has nothing more to send (:attr:`exhausted`).

    Notes
    -----
    One :meth:`step` produces at most one packet and advances band time by 50 ms;
    :meth:`drain` hands queued packets to the link.  Scheduled link events (drop,
    stall) are *reported* by :meth:`step`/:meth:`link_stalled`; applying them is the
    link's job.
    """

    def __init__(self, config: BandConfig, source: Iterable[ChunkLike]) -> None:
        self.config = config
        self.counters = BandCounters()
        self._source: Iterator[ChunkLike] = iter(source)
        self._rng = np.random.default_rng(config.faults.seed)
        self._source_fs = config.emg_fs  # the signal source's EMG rate
        self._emg = np.zeros(0)
        self._acc = np.zeros((0, 3))
        self._queue: deque[Emitted] = deque()
        self.exhausted = False
        #: Band seconds since creation (never reset; drives battery and faults).
        self.life_s = 0.0
        self._boot(config.tick_offset, first=True)

    # ------------------------------------------------------------------ state

    def _boot(self, tick_offset: int, *, first: bool = False) -> None:
        self.emg_fs = self.config.emg_fs
        self._tick_offset = tick_offset
        self._samples = 0  # source samples since boot (drives tick and uptime)
        self.seq = 0
        self.streaming = self.config.autostart
        self.time_synced = False
        self.dropped_packets = 0  # since boot (status field)
        self._queue.clear()
        self._recent_sat: deque[bool] = deque(maxlen=round(1.0 / PACKET_SECONDS))
        self.lead_off = False
        if not first:
            self.counters.reboots += 1

    @property
    def uptime_s(self) -> float:
        """Band seconds since the last boot."""
        return self._samples / self._source_fs

    @property
    def samples_per_packet(self) -> int:
        """EMG samples in a full packet (100 at 2000 Hz, 50 at 1000 Hz)."""
        return round(self.emg_fs * PACKET_SECONDS)

    @property
    def tick(self) -> int:
        """The band's tick now (u32)."""
        return self._tick_at_sample(self._samples)

    def _tick_at_sample(self, k: int) -> int:
        return (self._tick_offset + (k * TICK_HZ) // self._source_fs) % TICK_MODULUS

    @property
    def period_s(self) -> float:
        """True seconds per 50-ms packet period of the band's crystal: ``0.05 / (1 + drift)``."""
        return PACKET_SECONDS / (1.0 + self.config.drift_ppm * 1e-6)

    @property
    def battery_pct(self) -> float:
        """State of charge (%), never below 0."""
        c = self.config
        return max(0.0, c.battery_start_pct - c.battery_drain_pct_per_h * self.life_s / 3600.0)

    @property
    def queued(self) -> int:
        """Packets waiting in the on-band queue."""
        return len(self._queue)

    # ------------------------------------------------------------------ signal

    def _fill(self, n_emg: int) -> bool:
        """Pull chunks until ``n_emg`` EMG samples are buffered; False if the source ends."""
        parts_e, parts_a = [self._emg], [self._acc]
        have = self._emg.shape[0]
        while have < n_emg:
            try:
                chunk = next(self._source)
            except StopIteration:
                self.exhausted = True
                break
            e = np.asarray(chunk.emg_uv, dtype=np.float64).ravel()
            a = np.asarray(chunk.acc_g, dtype=np.float64).reshape(-1, 3)
            parts_e.append(e)
            parts_a.append(a)
            have += e.shape[0]
        if len(parts_e) > 1:
            self._emg = np.concatenate(parts_e)
            self._acc = np.concatenate(parts_a)
        return self._emg.shape[0] >= n_emg

    def _take(self, n_emg: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n_acc = -(-n_emg // round(self._source_fs / ACC_FS))
        e, self._emg = self._emg[:n_emg], self._emg[n_emg:]
        a, self._acc = self._acc[:n_acc], self._acc[n_acc:]
        return e, a

    # ------------------------------------------------------------------ stepping

    def step(self) -> Emitted | None:
        """Advance band time by 50 ms and produce that period's packet.

        Returns
        -------
        Emitted or None
            The packet (also queued unless the ``drop_rate`` fault lost it), or
            ``None`` when not streaming, rebooting or out of signal.
        """
        dec = self._source_fs // self.emg_fs
        n = self.samples_per_packet * dec
        if not self.streaming:  # front end off: time passes, the source is not read
            self._samples += n
            self.life_s += n / self._source_fs
            return None
        if not self._fill(n):
            return None
        emg_uv, acc_g = self._take(n)
        if dec > 1:  # SET_EMG_RATE 1000 on a 2000 Hz source: average pairs
            emg_uv = emg_uv.reshape(-1, dec).mean(axis=1)
        t_s = self.uptime_s
        first = self._samples
        self._samples += n
        self.life_s += n / self._source_fs
        gaps = np.isnan(emg_uv)
        valid = emg_uv[~gaps]
        flat = bool(np.ptp(valid) < self.config.lead_off_ptp_uv) if valid.size else True
        q = emg_uv_to_counts(np.where(gaps, 0.0, emg_uv))
        saturated = bool(q.n_clipped) or bool(
            ((q.counts == _I16_MIN) | (q.counts == _I16_MAX)).any()
        )
        flags = PacketFlags(0)
        self.lead_off = bool(gaps.any()) or flat
        if self.lead_off:
            flags |= PacketFlags.LEAD_OFF
        if saturated:
            flags |= PacketFlags.EMG_SATURATED
        if self.time_synced:
            flags |= PacketFlags.TIME_SYNCED
        if self.battery_pct < BATTERY_LOW_PCT:
            flags |= PacketFlags.BATTERY_LOW
        self._recent_sat.append(saturated)
        acc = None
        if self.config.has_acc and acc_g.shape[0] and not np.isnan(acc_g).any():
            acc = acc_g_to_counts(acc_g).counts
        pkt = BandPacket.create(
            self.seq, self._tick_at_sample(first), q.counts, acc, emg_fs=float(self.emg_fs),
            flags=flags,
        )  # fmt: skip
        out = Emitted(pkt.seq, pkt.tick, pkt.flags, t_s, encode_data_packet(pkt))
        self.seq = (self.seq + 1) % SEQ_MODULUS
        self.counters.produced += 1
        f = self.config.faults
        if f.drop_rate and self._rng.random() < f.drop_rate:
            self.counters.lost += 1
            self.counters.lost_seqs.append(out.seq)
            return out
        if len(self._queue) >= self.config.queue_packets:
            self._queue.popleft()
            self.dropped_packets += 1
            self.counters.overflowed += 1
        self._queue.append(out)
        return out

    def drain(self, limit: int | None = None) -> list[Emitted]:
        """Hand up to ``limit`` queued packets (oldest first) to the link."""
        k = len(self._queue) if limit is None else min(limit, len(self._queue))
        out = [self._queue.popleft() for _ in range(k)]
        self.counters.sent += k
        return out

    def unsend(self, packets: list[Emitted]) -> None:
        """Put packets the link could not take back at the head of the queue, in order.

        Packets that no longer fit (the queue filled up meanwhile) are discarded,
        the oldest first, and counted as overflow.
        """
        self.counters.sent -= len(packets)
        for p in reversed(packets):
            self._queue.appendleft(p)
        while len(self._queue) > self.config.queue_packets:
            self._queue.popleft()
            self.dropped_packets += 1
            self.counters.overflowed += 1

    def link_stalled(self) -> bool:
        """Whether the stall fault holds the link at the current band time."""
        return self.config.faults.stalled_at(self.life_s)

    def link_drop_due(self, since_life_s: float) -> bool:
        """Whether a scheduled link drop fell between ``since_life_s`` and now."""
        return self.config.faults.disconnects_between(since_life_s, self.life_s)

    def reboot_due(self) -> bool:
        """Whether the scheduled reboot time has been reached (only once)."""
        at = self.config.faults.reboot_at_s
        return at is not None and self.counters.reboots == 0 and self.life_s >= at

    def reboot(self) -> None:
        """Reboot: signal lost for ``reboot_duration_s``, then seq, tick, queue start afresh."""
        n = round(self.config.faults.reboot_duration_s * self._source_fs)
        step = round(self._source_fs * PACKET_SECONDS)
        while n > 0 and self._fill(min(n, step)):
            k = min(n, step)
            self._take(k)
            n -= k
            self.life_s += k / self._source_fs
        self._boot(0)

    # ------------------------------------------------------------------ control

    def start_stream(self) -> None:
        """``START_STREAM``: (re)start streaming, seq restarts at 0."""
        self.streaming = True
        self.seq = 0

    def stop_stream(self) -> None:
        """``STOP_STREAM``: stop producing packets and reading the source (queue kept)."""
        self.streaming = False

    def set_emg_rate(self, fs: int) -> None:
        """``SET_EMG_RATE`` (only while not streaming).

        The band can go down to 1000 Hz from a 2000 Hz source (pairs of samples are
        averaged) and back, but not above the source's rate.

        Raises
        ------
        SimulationError
            While streaming, or for a rate the source cannot feed.
        """
        if self.streaming:
            raise SimulationError("SET_EMG_RATE while streaming")
        if fs not in EMG_RATES or self._source_fs % fs:
            raise SimulationError(
                f"EMG rate {fs} Hz not possible from a {self._source_fs} Hz signal source"
            )
        self.emg_fs = fs

    def status(self, *, sync_host_ms: int | None = None) -> BandStatus:
        """A status record latched now; with ``sync_host_ms`` it answers a ``TIME_SYNC``."""
        if sync_host_ms is not None:
            self.time_synced = True
            self.counters.time_syncs += 1
        return BandStatus(
            battery_pct=round(self.battery_pct),
            lead_off=self.lead_off,
            emg_saturated=any(self._recent_sat),
            streaming=self.streaming,
            battery_low=self.battery_pct < BATTERY_LOW_PCT,
            time_synced=self.time_synced,
            emg_fs=self.emg_fs,
            acc_fs=ACC_FS if self.config.has_acc else 0,
            firmware=self.config.firmware,
            uptime_s=min(int(self.uptime_s), (1 << 32) - 1),
            tick=self.tick,
            dropped_packets=min(self.dropped_packets, (1 << 32) - 1),
            sync_host_ms=sync_host_ms,
        )

    def status_bytes(self, *, sync_host_ms: int | None = None) -> bytes:
        """:meth:`status`, encoded (32 bytes)."""
        return encode_status(self.status(sync_host_ms=sync_host_ms))
