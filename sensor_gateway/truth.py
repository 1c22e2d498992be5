"""Ground truth of a recording: what really happened, for evaluation.

Stored next to a recording as ``<name>.truth.json`` (and, for EDF+, as
annotations).  Two label kinds exist:

``"cramp"``
    crampwatch's own simulated nights (``"format": "crampwatch-truth/1"``):
    ``onsets_s``/``offsets_s`` are cramp onsets/ends; ``events`` lists every
    scripted episode, cramps and distractors alike.
``"burst"``
    the public sets in ``shared/data`` (no ``format`` key): ``onsets_s`` are
    onsets of short muscle bursts (none of them a cramp), ``offsets_s`` may be
    ``null`` and ``burst_count`` may be the only label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sensor_gateway.errors import RecordingError

TRUTH_FORMAT = "crampwatch-truth/1"

#: Episode kinds a simulated night may contain (see docs/simulator.md).
EVENT_KINDS = (
    "cramp",
    "fasciculation_prelude",
    "stretch",
    "plm",
    "voluntary",
    "posture_change",
    "electrode_pop",
    "lead_off",
    "mains_burst",
    "saturation",
)


@dataclass(frozen=True)
class TruthEvent:
    """One scripted episode: ``kind`` from :data:`EVENT_KINDS`, seconds from recording start."""

    kind: str
    start_s: float
    end_s: float
    attrs: dict[str, float | str] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_s": self.start_s, "end_s": self.end_s, **self.attrs}


@dataclass(frozen=True)
class GroundTruth:
    """Labels of one recording."""

    label_kind: Literal["cramp", "burst"]
    onsets_s: tuple[float, ...]
    offsets_s: tuple[float, ...] | None
    events: tuple[TruthEvent, ...] = ()
    burst_count: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def of_kind(self, kind: str) -> tuple[TruthEvent, ...]:
        """The scripted events of one kind, in time order."""
        return tuple(e for e in self.events if e.kind == kind)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.meta)
        if self.label_kind == "cramp":
            doc["format"] = TRUTH_FORMAT
        doc.update(
            onsets_s=list(self.onsets_s),
            offsets_s=None if self.offsets_s is None else list(self.offsets_s),
            burst_count=self.burst_count,
            events=[e.to_json() for e in self.events],
        )
        return doc

    @classmethod
    def from_json(cls, doc: Any, where: str = "truth") -> GroundTruth:
        """Parse a truth document; raises :class:`RecordingError` naming ``where`` on bad input."""
        if not isinstance(doc, dict):
            raise RecordingError(f"{where}: truth must be a JSON object")
        try:
            onsets = tuple(float(x) for x in doc.get("onsets_s") or ())
            raw_off = doc.get("offsets_s")
            offsets = None if raw_off is None else tuple(float(x) for x in raw_off)
            events = tuple(
                TruthEvent(
                    kind=str(e["kind"]),
                    start_s=float(e["start_s"]),
                    end_s=float(e["end_s"]),
                    attrs={k: v for k, v in e.items() if k not in {"kind", "start_s", "end_s"}},
                )
                for e in doc.get("events") or ()
            )
            count = doc.get("burst_count")
            burst_count = None if count is None else int(count)
        except (TypeError, ValueError, KeyError) as exc:
            raise RecordingError(f"{where}: malformed truth ({exc!r})") from None
        if not all(math.isfinite(x) for x in onsets + (offsets or ())):
            raise RecordingError(f"{where}: non-finite time in truth")
        if offsets is not None and len(offsets) != len(onsets):
            raise RecordingError(f"{where}: {len(onsets)} onsets but {len(offsets)} offsets")
        kind: Literal["cramp", "burst"] = "cramp" if doc.get("format") == TRUTH_FORMAT else "burst"
        labels = {"format", "onsets_s", "offsets_s", "burst_count", "events"}
        meta = {k: v for k, v in doc.items() if k not in labels}
        return cls(kind, onsets, offsets, events, burst_count, meta)


def truth_path(recording: str | Path) -> Path:
    """The sidecar path of a recording: ``night.edf`` → ``night.truth.json``."""
    p = Path(recording)
    return p.with_name(p.stem + ".truth.json")


def load_truth(recording: str | Path) -> GroundTruth | None:
    """Load the sidecar truth of ``recording``, or ``None`` if it has none."""
    path = truth_path(recording)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordingError(f"{path}: cannot read truth file ({exc})") from None
    return GroundTruth.from_json(doc, where=str(path))


def save_truth(recording: str | Path, truth: GroundTruth) -> Path:
    """Write the sidecar truth of ``recording`` and return its path."""
    path = truth_path(recording)
    path.write_text(json.dumps(truth.to_json(), indent=1) + "\n", encoding="utf-8")
    return path
