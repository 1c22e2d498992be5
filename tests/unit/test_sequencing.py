"""SequenceTracker: ordering, duplicates, exact gap sizes across u16 wrap, resets."""

from __future__ import annotations

import numpy as np

from sensor_gateway.sequencing import Delivered, Gap, Reset, SequenceTracker, StreamItem

TPS = 32768 / 2000  # ticks per EMG sample
N_EMG, N_ACC = 100, 5


def _tick(index: int, tick0: int = 1000) -> int:
    """First-sample tick of packet ``index``, as firmware computes it (floor of exact time)."""
    return (tick0 + int(np.floor(index * N_EMG * TPS))) % (1 << 32)


def _feed(tr: SequenceTracker[int], indices: list[int], seq0: int = 0) -> list[StreamItem[int]]:
    out: list[StreamItem[int]] = []
    for i in indices:
        out += tr.push((seq0 + i) % 65536, _tick(i), N_EMG, N_ACC, i)
    return out


def _delivered(items: list[StreamItem[int]]) -> list[int]:
    return [it.packet for it in items if isinstance(it, Delivered)]


def test_in_order_stream_passes_through() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    items = _feed(tr, list(range(50)))
    assert _delivered(items) == list(range(50))
    s = tr.stats()
    assert (s.received, s.delivered, s.missing_packets, s.duplicates) == (50, 50, 0, 0)


def test_gap_of_k_packets_counts_k_times_samples() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS, reorder_window=4)
    items = _feed(tr, [0, 1, 2, *range(10, 20)])  # packets 3..9 lost
    items += tr.flush()
    gaps = [it for it in items if isinstance(it, Gap)]
    assert gaps == [Gap(first_seq=3, n_packets=7, n_emg=700, n_acc=35)]
    # the gap sits exactly between packet 2 and packet 10
    pos = items.index(gaps[0])
    before, after = items[pos - 1], items[pos + 1]
    assert isinstance(before, Delivered) and before.packet == 2
    assert isinstance(after, Delivered) and after.packet == 10
    s = tr.stats()
    assert (s.missing_packets, s.missing_emg, s.missing_acc) == (7, 700, 35)


def test_gap_across_u16_wrap() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    idx = [0, 1, 2, 3, *range(20, 25)]
    items = _feed(tr, idx, seq0=65530)  # seq 65530.. wraps to 0 at index 6
    gaps = [it for it in items if isinstance(it, Gap)]
    assert [(g.first_seq, g.n_packets) for g in gaps] == [(65534, 16)]
    assert tr.stats().resets == 0


def test_outage_longer_than_a_seq_wrap_is_counted_from_ticks() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    lost = 65536 + 1234  # 55+ minutes without a packet
    items = _feed(tr, [0, 1, 2 + lost, 3 + lost])
    gaps = [it for it in items if isinstance(it, Gap)]
    assert [g.n_packets for g in gaps] == [lost]
    assert tr.stats().missing_emg == lost * N_EMG
    assert tr.stats().resets == 0


def test_duplicates_are_dropped_and_counted() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    items = _feed(tr, [0, 1, 1, 2, 3, 2, 4])
    assert _delivered(items) == [0, 1, 2, 3, 4]
    assert tr.stats().duplicates == 2
    assert tr.stats().missing_packets == 0


def test_small_reorder_is_repaired_without_loss() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS, reorder_window=4)
    items = _feed(tr, [0, 1, 3, 2, 4, 7, 5, 6, 8])
    assert _delivered(items) == list(range(9))
    s = tr.stats()
    assert s.missing_packets == 0
    assert s.reordered == 2  # packet 3 waited for 2; packet 7 waited for 5 and 6
    assert not any(isinstance(it, Gap) for it in items)


