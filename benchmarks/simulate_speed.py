"""How fast is the night simulator?  Prints the time to simulate a night and a reference.

1. Time to script and generate a whole night (8 h at 2 kHz by default) with
   :class:`firmware_sim.night.SyntheticNight`, consumed in 10-s chunks and
   discarded (no file is written), as seconds and as a multiple of real time.
2. A reference measured in the same run: drawing the same number of samples
   with NumPy's ``Generator.standard_normal`` (in 1-M blocks, so memory stays
   bounded) – the bare cost of one random number per EMG sample.  The ratio
   simulator / reference says how many "random draws" one simulated sample costs,
   which carries over between machines better than the seconds do.

Every figure is the best of ``--repeat`` runs (``time.perf_counter``).  Run::

    .venv/bin/python -m benchmarks.simulate_speed             # 8-h night
    .venv/bin/python -m benchmarks.simulate_speed --hours 1   # quicker
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.timing import best_of
from firmware_sim.night import PROFILES, NightConfig, SyntheticNight

REFERENCE_BLOCK = 1_000_000


def simulate(config: NightConfig, chunk_s: float) -> int:
    """Script and generate one night; return the number of EMG samples produced."""
    night = SyntheticNight(config)
    return sum(chunk.emg_uv.size for chunk in night.chunks(chunk_s))


def reference(n: int) -> None:
    """Draw ``n`` standard normal numbers in blocks."""
    rng = np.random.default_rng(0)
    for start in range(0, n, REFERENCE_BLOCK):
        rng.standard_normal(min(REFERENCE_BLOCK, n - start))


def main() -> None:
    """Measure and print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--hours", type=float, default=8.0, help="night length (default: 8)")
    ap.add_argument("--seed", type=int, default=1, help="simulator seed (default: 1)")
    ap.add_argument("--profile", choices=PROFILES, default="typical")
    ap.add_argument("--emg-fs", type=int, choices=(1000, 2000), default=2000)
    ap.add_argument("--chunk-seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (default: 3)")
    args = ap.parse_args()

    config = NightConfig(hours=args.hours, seed=args.seed, emg_fs=args.emg_fs, profile=args.profile)
    n = simulate(config, args.chunk_seconds)
    t_sim = best_of(args.repeat, lambda: simulate(config, args.chunk_seconds))
    t_ref = best_of(args.repeat, lambda: reference(n))
    seconds = args.hours * 3600.0
    print(
        f"simulate {args.hours:g} h ({args.profile}, seed {args.seed}) at {args.emg_fs} Hz EMG "
        f"+ 100 Hz ACC, {n:,} EMG samples: {t_sim:.2f} s "
        f"({seconds / t_sim:,.0f}x real time)"
    )
    print(f"reference: numpy standard_normal of {n:,} samples: {t_ref:.2f} s")
    print(f"ratio simulate / reference: {t_sim / t_ref:.1f}x")


if __name__ == "__main__":
    main()
