"""What the detector emits: episode events and one envelope summary per second."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: Event types, in the order an episode can produce them.
SPASM_ONSET = "spasm_onset"
CRAMP_CONFIRMED = "cramp_confirmed"
CRAMP_END = "cramp_end"
SPASM_CLEARED = "spasm_cleared"
PRELUDE = "prelude"
SIGNAL_QUALITY = "signal_quality"
EVENT_TYPES = (SPASM_ONSET, CRAMP_CONFIRMED, CRAMP_END, SPASM_CLEARED, PRELUDE, SIGNAL_QUALITY)

#: Quality labels of a second of signal, worst first.
QUALITIES = ("gap", "saturated", "lead_off", "artefact", "ok")

DetailValue = float | int | str | bool | None


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class DetectorEvent:
    """One detector output record (contract: docs/detector.md).

    Attributes
    ----------
    type
        One of :data:`EVENT_TYPES`.
    episode
        Episode number (1, 2, ...) shared by all records of one episode.
        ``prelude`` carries the number of the episode it precedes;
        ``signal_quality`` events use 0.
    t_s
        The event's own time in seconds from stream start: the onset for
        ``spasm_onset``/``cramp_confirmed``/``prelude`` (first spike), the end for
        ``cramp_end``/``spasm_cleared``, the start of the second for ``signal_quality``
        (a ``prelude``'s first spike is the first one of its window that did not
        start an earlier prelude, so no two preludes share a time).
    emitted_at_s
        Time of the newest sample processed when the event was emitted.
    details
        Extra fields (read-only mapping), flattened into :meth:`to_json`.
    """

    type: str
    episode: int
    t_s: float
    emitted_at_s: float
    details: Mapping[str, DetailValue] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, object]:
        """Flat JSON object: ``type, episode, t_s, emitted_at_s`` then the details (NaN → null)."""
        doc: dict[str, object] = {
            "type": self.type,
            "episode": self.episode,
            "t_s": self.t_s,
            "emitted_at_s": self.emitted_at_s,
        }
        for key, value in self.details.items():
            doc.setdefault(key, _jsonable(value))
        return doc


@dataclass(frozen=True)
class EnvelopeSummary:
    """The envelope over one second of stream, for dashboards.

    ``t_s`` is the end of the second; ``rms_uv``/``peak_uv`` are RMS and peak of the
    conditioned EMG; ``noise_floor_uv``/``on_threshold_uv`` are NaN until the floor
    is known; ``acc_activity_g`` is ``None`` without accelerometer; ``state`` is
    ``"idle"``, ``"spasm"`` (unconfirmed candidate) or ``"cramp"``; ``tilt_deg`` is
    the angle (0-180 degrees) between the second's mean acceleration (the "up"
    vector) and the band's -z axis (into the calf): about 0 lying on the back with
    the calf on the mattress, 90 on a side, 180 prone; ``None`` without
    accelerometer, NaN in an accelerometer gap.
    """

    t_s: float
    rms_uv: float
    peak_uv: float
    noise_floor_uv: float
    on_threshold_uv: float
    quality: str
    acc_activity_g: float | None
    state: str
    tilt_deg: float | None = None

    def to_json(self) -> dict[str, object]:
        """Flat JSON object with ``"type": "summary"`` first (NaN → null)."""
        return {
            "type": "summary",
            "t_s": self.t_s,
            "rms_uv": _jsonable(self.rms_uv),
            "peak_uv": _jsonable(self.peak_uv),
            "noise_floor_uv": _jsonable(self.noise_floor_uv),
            "on_threshold_uv": _jsonable(self.on_threshold_uv),
            "quality": self.quality,
            "acc_activity_g": _jsonable(self.acc_activity_g),
            "state": self.state,
            "tilt_deg": _jsonable(self.tilt_deg),
        }
