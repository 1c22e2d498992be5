"""Reading and writing recordings: EDF+/BDF+ (via pyedflib) and CSV, in bounded-memory chunks.

Conventions (docs/recordings.md): the EMG channel's label starts with ``EMG``
(at most 16 characters, e.g. ``EMG Gastroc L``), unit ``uV``; the accelerometer
channels are ``ACC X``, ``ACC Y``, ``ACC Z`` in ``g``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ChannelInfo:
    """One signal of a recording as stored in the file."""

    label: str
    unit: str
    fs_hz: float
    n_samples: int


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation (TAL): seconds from recording start, optional duration, text."""

    onset_s: float
    duration_s: float | None
    text: str


@dataclass(frozen=True)
class RecordingInfo:
    """What ``crampwatch info`` prints: header facts, no samples."""

    path: Path
    file_format: str  # "EDF+", "EDF", "BDF+", "BDF" or "CSV"
    start: datetime
    duration_s: float
    channels: tuple[ChannelInfo, ...]
    annotations: tuple[Annotation, ...]
    emg: ChannelInfo
    acc: tuple[ChannelInfo, ...]  # () or the three ACC X/Y/Z channels
    emg_scale_to_uv: float | None  # 1.0 for uV, 1000.0 for mV, None for a.u. (no physical unit)


@dataclass(frozen=True)
class SignalChunk:
    """A contiguous piece of a recording.

    ``emg_uv`` holds EMG samples ``start_sample .. start_sample + len - 1`` (µV; NaN marks
    a missing sample, i.e. a gap).  ``acc_g`` holds the accelerometer samples (rows x, y, z
    in g) whose times fall in the same interval: sample ``k`` of the accelerometer is at
    ``k / acc_fs``; the chunk carries acc samples ``ceil(t0 * acc_fs) .. ceil(t1 * acc_fs) - 1``
    for the chunk's time span ``[t0, t1)``.  Shape ``(0, 3)`` when there is no accelerometer.
    """

    start_sample: int
    emg_uv: NDArray[np.float64]
    acc_g: NDArray[np.float64]
