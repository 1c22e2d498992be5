"""How many bands can one gateway core serve?  Prints figures measured in one run.

1. **Reference**: the minimum any gateway must do per packet — turn the 100 EMG +
   15 accelerometer int16 values of a 50-ms packet into scaled float arrays
   (``np.frombuffer`` + scale), and, when :mod:`sensor_gateway.protocol` exists,
   its ``decode_data_packet`` is timed instead.
2. **Pipeline**: the same packets through :class:`~sensor_gateway.band_stream.BandStream`
   (sequence tracking, clock mapping, batching, one :class:`CrampDetector` per band,
   no recorder, no BLE), with 1 % of packets dropped and 0.5 % reordered so the gap
   paths run too.
3. **Bands per core**: ``1 / (20 packets/s x cost per packet)``: the largest number
   of bands one core sustains at real time (20 packets/s/band), with the CPU
   fraction one band costs.

CPU time is ``time.process_time`` (this process only), best of ``--repeat``.  Run::

    .venv/bin/python -m benchmarks.gateway_load            # 10 simulated minutes
    .venv/bin/python -m benchmarks.gateway_load --minutes 2
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sensor_gateway.band_stream import BandStream

EMG_FS = 2000.0
TICK_HZ = 32768.0
N_EMG, N_ACC = 100, 5
PACKETS_PER_S = 20


@dataclass(frozen=True)
class Pkt:
    """A decoded packet (what ``protocol.decode_data_packet`` returns, minus flags)."""

    seq: int
    tick: int
    emg_fs: float
    emg: NDArray[np.int16]
    acc: NDArray[np.int16]


def make_packets(minutes: float, seed: int) -> tuple[list[Pkt], list[bytes], NDArray[np.float64]]:
    """Packets of band-like noise (with bursts), their raw payload bytes and host times."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * PACKETS_PER_S)
    emg = (rng.normal(0, 20, n * N_EMG) / 0.5).astype(np.int16)
    burst = rng.random(n) < 0.02
    emg.reshape(n, N_EMG)[burst] *= 20
    acc = rng.integers(-50, 50, (n * N_ACC, 3)).astype(np.int16)
    acc[:, 2] += 1000
    pkts, raw = [], []
    for i in range(n):
        e = emg[i * N_EMG : (i + 1) * N_EMG]
        a = acc[i * N_ACC : (i + 1) * N_ACC]
        tick = int(i * N_EMG * TICK_HZ / EMG_FS) % (1 << 32)
        pkts.append(Pkt(i % 65536, tick, EMG_FS, e, a))
        raw.append(e.tobytes() + a.tobytes())
    host = 1.7e9 + (np.arange(n) + 1) / PACKETS_PER_S + rng.exponential(0.008, n)
    return pkts, raw, host


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Smallest CPU time (s) of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    pkts, raw, host = make_packets(args.minutes, args.seed)
    n = len(pkts)
    rng = np.random.default_rng(args.seed + 1)
    order = np.arange(n)
    swap = np.flatnonzero(rng.random(n - 1) < 0.005)
    order[swap], order[swap + 1] = order[swap + 1], order[swap]
    keep = order[rng.random(n) >= 0.01]

    def reference() -> None:
        for b in raw:
            v = np.frombuffer(b, dtype=np.int16)
            _ = v[:N_EMG] * 0.5, v[N_EMG:].reshape(-1, 3) * 0.001

    ref_name = "frombuffer + scale"
    try:
        proto = importlib.import_module("sensor_gateway.protocol")
        encode = getattr(proto, "encode_data_packet", None)
        if encode is not None:
            blobs = [encode(p) for p in pkts[:1000]]
            decode = proto.decode_data_packet

            def reference() -> None:
                for _ in range(max(1, n // len(blobs))):
                    for b in blobs:
                        decode(b)

            ref_name = "protocol.decode_data_packet"
    except Exception:  # the protocol module is optional here
        pass

    def pipeline() -> None:
        bs = BandStream("bench", tick_hz=TICK_HZ)
        for i in keep:
            bs.on_packet(pkts[i], float(host[i]))
        bs.finish()

    t_ref = best_of(args.repeat, reference) / n
    t_pipe = best_of(args.repeat, pipeline) / keep.size
    per_band = t_pipe * PACKETS_PER_S
    print(f"packets per run            : {n} ({args.minutes:g} simulated min, 1 % lost)")
    print(f"reference ({ref_name}): {t_ref * 1e6:8.1f} µs/packet")
    print(f"band pipeline (no BLE)     : {t_pipe * 1e6:8.1f} µs/packet "
          f"({t_pipe / t_ref:.0f}x reference)")  # fmt: skip
    print(f"CPU per band at 20 pkt/s   : {per_band * 100:8.3f} % of one core")
    print(f"max sustained bands / core : {int(1.0 / per_band)}")


if __name__ == "__main__":
    main()
