"""``crampwatch detect FILE``: run the streaming cramp detector over a recording.

Events are printed as JSON Lines on stdout, one object per event in emission
order (``type, episode, t_s, emitted_at_s`` then the details); with
``--summaries`` the per-second envelope summaries are interleaved as
``{"type": "summary", ...}`` records.  The file is read chunk by chunk, so memory
stays bounded for a whole night.  Contract: docs/detector.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sensor_gateway.commands._argtypes import positive_float

if TYPE_CHECKING:
    from cramp_signal.events import DetectorEvent, EnvelopeSummary

HELP = "detect cramps in a recording and print events as JSON Lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch detect``."""
    parser.add_argument("file", type=Path, metavar="FILE", help="EDF+/BDF+/CSV recording")
    parser.add_argument(
        "--chunk-seconds",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds of signal read and processed per step (default: 10)",
    )
    parser.add_argument(
        "--summaries",
        action="store_true",
        help='also print one {"type": "summary", ...} record per second of signal',
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help="TOML file with a [detector] table (default: $CRAMPWATCH_CONFIG if set)",
    )


def _write(out: TextIO, doc: dict[str, object]) -> None:
    out.write(json.dumps(doc, allow_nan=False) + "\n")


def run(args: argparse.Namespace) -> int:
    """Stream the recording through the detector and print the records; exit 0."""
    from tqdm import tqdm  # noqa: PLC0415 (keep --help fast)

    from cramp_signal.detector import CrampDetector, DetectorConfig  # noqa: PLC0415
    from sensor_gateway.config import load_section, read_config_file  # noqa: PLC0415
    from sensor_gateway.recordings import open_recording  # noqa: PLC0415

    config = load_section(DetectorConfig, "detector", read_config_file(args.config))
    reader = open_recording(args.file)
    info = reader.info
    acc_fs = float(info.acc[0].fs_hz) if info.acc else None
    det = CrampDetector(float(info.emg.fs_hz), acc_fs, config=config)
    out = sys.stdout
    bar = tqdm(
        total=round(float(info.duration_s), 1),
        unit="s",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        desc=Path(args.file).name,
    )
    with bar:
        for chunk in reader.chunks(args.chunk_seconds):
            events = det.process(chunk.emg_uv, chunk.acc_g if acc_fs is not None else None)
            _emit(out, events, det.drain_summaries() if args.summaries else [])
            bar.update(round(chunk.emg_uv.size / det.emg_fs, 3))
        _emit(out, det.finish(), det.drain_summaries() if args.summaries else [])
    out.flush()
    return 0


def _emit(out: TextIO, events: list[DetectorEvent], summaries: list[EnvelopeSummary]) -> None:
    """Print events and summaries of one step merged in time order (events first on ties)."""
    records: list[tuple[float, int, dict[str, object]]] = []
    for ev in events:
        doc = ev.to_json()
        records.append((ev.emitted_at_s, 0, doc))
    for s in summaries:
        doc = s.to_json()
        records.append((s.t_s, 1, doc))
    records.sort(key=lambda r: (r[0], r[1]))  # stable: emission order kept within a kind
    for _t, _kind, doc in records:
        _write(out, doc)
