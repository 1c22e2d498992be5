"""The night the crash tests write, in a child that dies before closing and as a reference."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from sensor_gateway.recordings import RecordingWriter, SignalChunk

SECONDS = 12


def write_night(path: str | Path, file_format: str, *, with_gaps: bool = False) -> RecordingWriter:
    """Write ``SECONDS`` s of noise at 2 kHz (+ 100 Hz ACC) and return the open writer.

    ``with_gaps``: 0.5 s of missing EMG and ACC at 3.25 s and a detector annotation
    at 5 s, which an EDF+ writer keeps in its journal until it closes.
    """
    w = RecordingWriter(
        path, emg_fs=2000, acc_fs=100, start=datetime(2026, 1, 1, 23), file_format=file_format
    )
    rng = np.random.default_rng(7)
    for i in range(SECONDS):
        emg, acc = rng.normal(0, 5, 2000), np.zeros((100, 3))
        if with_gaps and i == 3:
            emg[500:1500] = np.nan
            acc[25:75] = np.nan
        w.write(SignalChunk(i * 2000, emg, acc))
        if with_gaps and i == 5:
            w.annotate(5.0, None, "crampwatch:spasm_onset#1")
    return w