def test_reorder_buffer_is_bounded_then_declares_the_hole_missing() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS, reorder_window=3)
    items = _feed(tr, [0, 2, 3, 4])  # 1 lost; buffer holds 2, 3, 4 (== window)
    assert _delivered(items) == [0]
    assert tr.pending == 3
    items = _feed(tr, [5])  # window exceeded: 1 declared missing
    assert _delivered(items) == [2, 3, 4, 5]
    assert tr.pending == 0
    # packet 1 now arrives too late: dropped, stays missing
    items = _feed(tr, [1])
    assert items == []
    s = tr.stats()
    assert (s.missing_packets, s.late, s.duplicates) == (1, 1, 0)


def test_reboot_seq_and_tick_restart_is_a_reset() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    items = _feed(tr, list(range(100)), seq0=500)
    # band reboots: seq restarts at 0 with a fresh tick counter
    items = tr.push(0, 77, N_EMG, N_ACC, -1)
    assert isinstance(items[0], Reset)
    assert isinstance(items[1], Delivered) and items[1].packet == -1
    items = tr.push(1, 77 + 1638, N_EMG, N_ACC, -2)
    assert _delivered(items) == [-2]
    assert tr.stats().resets == 1
    assert tr.stats().missing_packets == 0


def test_reboot_into_the_first_seq_and_tick_of_the_stream_is_a_reset_not_late() -> None:
    """A band that started at seq 0 / tick 0 and reboots into seq 0 / tick 0 sends
    packets whose seq and tick agree with the old stream's start; only their distance
    (far beyond any late delivery) tells that the band restarted."""
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    _feed(tr, list(range(1500)))
    old = tr.push(1400, _tick(1400), N_EMG, N_ACC, -1)  # 100 packets behind: a duplicate
    assert old == [] and tr.stats().duplicates == 1
    items = tr.push(40, _tick(40), N_EMG, N_ACC, -2)  # the rebooted band's backlog
    assert isinstance(items[0], Reset)
    assert _delivered(items) == [-2]
    assert _delivered(tr.push(41, _tick(41), N_EMG, N_ACC, -3)) == [-3]
    assert (tr.stats().resets, tr.stats().missing_packets) == (1, 0)


def test_seq_and_tick_disagreeing_is_a_reset() -> None:
    tr: SequenceTracker[int] = SequenceTracker(TPS)
    _feed(tr, [0, 1, 2])
    # tick says 1 packet later, seq says 10 later
    items = tr.push(12, _tick(3), N_EMG, N_ACC, 3)
    assert isinstance(items[0], Reset)


def test_random_loss_and_jitter_accounting_is_exact() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    keep = rng.random(n) > 0.03
    keep[0] = keep[-1] = True
    order = np.flatnonzero(keep).astype(float)
    order += rng.uniform(-1.5, 1.5, order.size)  # local swaps only
    arrival = np.flatnonzero(keep)[np.argsort(order, kind="stable")]
    stream = [int(i) for i in arrival]
    # 40 duplicates, each sent again 1..60 packets after the original
    for pos in sorted(rng.choice(arrival.size - 100, 40, replace=False), reverse=True):
        stream.insert(int(pos) + int(rng.integers(1, 61)), stream[pos])
    tr: SequenceTracker[int] = SequenceTracker(TPS, reorder_window=4, history=256)
    items = _feed(tr, [int(i) for i in stream], seq0=60000)
    items += tr.flush()
    out = _delivered(items)
    assert out == sorted(out)
    assert out == list(np.flatnonzero(keep))
    s = tr.stats()
    assert s.missing_packets == n - int(keep.sum())
    assert s.missing_emg == s.missing_packets * N_EMG
    assert s.duplicates == 40
    assert s.late == 0  # displacement <= 3 packets fits the window of 4
    assert s.delivered + s.missing_packets == n
    # a timeline of delivered + gap samples covers every sample exactly once
    total = sum(it.n_emg for it in items if isinstance(it, Gap)) + N_EMG * len(out)
    assert total == n * N_EMG
