"""``crampwatch repair FILE...``: recover EDF+/BDF+ recordings left unclosed by a crash.

Keeps every whole data record (one second each), puts back the gaps and annotations
the writer journaled, and makes the file readable again; see
:mod:`sensor_gateway.edf_repair`.  The gateway does
the same by itself at start-up for the files below its ``data_dir``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "recover EDF+/BDF+ recordings that were never closed (power cut, crash)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch repair``."""
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="EDF+/BDF+ file")


def run(args: argparse.Namespace) -> int:
    """Repair each file; exit 1 if any could not be repaired (the others still are)."""
    from sensor_gateway.edf_repair import repair_unclosed  # noqa: PLC0415
    from sensor_gateway.errors import RecordingError  # noqa: PLC0415

    failed = 0
    for path in args.files:
        try:
            fix = repair_unclosed(path)
        except RecordingError as exc:
            print(f"crampwatch: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(fix.describe(), file=sys.stdout, flush=True)
    return 1 if failed else 0
