"""ClockMapper: drift and offset from jittery, late-biased (tick, receive time) pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensor_gateway.clock import U32, ClockMapper

TICK_HZ = 32768.0
PACKET_S = 0.05
T0 = 1_700_000_000.0  # an arbitrary UTC instant (POSIX seconds)


def _ble_delays(rng: np.random.Generator, n: int) -> np.ndarray:
    """BLE receive delay: exponential 0-30 ms plus 1 % retransmission bursts of 0.1-0.4 s."""
    d = np.minimum(rng.exponential(0.008, n), 0.030)
    burst = rng.random(n) < 0.01
    d[burst] += rng.uniform(0.1, 0.4, int(burst.sum()))
    return d


def _scenario(
    duration_s: float, drift_ppm: float, tick0: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True send times, raw u32 ticks and host receive times of one packet stream."""
    rng = np.random.default_rng(seed)
    n = round(duration_s / PACKET_S)
    true_t = np.arange(n) * PACKET_S  # wall seconds since T0 at which each packet is sent
    # host = (1 + d) * device  <=>  device seconds = true / (1 + d)
    dev_ticks = np.floor(true_t / (1.0 + drift_ppm * 1e-6) * TICK_HZ).astype(np.int64)
    raw = (dev_ticks + tick0) % U32
    host = T0 + true_t + _ble_delays(rng, n)
    return true_t, raw, host


@pytest.mark.parametrize("drift_ppm", [40.0, -40.0])
def test_one_hour_of_drift_maps_within_a_millisecond(drift_ppm: float) -> None:
    true_t, raw, host = _scenario(3600.0, drift_ppm, tick0=123_456, seed=7)
    cm = ClockMapper(TICK_HZ)
    errors = []
    for i in range(true_t.size):
        obs = cm.observe(int(raw[i]), float(host[i]))
        assert not obs.reboot or i == 0
        if i % 200 == 0 and true_t[i] >= 300.0:  # every 10 s after 5 min of convergence
            errors.append(cm.wall_of(obs.ext_tick) - (T0 + true_t[i]))
    err = np.abs(np.asarray(errors))
    assert err.max() <= 1e-3
    assert cm.drift_ppm == pytest.approx(drift_ppm, abs=2.0)
    assert cm.reboots == 0


def test_u32_wrap_mid_stream_is_not_a_reboot() -> None:
    # start 30 s before the counter wraps
    true_t, raw, host = _scenario(120.0, 40.0, tick0=U32 - int(30 * TICK_HZ), seed=3)
    assert np.any(np.diff(raw) < 0)  # the raw ticks do wrap
    cm = ClockMapper(TICK_HZ)
    ext = [cm.observe(int(r), float(h)).ext_tick for r, h in zip(raw, host, strict=True)]
    assert cm.reboots == 0
    assert cm.segment == 0
    assert np.all(np.diff(ext) > 0)
    assert ext[-1] > U32
    err = cm.wall_of(ext[-1]) - (T0 + true_t[-1])
    assert abs(err) <= 2e-3


def test_reboot_restarts_the_fit() -> None:
    true_t, raw, host = _scenario(600.0, 40.0, tick0=5_000_000, seed=11)
    half = true_t.size // 2
    # the band reboots at half time: its counter restarts near zero
    raw2 = (raw[half:] - raw[half]) % U32
    cm = ClockMapper(TICK_HZ)
    for i in range(half):
        cm.observe(int(raw[i]), float(host[i]))
    first = cm.observe(int(raw2[0]), float(host[half]))
    assert first.reboot
    assert first.segment == 1
    assert cm.reboots == 1
    assert not cm.converged
    last = first
    for j in range(1, raw2.size):
        last = cm.observe(int(raw2[j]), float(host[half + j]))
        assert not last.reboot
    assert abs(cm.wall_of(last.ext_tick) - (T0 + true_t[-1])) <= 1e-3


def test_forward_jump_inconsistent_with_host_time_is_a_reboot() -> None:
    cm = ClockMapper(TICK_HZ)
    cm.observe(1000, T0)
    cm.observe(1000 + int(0.05 * TICK_HZ), T0 + 0.05)
    # one host second later, the tick says an hour passed: new firmware epoch
    obs = cm.observe(1000 + int(3600 * TICK_HZ), T0 + 1.05)
    assert obs.reboot
    assert cm.reboots == 1


def test_long_disconnect_with_consistent_ticks_keeps_the_segment() -> None:
    cm = ClockMapper(TICK_HZ)
    cm.observe(0, T0)
    obs = cm.observe(int(600 * TICK_HZ), T0 + 600.002)
    assert not obs.reboot
    assert obs.ext_tick == int(600 * TICK_HZ)


def test_slightly_older_tick_is_a_reordered_packet_not_a_reboot() -> None:
    cm = ClockMapper(TICK_HZ)
    step = int(PACKET_S * TICK_HZ)
    cm.observe(10 * step, T0)
    cm.observe(12 * step, T0 + 0.1)
    obs = cm.observe(11 * step, T0 + 0.11)
    assert obs.late
    assert not obs.reboot
    assert obs.ext_tick == 11 * step
    assert cm.reboots == 0


def test_explicit_reboot_flag_starts_a_segment() -> None:
    cm = ClockMapper(TICK_HZ)
    cm.observe(100, T0)
    obs = cm.observe(200, T0 + 0.01, reboot=True)
    assert obs.reboot
    assert obs.segment == 1


def test_drift_is_nan_before_convergence_and_mapping_uses_nominal_rate() -> None:
    cm = ClockMapper(TICK_HZ)
    cm.observe(0, T0 + 0.010)
    assert math.isnan(cm.drift_ppm)
    # one second of ticks later maps one nominal second later
    assert cm.wall_of(int(TICK_HZ)) - cm.wall_of(0) == pytest.approx(1.0)


def test_to_wall_before_observe_raises() -> None:
    with pytest.raises(RuntimeError):
        ClockMapper().to_wall(0)
