"""Fuzz the band-protocol decoders and measure their throughput against same-run references.

1. **Fuzz**: ``--packets`` (default 1,000,000) inputs to
   :func:`~sensor_gateway.protocol.decode_data_packet` -- a mix of pure garbage and
   mutated valid packets (bit flips, truncation, extension, rewritten counts, flag
   bytes) -- plus ``--packets // 10`` each for ``decode_status`` and
   ``decode_control``.  Anything but a :class:`~sensor_gateway.errors.ProtocolError`
   stops the run with the offending input in hex; every accepted input must
   re-encode to the same bytes (the wire format is canonical).
2. **Throughput** (wall clock, best of ``--repeat``) of decoding valid packets,
   of the fuzz mix, and of two references measured in the same run on the same
   valid blobs: ``struct.unpack_from`` of the 10-byte header only, and
   ``np.frombuffer`` of the int16 payload (the least any decoder must do).

Input generation and the canonical-form check are not timed.  Run::

    .venv/bin/python -m benchmarks.fuzz_protocol
    .venv/bin/python -m benchmarks.fuzz_protocol --packets 200000 --seed 7

Mutation-based fuzzing after B. P. Miller, L. Fredriksen, B. So, "An empirical
study of the reliability of UNIX utilities", Commun. ACM 33 (1990) 32-44.
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from benchmarks.timing import best_of
from sensor_gateway import protocol as pr
from sensor_gateway.errors import ProtocolError

CHUNK = 100_000
PAD = 280  # longest fuzz input (240-byte packet + 40 bytes of extension)
HEADER = struct.Struct("<BBHIBB")
Decoder = Callable[[bytes], object]


def valid_packets(n: int, rng: np.random.Generator) -> list[bytes]:
    """``n`` encoded packets: 80 % full 2000 Hz with ACC, the rest every other layout."""
    out = []
    for i in range(n):
        kind = rng.random()
        fs = 1000.0 if kind > 0.9 else 2000.0
        n_max, decim = (50, 10) if fs == 1000.0 else (100, 20)
        n_emg = n_max if kind < 0.8 or rng.random() < 0.5 else int(rng.integers(1, n_max + 1))
        has_acc = kind < 0.8 or rng.random() < 0.5
        emg = rng.normal(0, 200, n_emg)
        acc = rng.normal(0, 0.3, (math.ceil(n_emg / decim), 3)) + np.array([0.0, 0.0, 1.0])
        flags = pr.PacketFlags(int(rng.integers(0, 64)) & ~0x0C)
        p = pr.BandPacket.create(
            i,
            int(rng.integers(0, 2**32)),
            pr.emg_uv_to_counts(emg).counts,
            pr.acc_g_to_counts(acc).counts if has_acc else None,
            emg_fs=fs,
            flags=flags,
        )
        out.append(pr.encode_data_packet(p))
    return out


def _rows(
    pool: Sequence[bytes], n: int, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``n`` random templates from ``pool`` in a random-padded (n, PAD) matrix + lengths."""
    idx = rng.integers(0, len(pool), n)
    m = rng.integers(0, 256, (n, PAD), dtype=np.uint8)
    lengths = np.array([len(pool[i]) for i in idx], dtype=np.int64)
    for r, i in enumerate(idx):  # setup only, not timed
        m[r, : lengths[r]] = np.frombuffer(pool[i], dtype=np.uint8)
    return m, lengths


def fuzz_inputs(
    pool: Sequence[bytes], n: int, rng: np.random.Generator
) -> tuple[list[bytes], Counter[str]]:
    """``n`` fuzz inputs built from valid ``pool`` blobs, and how many of each kind."""
    m, length = _rows(pool, n, rng)
    kind = rng.choice(
        ["garbage", "garbage_v1", "flips", "truncate", "extend", "counts", "flags", "mixed"],
        size=n,
        p=[0.10, 0.10, 0.25, 0.12, 0.12, 0.12, 0.07, 0.12],
    )
    rows = np.arange(n)
    garbage = (kind == "garbage") | (kind == "garbage_v1")
    length[garbage] = rng.integers(0, PAD + 1, int(garbage.sum()))
    m[garbage] = rng.integers(0, 256, (int(garbage.sum()), PAD), dtype=np.uint8)
    m[kind == "garbage_v1", 0] = 1  # past the version check
    # 1..8 bit flips anywhere in the packet
    flip = (kind == "flips") | (kind == "mixed")
    n_flips = rng.integers(1, 9, n)
    for k in range(8):
        sel = flip & (n_flips > k)
        pos = (rng.random(n) * length).astype(np.int64)
        bit = np.left_shift(1, rng.integers(0, 8, n)).astype(np.uint8)
        np.bitwise_xor.at(m, (rows[sel], pos[sel]), bit[sel])
    trunc = (kind == "truncate") | ((kind == "mixed") & (rng.random(n) < 0.5))
    length[trunc] = (rng.random(int(trunc.sum())) * length[trunc]).astype(np.int64)
    ext = (kind == "extend") | ((kind == "mixed") & ~trunc)
    length[ext] = np.minimum(length[ext] + rng.integers(1, 41, int(ext.sum())), PAD)
    cnt = kind == "counts"
    m[rows[cnt], rng.choice([8, 9], int(cnt.sum()))] = rng.integers(0, 256, int(cnt.sum()))
    fl = kind == "flags"
    m[fl, 1] = rng.integers(0, 256, int(fl.sum()))
    blobs = [m[r, : length[r]].tobytes() for r in range(n)]  # setup only, not timed
    return blobs, Counter(kind.tolist())


