"""``crampwatch simulate``: write a synthetic night of one calf band and its ground truth.

The night comes from :mod:`firmware_sim.night` (model: docs/simulator.md) and is
written chunk by chunk with :class:`~sensor_gateway.recordings.RecordingWriter`
(EMG ``EMG Gastroc L`` in µV, ``ACC X/Y/Z`` in g).  Every scripted episode becomes
an EDF+ annotation ``truth:<kind>`` with its duration (CSV: ``# annotation=`` lines),
and the full ground truth goes to the sidecar ``<name>.truth.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sensor_gateway.commands._argtypes import positive_float

if TYPE_CHECKING:
    from firmware_sim.night import SyntheticNight

HELP = "write a synthetic night (EDF+/BDF+/CSV) with its ground truth"

#: Label of the EMG channel in the written file.
EMG_LABEL = "EMG Gastroc L"
#: Seconds of signal generated and written per step.
CHUNK_S = 10.0
#: File suffix → format written when ``--format`` is not given.
SUFFIX_FORMATS = {".edf": "EDF+", ".bdf": "BDF+", ".csv": "CSV"}


def _iso_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch simulate``."""
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="recording to write"
    )
    parser.add_argument(
        "--hours",
        type=positive_float,
        default=8.0,
        help="night length, up to 24 (default: 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    parser.add_argument(
        "--profile",
        default="typical",
        help="night profile, see docs/simulator.md (default: typical)",
    )
    parser.add_argument(
        "--mains",
        type=int,
        choices=(50, 60),
        default=None,
        help="mains frequency in Hz (default: chosen from the seed)",
    )
    parser.add_argument(
        "--emg-fs", type=int, choices=(1000, 2000), default=2000, help="EMG rate (default: 2000)"
    )
    parser.add_argument(
        "--format",
        choices=tuple(SUFFIX_FORMATS.values()),
        default=None,
        help="file format (default: from the suffix .edf, .bdf or .csv)",
    )
    parser.add_argument(
        "--start",
        type=_iso_time,
        default=None,
        metavar="ISO",
        help="wall-clock time of the first sample (default: 2025-01-01T23:00:00)",
    )


def _summary(night: SyntheticNight, out: Path, fmt: str, sidecar: Path, elapsed: float) -> str:
    truth = night.truth
    kinds = Counter(e.kind for e in truth.events)
    events = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
    onsets = ", ".join(f"{t:.1f}" for t in truth.onsets_s) or "-"
    return "\n".join(
        [
            f"wrote {out} ({fmt}): {night.duration_s / 3600:.2f} h, EMG {night.emg_fs} Hz, "
            f"ACC {night.acc_fs} Hz, mains {night.mains_hz} Hz, "
            f"profile {night.config.profile}, seed {night.config.seed}",
            f"truth {sidecar}: cramps {len(truth.onsets_s)} (onsets s: {onsets})",
            f"events: {events}",
            f"took {elapsed:.1f} s ({night.duration_s / max(elapsed, 1e-9):.0f}x real time)",
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Simulate the night, write recording + sidecar, print a summary; exit 0.

    Raises
    ------
    SimulationError
        Impossible simulator settings (hours, profile, ...).
    RecordingError
        The output cannot be written or its format cannot be inferred.
    """
    from tqdm import tqdm  # noqa: PLC0415 (keep --help fast)

    from firmware_sim.night import NightConfig, SyntheticNight  # noqa: PLC0415
    from sensor_gateway.errors import CrampwatchError, RecordingError  # noqa: PLC0415
    from sensor_gateway.recordings import RecordingWriter  # noqa: PLC0415
    from sensor_gateway.truth import save_truth, truth_path  # noqa: PLC0415

    out: Path = args.out
    fmt = args.format or SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise RecordingError(
            f"{out}: cannot infer the format from suffix {out.suffix!r}; "
            "use .edf, .bdf or .csv, or --format"
        )
    t0 = time.perf_counter()
    night = SyntheticNight(
        NightConfig(
            hours=args.hours,
            seed=args.seed,
            emg_fs=args.emg_fs,
            acc_fs=100,
            mains_hz=args.mains,
            profile=args.profile,
            start=args.start,
        )
    )
    try:  # the truth is known before any sample: write it first, fail early
        sidecar = save_truth(out, night.truth)
    except OSError as exc:
        raise RecordingError(
            f"{truth_path(out)}: cannot write truth file ({exc.strerror or exc})"
        ) from None
    writer = None
    try:
        writer = RecordingWriter(
            out,
            emg_fs=night.emg_fs,
            acc_fs=night.acc_fs,
            start=night.start,
            emg_label=EMG_LABEL,
            file_format=fmt,
        )
        with tqdm(
            total=round(night.duration_s, 1),
            unit="s",
            desc="simulate",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
        ) as bar:
            for chunk in night.chunks(CHUNK_S):
                writer.write(chunk)
                bar.update(round(chunk.emg_uv.size / night.emg_fs, 1))
        for e in night.truth.events:
            writer.annotate(e.start_s, e.end_s - e.start_s, f"truth:{e.kind}")
        writer.close()
    except BaseException:
        # Leave nothing half-written behind (the error itself is reported by the caller).
        sidecar.unlink(missing_ok=True)
        if writer is not None:
            with contextlib.suppress(CrampwatchError, OSError, ValueError):
                writer.close()
            out.unlink(missing_ok=True)
        raise
    print(_summary(night, out, fmt, sidecar, time.perf_counter() - t0))
    return 0
