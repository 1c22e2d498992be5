"""Reassemble a band's packet stream: order, duplicates, gaps and resets from seq + tick.

Every data packet carries a 16-bit sequence number (+1 per packet, wraps at 65536)
and the 32-bit tick of its first EMG sample.  :class:`SequenceTracker` turns the
packets *as received* into an ordered stream of items:

* :class:`Delivered` — the next packet, in order;
* :class:`Gap` — ``k`` packets that never arrived (``k * n_emg`` EMG samples), to be
  filled with NaN so the detector's timeline stays true;
* :class:`Reset` — the stream restarted (band reboot: seq and tick no longer follow);
  the caller sizes that gap from the wall clock.

The packet count of a gap is read from the **tick** step (``round(dtick /
ticks_per_packet)``) and cross-checked against the seq step modulo 65536, so a
link outage longer than one seq wrap (54.6 min at 20 packets/s) is still counted
exactly.  A seq/tick pair that contradicts itself is a reset, and so is an old
packet further behind than any late delivery can be (a band that rebooted into
seq 0 and tick 0).

Out-of-order packets are held in a small, bounded reorder buffer
(``reorder_window`` packets); a packet further ahead than that releases the
buffer at once.  Duplicates (already delivered) and packets arriving after their
slot was declared missing ("late") are dropped and counted.

The tracker is pure: no I/O, no clock; the caller feeds it and reads
:meth:`SequenceTracker.stats`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Delivered", "Gap", "GapStats", "Reset", "SequenceTracker", "StreamItem"]

SEQ_MOD = 1 << 16
TICK_MOD = 1 << 32

P = TypeVar("P")


@dataclass(frozen=True)
class Delivered(Generic[P]):
    """The next packet of the stream, in order."""

    seq: int
    tick: int
    packet: P


@dataclass(frozen=True)
class Gap:
    """``n_packets`` consecutive packets that were lost, just before the next delivered one."""

    first_seq: int
    n_packets: int
    n_emg: int
    n_acc: int


@dataclass(frozen=True)
class Reset:
    """The stream restarted (seq/tick discontinuity); the next item starts a new segment."""

    reason: str


StreamItem = Delivered[P] | Gap | Reset


@dataclass(frozen=True)
class GapStats:
    """Counters of one band's packet stream (monotonic, since the tracker was created).

    Attributes
    ----------
    received
        Packets handed to :meth:`SequenceTracker.push`.
    delivered
        Packets emitted in order.
    missing_packets, missing_emg, missing_acc
        Lost packets and the samples they would have carried.
    duplicates
        Packets received twice (dropped).
    reordered
        Packets that waited in the reorder buffer for an earlier one that then
        arrived in time (delivered in order, nothing lost).
    late
        Packets that arrived after their slot was declared missing (dropped; their
        samples stay counted as missing).
    resets
        Stream restarts (reboots).
    gaps
        Number of gap items emitted.
    """

    received: int = 0
    delivered: int = 0
    missing_packets: int = 0
    missing_emg: int = 0
    missing_acc: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    resets: int = 0
    gaps: int = 0

    def to_json(self) -> dict[str, int]:
        """Plain dict for status messages."""
        return dict(self.__dict__)


@dataclass
class _Pending(Generic[P]):
    seq: int
    tick: int
    n_emg: int
    n_acc: int
    packet: P


def _signed(delta: int, modulus: int) -> int:
    delta %= modulus
    return delta - modulus if delta >= modulus // 2 else delta


class SequenceTracker(Generic[P]):
    """Order packets, drop duplicates, size gaps and detect resets.

    Parameters
    ----------
    ticks_per_emg_sample
        Band ticks per EMG sample (``TICK_HZ / emg_fs``, e.g. 32768/2000 = 16.384).
    reorder_window
        Largest number of packets held back waiting for an earlier one (bounded memory
        and latency: ``reorder_window`` x 50 ms).
    history
        How many recently delivered seqs are remembered to tell duplicates from late
        packets (an older duplicate is counted as late; both are dropped).
    tick_tolerance
        Largest disagreement, in packets (fraction), between the tick step and a whole
        number of packets before the pair is considered inconsistent.
    max_late
        An old packet (seq and tick agree) further behind than this many packets is
        not a late delivery (the link layer delivers in order and the band keeps at
        most 2 s = 40 packets) but a restart: a band that rebooted into seq 0 and tick 0
        looks exactly like the start of its previous stream.
    """

    def __init__(
        self,
        ticks_per_emg_sample: float,
        *,
        reorder_window: int = 4,
        history: int = 256,
        tick_tolerance: float = 0.25,
        max_late: int = 100,
    ) -> None:
        if ticks_per_emg_sample <= 0:
            raise ValueError("ticks_per_emg_sample must be positive")
        self.ticks_per_emg_sample = float(ticks_per_emg_sample)
        self.reorder_window = max(0, int(reorder_window))
        self.tick_tolerance = float(tick_tolerance)
        self.max_late = int(max_late)
        self._recent: deque[int] = deque(maxlen=max(8, history))
        self._recent_set: dict[int, int] = {}
        self._pending: dict[int, _Pending[P]] = {}
        self._next_seq: int | None = None
        self._next_tick = 0
        self._n_emg = 0
        self._n_acc = 0
        self._c = dict.fromkeys(GapStats.__dataclass_fields__, 0)

    # ------------------------------------------------------------------ public

    def stats(self) -> GapStats:
        """Snapshot of the counters."""
        return GapStats(**self._c)

    @property
    def pending(self) -> int:
        """Packets currently held in the reorder buffer."""
        return len(self._pending)

    def push(self, seq: int, tick: int, n_emg: int, n_acc: int, packet: P) -> list[StreamItem[P]]:
        """Feed one received packet; return the items now ready, in stream order.

        Parameters
        ----------
        seq, tick
            The packet's u16 sequence number and u32 first-sample tick.
        n_emg, n_acc
            Samples the packet carries (used to size gaps).
        packet
            Opaque payload handed back in :class:`Delivered`.
        """
        self._c["received"] += 1
        seq %= SEQ_MOD
        tick %= TICK_MOD
        out: list[StreamItem[P]] = []
        p = _Pending(seq, tick, n_emg, n_acc, packet)
        if self._next_seq is None:
            self._deliver(p, out)
            return out
        d_seq = _signed(seq - self._next_seq, SEQ_MOD)
        k = self._packets_from_ticks(tick)
        if k is None:
            self._reset(p, out, "tick step is not a whole number of packets")
            return out
        if k < 0:
            if (k - d_seq) % SEQ_MOD == 0 and -k <= self.max_late:  # old: seq and tick agree
                if seq in self._recent_set:
                    self._c["duplicates"] += 1
                else:
                    self._c["late"] += 1
                return out
            self._reset(p, out, "seq/tick went backwards")
            return out
        if (k - d_seq) % SEQ_MOD != 0:
            self._reset(p, out, "seq and tick disagree")
            return out
        if k == 0:
            self._deliver(p, out)
            self._drain_ready(out)
            return out
        # ahead of the expected packet: hold it until the hole is filled or the
        # newest held packet is more than ``reorder_window`` packets ahead
        if seq in self._pending:
            self._c["duplicates"] += 1
            return out
        self._pending[seq] = p
        while self._pending and self._max_ahead() > self.reorder_window:
            self._release_oldest(out)
        return out

    def flush(self) -> list[StreamItem[P]]:
        """Release everything held for reordering (link lost, shutdown), gaps included."""
        out: list[StreamItem[P]] = []
        self._flush(out)
        return out

    # ------------------------------------------------------------------ internals

    def _packets_from_ticks(self, tick: int) -> int | None:
        tpp = self._n_emg * self.ticks_per_emg_sample
        if tpp <= 0:
            return None
        d_tick = _signed(tick - self._next_tick, TICK_MOD)
        kf = d_tick / tpp
        k = round(kf)
        if abs(kf - k) > self.tick_tolerance:
            return None
        return k

    def _ahead(self, p: _Pending[P]) -> int:
        """Packets between the expected one and ``p`` (from ticks, so beyond a seq wrap)."""
        k = self._packets_from_ticks(p.tick)
        if k is None:
            assert self._next_seq is not None
            return (p.seq - self._next_seq) % SEQ_MOD
        return k

    def _max_ahead(self) -> int:
        return max(self._ahead(p) for p in self._pending.values())

    def _deliver(self, p: _Pending[P], out: list[StreamItem[P]]) -> None:
        out.append(Delivered(p.seq, p.tick, p.packet))
        self._c["delivered"] += 1
        self._n_emg, self._n_acc = p.n_emg, p.n_acc
        self._next_seq = (p.seq + 1) % SEQ_MOD
        # re-anchored on every received tick, so rounding never accumulates
        self._next_tick = round(p.tick + p.n_emg * self.ticks_per_emg_sample) % TICK_MOD
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            cnt = self._recent_set.get(old, 0) - 1
            if cnt <= 0:
                self._recent_set.pop(old, None)
            else:
                self._recent_set[old] = cnt
        self._recent.append(p.seq)
        self._recent_set[p.seq] = self._recent_set.get(p.seq, 0) + 1

    def _gap(self, k: int, out: list[StreamItem[P]]) -> None:
        if k <= 0 or self._next_seq is None:
            return
        out.append(Gap(self._next_seq, k, k * self._n_emg, k * self._n_acc))
        self._c["gaps"] += 1
        self._c["missing_packets"] += k
        self._c["missing_emg"] += k * self._n_emg
        self._c["missing_acc"] += k * self._n_acc
        self._next_seq = (self._next_seq + k) % SEQ_MOD
        self._next_tick = round(self._next_tick + k * self._n_emg * self.ticks_per_emg_sample)
        self._next_tick %= TICK_MOD

    def _drain_ready(self, out: list[StreamItem[P]], *, reordered: bool = True) -> None:
        while self._next_seq is not None and self._next_seq in self._pending:
            p = self._pending.pop(self._next_seq)
            if reordered:
                self._c["reordered"] += 1
            self._deliver(p, out)

    def _release_oldest(self, out: list[StreamItem[P]]) -> None:
        """Give up waiting: declare the hole before the oldest held packet missing."""
        first = min(self._pending, key=lambda s: self._ahead(self._pending[s]))
        self._gap(self._ahead(self._pending[first]), out)
        p = self._pending.pop(first)
        self._deliver(p, out)
        self._drain_ready(out, reordered=False)

    def _flush(self, out: list[StreamItem[P]]) -> None:
        while self._pending:
            self._release_oldest(out)

    def _reset(self, p: _Pending[P], out: list[StreamItem[P]], reason: str) -> None:
        self._flush(out)
        self._c["resets"] += 1
        out.append(Reset(reason))
        self._recent.clear()
        self._recent_set.clear()
        self._deliver(p, out)