def run_fuzz(
    decode: Decoder, blobs: Sequence[bytes], what: str
) -> tuple[float, Counter[str], list[tuple[bytes, object]]]:
    """Decode every blob; return seconds, outcome counts and the accepted (input, result)."""
    outcome: Counter[str] = Counter()
    accepted: list[tuple[bytes, object]] = []
    keep = accepted.append
    t0 = time.perf_counter()
    for b in blobs:
        try:
            keep((b, decode(b)))
        except ProtocolError as exc:
            outcome[type(exc).__name__] += 1
        except Exception:
            print(f"{what}: non-ProtocolError escaped for input {b.hex(' ')}", file=sys.stderr)
            raise
    dt = time.perf_counter() - t0
    outcome["accepted"] = len(accepted)
    return dt, outcome, accepted


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:12,.0f} packets/s  {seconds / n * 1e6:6.2f} µs/packet"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--valid", type=int, default=100_000, help="valid packets per timing pass")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    pool = valid_packets(2000, rng)
    valid = [pool[i % len(pool)] for i in range(args.valid)]
    n_valid = len(valid)

    def decode_all() -> None:
        dec = pr.decode_data_packet
        for b in valid:
            dec(b)

    def header_only() -> None:
        unpack = HEADER.unpack_from
        for b in valid:
            unpack(b)

    def frombuffer_only() -> None:
        fb, i16 = np.frombuffer, np.dtype("<i2")
        for b in valid:
            fb(b, i16, offset=10)

    t_dec = best_of(args.repeat, decode_all)
    t_hdr = best_of(args.repeat, header_only)
    t_fb = best_of(args.repeat, frombuffer_only)

    # ---- fuzz: data packets, in chunks to bound memory
    total: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    t_fuzz = 0.0
    n_fuzz = 0
    while n_fuzz < args.packets:
        k = min(CHUNK, args.packets - n_fuzz)
        blobs, kc = fuzz_inputs(pool, k, rng)
        dt, outcome, accepted = run_fuzz(pr.decode_data_packet, blobs, "data")
        # canonical form: every accepted input re-encodes to itself (not timed)
        for b, p in accepted:
            assert isinstance(p, pr.BandPacket)
            assert pr.encode_data_packet(p) == b, f"non-canonical accept: {b.hex(' ')}"
        t_fuzz += dt
        n_fuzz += k
        total += outcome
        kinds += kc

    # ---- fuzz: status and control
    n_small = max(1, args.packets // 10)
    status_pool = [
        pr.encode_status(
            pr.BandStatus(battery_pct=int(b), tick=int(t), sync_host_ms=None if b % 2 else int(t))
        )
        for b, t in zip(rng.integers(0, 101, 200), rng.integers(0, 2**32, 200), strict=True)
    ]
    control_pool = [
        pr.encode_control(pr.ControlCommand.TIME_SYNC, unix_ms=1_717_000_000_000),
        pr.encode_control(pr.ControlCommand.SET_EMG_RATE, emg_fs=1000),
        b"\x01",
        b"\x02",
    ]
    small = {}
    for name, decode, spool, encode in (
        ("status", pr.decode_status, status_pool, _reencode_status),
        ("control", pr.decode_control, control_pool, _reencode_control),
    ):
        blobs, _ = fuzz_inputs(spool, n_small, rng)
        blobs = [b[:40] for b in blobs]
        dt, outcome, accepted = run_fuzz(decode, blobs, name)
        for b, r in accepted:
            assert encode(r) == b, f"{name}: non-canonical accept: {b.hex(' ')}"
        small[name] = (n_small, dt, outcome)

    print(f"valid data packets ({n_valid:,}, best of {args.repeat}):")
    print(f"  decode_data_packet            : {_rate(n_valid, t_dec)}")
    print(f"  reference struct header only  : {_rate(n_valid, t_hdr)}  "
          f"decode = {t_dec / t_hdr:.1f}x")  # fmt: skip
    print(f"  reference np.frombuffer only  : {_rate(n_valid, t_fb)}  "
          f"decode = {t_dec / t_fb:.1f}x")  # fmt: skip
    print(f"  decode cost per band at 20 packets/s: {20 * t_dec / n_valid * 100:.4f} % of a core")
    print(f"fuzz data packets ({n_fuzz:,}; kinds {dict(sorted(kinds.items()))}):")
    print(f"  decode_data_packet (fuzz mix) : {_rate(n_fuzz, t_fuzz)}  "
          f"= {t_fuzz / n_fuzz / (t_hdr / n_valid):.1f}x header-only reference")  # fmt: skip
    print(f"  outcomes: {dict(sorted(total.items()))}")
    for name, (n, dt, outcome) in small.items():
        print(f"fuzz {name} ({n:,}): {_rate(n, dt)}  outcomes: {dict(sorted(outcome.items()))}")
    print("only ProtocolError escaped; every accepted input re-encodes to itself")
    print(f"total run time {time.perf_counter() - t_start:.1f} s")


def _reencode_status(r: object) -> bytes:
    assert isinstance(r, pr.BandStatus)
    return pr.encode_status(r)


def _reencode_control(r: object) -> bytes:
    assert isinstance(r, pr.ControlMessage)
    return pr.encode_control(r.command, unix_ms=r.unix_ms, emg_fs=r.emg_fs)


if __name__ == "__main__":
    main()
