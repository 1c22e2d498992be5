"""The band firmware model (firmware_sim.band), without D-Bus."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from firmware_sim.band import BandConfig, BandFaults, BandFirmware
from sensor_gateway.errors import SimulationError
from sensor_gateway.protocol import (
    PacketFlags,
    decode_data_packet,
    decode_status,
    emg_counts_to_uv,
    seq_delta,
    tick_delta,
)
from sensor_gateway.recordings import SignalChunk

FS = 2000


def noise(seconds: float, *, seed: int = 0, uv: float = 40.0, chunk_s: float = 1.0,
          acc: bool = True) -> Iterator[SignalChunk]:  # fmt: skip
    rng = np.random.default_rng(seed)
    n = round(chunk_s * FS)
    for i in range(round(seconds / chunk_s)):
        a = np.tile([0.01 * i, -0.25, 1.0], (round(chunk_s * 100), 1)) if acc else np.zeros((0, 3))
        yield SignalChunk(i * n, rng.normal(0.0, uv, n), a)


def run(fw: BandFirmware, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        e = fw.step()
        assert e is not None
        out.append(e.data)
    return out


def test_packets_carry_the_signal_with_consecutive_seq_and_ticks() -> None:
    src = list(noise(2.0))
    fw = BandFirmware(BandConfig(), iter(src))
    pkts = [decode_data_packet(d) for d in run(fw, 40)]
    assert [p.seq for p in pkts] == list(range(40))
    assert all(p.emg.shape == (100,) and p.acc.shape == (5, 3) for p in pkts)
    emg = np.concatenate([emg_counts_to_uv(p.emg) for p in pkts])
    want = np.concatenate([c.emg_uv for c in src])
    np.testing.assert_allclose(emg, want, atol=0.25)  # 0.5 µV/LSB rounding
    steps = np.diff([p.tick for p in pkts])
    assert set(steps.tolist()) <= {1638, 1639}
    assert pkts[-1].tick == (39 * 100 * 32768) // FS
    assert pkts[0].acc[0].tolist() == [0, -250, 1000]
    assert fw.queued == 40  # nobody drained yet: the ring holds exactly 2 s


def test_drift_and_tick_offset_wrap() -> None:
    start = 2**32 - 1000
    fw = BandFirmware(BandConfig(drift_ppm=100.0, tick_offset=start), noise(60.0))
    pkts = [decode_data_packet(d) for d in run(fw, 1200)]  # 60 band seconds
    assert pkts[0].tick == start
    assert pkts[1].tick < start  # wrapped through 2**32
    # protocol §2: samples sit on the tick grid, so 60 band seconds are 60 x 32768 ticks;
    # the fast crystal shows only in true time: a packet period lasts 50 ms / 1.0001
    assert tick_delta(pkts[-1].tick, pkts[0].tick) == (1199 * 100 * 32768) // FS
    assert fw.period_s == pytest.approx(0.05 / 1.0001, rel=1e-12)
    assert BandFirmware(BandConfig(), noise(1.0)).period_s == 0.05


def test_band_without_autostart_waits_for_start_and_does_not_read_the_source() -> None:
    src = list(noise(2.0))
    fw = BandFirmware(BandConfig(autostart=False), iter(src))
    assert not fw.status().streaming
    assert all(fw.step() is None for _ in range(10))  # 0.5 band seconds pass, idle
    assert fw.uptime_s == pytest.approx(0.5) and fw.tick == (10 * 100 * 32768) // FS
    fw.start_stream()
    p = decode_data_packet(run(fw, 1)[0])
    assert p.seq == 0 and p.tick == (10 * 100 * 32768) // FS
    np.testing.assert_allclose(emg_counts_to_uv(p.emg), src[0].emg_uv[:100], atol=0.25)


def test_sequence_wraps_at_65536() -> None:
    fw = BandFirmware(BandConfig(), noise(3300.0, chunk_s=10.0))
    seqs = [decode_data_packet(d).seq for d in run(fw, 65540)]
    assert seqs[65535] == 65535
    assert seqs[65536:] == [0, 1, 2, 3]
    assert all(seq_delta(b, a) == 1 for a, b in itertools.pairwise(seqs[65530:]))


def test_ring_buffer_keeps_newest_and_counts_overflow() -> None:
    fw = BandFirmware(BandConfig(queue_packets=40), noise(10.0))
    run(fw, 100)
    assert fw.counters.overflowed == 60
    assert fw.status().dropped_packets == 60
    got = [decode_data_packet(e.data).seq for e in fw.drain()]
    assert got == list(range(60, 100))
    assert fw.queued == 0
    assert fw.counters.sent == 40


def test_unsend_puts_packets_back_in_order() -> None:
    fw = BandFirmware(BandConfig(), noise(1.0))
    run(fw, 5)
    first = fw.drain(3)
    fw.unsend(first[1:])
    assert [e.seq for e in fw.drain()] == [1, 2, 3, 4]


def test_drop_rate_is_seeded_and_recorded_exactly() -> None:
    faults = BandFaults(drop_rate=0.1, seed=7)
    a = BandFirmware(BandConfig(faults=faults), noise(30.0))
    b = BandFirmware(BandConfig(faults=faults), noise(30.0))
    delivered: list[int] = []
    for _ in range(600):  # the link takes every packet as soon as it is queued
        a.step()
        delivered += [e.seq for e in a.drain()]
    run(b, 600)
    assert a.counters.lost_seqs == b.counters.lost_seqs
    assert 30 <= a.counters.lost <= 90
    assert a.counters.overflowed == 0 and a.counters.sent == 600 - a.counters.lost
    assert sorted(delivered + a.counters.lost_seqs) == list(range(600))  # no packet lost twice
    assert set(delivered).isdisjoint(a.counters.lost_seqs)


def test_flags_lead_off_saturation_time_sync_battery() -> None:
    flat = [SignalChunk(0, np.full(2000, 3.0), np.zeros((100, 3)))]
    fw = BandFirmware(BandConfig(), iter(flat))
    p = decode_data_packet(run(fw, 1)[0])
    assert p.flags & PacketFlags.LEAD_OFF
    assert fw.status().lead_off

    sat = np.zeros(2000)
    sat[:100] = np.linspace(-100.0, 100.0, 100)
    sat[100:200] = 20000.0  # beyond +16383.5 µV
    fw = BandFirmware(BandConfig(), iter([SignalChunk(0, sat, np.zeros((100, 3)))]))
    p0, p1 = (decode_data_packet(d) for d in run(fw, 2))
    assert not p0.flags & (PacketFlags.EMG_SATURATED | PacketFlags.LEAD_OFF)
    assert p1.flags & PacketFlags.EMG_SATURATED
    assert fw.status().emg_saturated

    gaps = np.random.default_rng(0).normal(0, 40, 2000)
    gaps[5] = np.nan
    fw = BandFirmware(BandConfig(battery_start_pct=14.0),
                      iter([SignalChunk(0, gaps, np.zeros((100, 3)))]))  # fmt: skip
    reply = decode_status(fw.status_bytes(sync_host_ms=1234))
    assert reply.sync_host_ms == 1234 and reply.time_synced and reply.battery_low
    p = decode_data_packet(run(fw, 1)[0])
    assert p.flags & PacketFlags.LEAD_OFF
    assert p.flags & PacketFlags.TIME_SYNCED and p.flags & PacketFlags.BATTERY_LOW


def test_battery_drains_per_band_hour() -> None:
    fw = BandFirmware(BandConfig(battery_drain_pct_per_h=36.0), noise(100.0, chunk_s=10.0))
    run(fw, 2000)  # 100 s = 1 % at 36 %/h
    assert fw.battery_pct == pytest.approx(99.0)
    assert fw.status().battery_pct == 99


def test_stop_start_stream_and_rate_change() -> None:
    fw = BandFirmware(BandConfig(), noise(5.0))
    run(fw, 3)
    fw.stop_stream()
    assert fw.step() is None
    assert fw.queued == 3  # stopping does not discard what is queued
    fw.set_emg_rate(1000)
    fw.start_stream()
    with pytest.raises(SimulationError, match="while streaming"):
        fw.set_emg_rate(2000)
    e = fw.step()
    assert e is not None
    p = decode_data_packet(e.data)
    assert p.seq == 0 and p.emg_fs == 1000.0 and p.emg.shape == (50,) and p.acc.shape == (5, 3)
    fw.stop_stream()
    with pytest.raises(SimulationError, match="not possible"):
        fw.set_emg_rate(4000)


def test_reboot_resets_seq_tick_and_queue() -> None:
    faults = BandFaults(reboot_at_s=1.0, reboot_duration_s=0.5)
    fw = BandFirmware(BandConfig(tick_offset=5000, faults=faults), noise(5.0))
    run(fw, 20)
    assert fw.reboot_due()
    fw.reboot()
    assert not fw.reboot_due() and fw.counters.reboots == 1
    assert fw.queued == 0 and fw.status().uptime_s == 0
    p = decode_data_packet(run(fw, 1)[0])
    assert p.seq == 0 and p.tick == 0
    assert fw.life_s == pytest.approx(1.55)


def test_fault_schedule() -> None:
    f = BandFaults(disconnect_every_s=10.0, stall_every_s=30.0, stall_for_s=5.0)
    assert not f.disconnects_between(0.0, 9.95)
    assert f.disconnects_between(9.95, 10.0)
    assert not f.stalled_at(2.0)
    assert f.stalled_at(30.0) and f.stalled_at(34.9) and not f.stalled_at(35.0)
    assert f.stalled_at(61.0)
    with pytest.raises(SimulationError):
        BandFaults(stall_every_s=5.0, stall_for_s=6.0)
    with pytest.raises(SimulationError):
        BandFaults(drop_rate=1.5)
    with pytest.raises(SimulationError):
        BandConfig(emg_fs=500)


def test_source_exhaustion_and_band_without_accelerometer() -> None:
    fw = BandFirmware(BandConfig(has_acc=False), noise(0.1, chunk_s=0.1, acc=False))
    p = [decode_data_packet(d) for d in run(fw, 2)]
    assert all(x.acc.shape == (0, 3) and not x.flags & PacketFlags.ACC_PRESENT for x in p)
    assert fw.step() is None and fw.exhausted
    assert fw.status().acc_fs == 0
