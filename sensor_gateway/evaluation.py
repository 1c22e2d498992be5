"""Run the cramp detector over recordings and simulated nights and score it.

One process, one recording at a time, bounded memory: recordings are read and
simulated nights generated in chunks, and only the detector's events are kept.
Scoring rules live in :mod:`cramp_signal.metrics`; this module wires sources,
detector and metrics together and formats the result tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cramp_signal.config import DetectorConfig
from cramp_signal.detector import CrampDetector
from cramp_signal.events import DetectorEvent
from cramp_signal.metrics import (
    BurstScore,
    CrampScore,
    DetectedEpisode,
    ErrorStats,
    LatencyStats,
    episodes_from_events,
    false_alarm_causes,
    match_cramps,
    match_onsets,
    pool_burst_scores,
    pool_cramp_scores,
)
from firmware_sim.night import NightConfig, SyntheticNight
from sensor_gateway import recordings
from sensor_gateway.errors import RecordingError
from sensor_gateway.recordings import SignalChunk
from sensor_gateway.truth import GroundTruth, load_truth, truth_path

#: File suffixes picked up when a directory is searched for recordings.
RECORDING_SUFFIXES = (".edf", ".bdf", ".csv")

#: Profiles cycled through by ``--simulate``.
DEFAULT_PROFILES = ("typical", "plm_heavy", "artefact_heavy", "low_snr", "quiet")

#: Seconds of signal handed to the detector per call.
CHUNK_S = 10.0


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class SimulatedSource:
    """A synthetic night generated in memory by :mod:`firmware_sim.night`."""

    hours: float
    seed: int
    profile: str = "typical"
    mains_hz: int | None = None
    emg_fs: float = 2000.0
    acc_fs: float = 100.0

    @property
    def name(self) -> str:
        """Short label, e.g. ``sim-s7-plm_heavy-50Hz``."""
        mains = "nomains" if self.mains_hz is None else f"{self.mains_hz}Hz"
        return f"sim-s{self.seed}-{self.profile}-{mains}"


@dataclass(frozen=True)
class FileSource:
    """A recording file with a ``<name>.truth.json`` sidecar."""

    path: Path

    @property
    def name(self) -> str:
        """The file name relative to its parent folder, e.g. ``emggo_sample/x.edf``."""
        return f"{self.path.parent.name}/{self.path.name}"


Source = SimulatedSource | FileSource


def simulated_sources(
    n: int,
    *,
    hours: float,
    seed_base: int = 0,
    profiles: Sequence[str] = DEFAULT_PROFILES,
) -> list[SimulatedSource]:
    """``n`` nights with seeds ``seed_base + i``, cycling ``profiles``, mains 50/60 Hz alternating.

    Raises
    ------
    ValueError
        If ``n`` is negative, ``hours`` not positive or ``profiles`` empty.
    """
    if n < 0 or not hours > 0 or not profiles:
        raise ValueError("need n >= 0, hours > 0 and at least one profile")
    return [
        SimulatedSource(
            hours=hours,
            seed=seed_base + i,
            profile=profiles[i % len(profiles)],
            mains_hz=50 if i % 2 == 0 else 60,
        )
        for i in range(n)
    ]


def discover_recordings(paths: Iterable[str | Path]) -> list[FileSource]:
    """Recording files named directly or found (recursively) under directories.

    In a directory, every ``*.edf``/``*.bdf``/``*.csv`` (any case) that has a truth
    sidecar is taken; others are skipped.  A file named directly must have one.

    Raises
    ------
    RecordingError
        If a path does not exist or a named file has no truth sidecar.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            hits = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in RECORDING_SUFFIXES and truth_path(f).exists()
            )
            found.extend(hits)
        elif p.is_file():
            if not truth_path(p).exists():
                raise RecordingError(f"{p}: no truth sidecar {truth_path(p).name}")
            found.append(p)
        else:
            raise RecordingError(f"{p}: no such file or directory")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return [FileSource(f) for f in unique]


@dataclass(frozen=True)
class OpenedSource:
    """What the detector needs from a source: rates, duration, truth and a chunk stream."""

    emg_fs: float
    acc_fs: float | None
    duration_s: float
    truth: GroundTruth
    chunks: Callable[[float], Iterator[SignalChunk]]
    emg_scale_to_uv: float | None = 1.0


def open_source(source: Source) -> OpenedSource:
    """Prepare a source for reading (a file's header is read, a night is scripted).

    Raises
    ------
    RecordingError
        If the file cannot be read or has no truth.
    """
    if isinstance(source, SimulatedSource):
        night = SyntheticNight(
            NightConfig(
                hours=source.hours,
                seed=source.seed,
                emg_fs=int(source.emg_fs),
                acc_fs=int(source.acc_fs),
                mains_hz=source.mains_hz,
                profile=source.profile,
            )
        )
        return OpenedSource(
            emg_fs=source.emg_fs,
            acc_fs=source.acc_fs,
            duration_s=source.hours * 3600.0,
            truth=night.truth,
            chunks=night.chunks,
        )
    truth = load_truth(source.path)
    if truth is None:
        raise RecordingError(f"{source.path}: no truth sidecar {truth_path(source.path).name}")
    reader = recordings.open_recording(source.path)
    info = reader.info
    return OpenedSource(
        emg_fs=float(info.emg.fs_hz),
        acc_fs=float(info.acc[0].fs_hz) if info.acc else None,
        duration_s=float(info.duration_s),
        truth=truth,
        chunks=reader.chunks,
        emg_scale_to_uv=info.emg_scale_to_uv,
    )


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class RecordingResult:
    """The detector's output on one recording and its score.

    ``cramp`` is set for cramp truth, ``burst`` for burst truth.  ``causes`` counts
    false cramp alarms by the scripted episode they fell on (cramp truth only).
    ``processing_s`` is the wall time of reading/generating plus detecting.
    """

    source: Source
    label_kind: Literal["cramp", "burst"]
    duration_s: float
    emg_fs: float
    events: tuple[DetectorEvent, ...]
    episodes: tuple[DetectedEpisode, ...]
    cramp: CrampScore | None
    burst: BurstScore | None
    causes: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    truth: GroundTruth | None = field(default=None, compare=False)
    processing_s: float = 0.0

    @property
    def name(self) -> str:
        """The source's label."""
        return self.source.name

    @property
    def n_quality_events(self) -> int:
        """How many ``signal_quality`` events the detector raised."""
        return sum(1 for e in self.events if e.type == "signal_quality")


def run_detector(
    chunks: Iterable[SignalChunk],
    emg_fs: float,
    acc_fs: float | None,
    config: DetectorConfig | None = None,
) -> list[DetectorEvent]:
    """Feed chunks through a fresh detector and return all its events (``finish`` included)."""
    det = CrampDetector(emg_fs, acc_fs, config=config or DetectorConfig())
    events: list[DetectorEvent] = []
    for chunk in chunks:
        acc = chunk.acc_g if acc_fs is not None else None
        events.extend(det.process(chunk.emg_uv, acc))
        det.drain_summaries()  # keep memory bounded; plots re-run the detector
    events.extend(det.finish())
    det.drain_summaries()
    return events


def evaluate_source(
    source: Source,
    *,
    config: DetectorConfig | None = None,
    early_s: float = 2.0,
    tolerance_s: float = 0.5,
    chunk_s: float = CHUNK_S,
) -> RecordingResult:
    """Run the detector over one source and score its events against the truth."""
    t0 = time.perf_counter()
    opened = open_source(source)
    events = run_detector(opened.chunks(chunk_s), opened.emg_fs, opened.acc_fs, config)
    elapsed = time.perf_counter() - t0
    truth = opened.truth
    episodes = episodes_from_events(events)
    cramp: CrampScore | None = None
    burst: BurstScore | None = None
    causes: dict[str, int] = {}
    if truth.label_kind == "cramp":
        ends = truth.offsets_s if truth.offsets_s is not None else truth.onsets_s
        cramp = match_cramps(episodes, truth.onsets_s, ends, opened.duration_s, early_s=early_s)
        causes = false_alarm_causes(cramp.false_alarms, truth.events, margin_s=early_s)
    else:
        burst = match_onsets(
            episodes,
            truth.onsets_s,
            opened.duration_s,
            burst_count=truth.burst_count,
            tolerance_s=tolerance_s,
        )
    return RecordingResult(
        source=source,
        label_kind=truth.label_kind,
        duration_s=opened.duration_s,
        emg_fs=opened.emg_fs,
        events=tuple(events),
        episodes=episodes,
        cramp=cramp,
        burst=burst,
        causes=causes,
        truth=truth,
        processing_s=elapsed,
    )


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A goal for one pooled metric: ``value <op> threshold``."""

    op: Literal[">=", "<=", "=="]
    threshold: float

    def check(self, value: float | None) -> bool | None:
        """Whether ``value`` meets the target (``None`` when there is no value)."""
        if value is None or math.isnan(value):
            return None
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        return value == self.threshold

    def __str__(self) -> str:
        sym = {">=": "≥", "<=": "≤", "==": "="}[self.op]
        return f"{sym} {self.threshold:g}"


#: crampwatch's evaluation targets (docs/evaluation.md explains each).
TARGETS: dict[str, Target] = {
    # The quality targets of the detector issue (simulated nights with ground truth).
    "cramp.sensitivity": Target(">=", 0.98),
    "cramp.precision": Target(">=", 0.95),
    "cramp.false_per_hour": Target("<=", 0.1),
    "cramp.onset_err_median_abs_ms": Target("<=", 50.0),
    "cramp.onset_latency_p95_ms": Target("<=", 300.0),
    # Labelled public onsets (shared/data/simulated_onsets) and voluntary-burst sets.
    "burst.onset_err_median_abs_ms": Target("<=", 30.0),
    "burst.cramps_raised": Target("==", 0.0),
}


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class Summary:
    """Pooled results: cramp truth recordings and burst truth recordings separately."""

    cramp: CrampScore | None
    burst: BurstScore | None
    n_cramp_recordings: int
    n_burst_recordings: int
    causes: dict[str, int]
    processing_s: float
    duration_s: float

    def metrics(self) -> dict[str, float | None]:
        """Flat metric name → value, the names used by :data:`TARGETS`."""
        out: dict[str, float | None] = {}
        c = self.cramp
        if c is not None:
            oe, ol, cl, ee = c.onset_error, c.onset_latency, c.confirm_latency, c.end_error
            out.update(
                {
                    "cramp.hours": c.duration_s / 3600.0,
                    "cramp.truth": float(c.n_truth),
                    "cramp.tp": float(c.tp),
                    "cramp.fn": float(c.fn),
                    "cramp.fp": float(c.fp),
                    "cramp.sensitivity": c.sensitivity,
                    "cramp.precision": c.precision,
                    "cramp.false_per_hour": c.false_per_hour,
                    "cramp.onset_err_median_abs_ms": oe.median_abs_ms,
                    "cramp.onset_err_p95_abs_ms": oe.p95_abs_ms,
                    "cramp.onset_err_median_ms": oe.median_ms,
                    "cramp.onset_latency_median_ms": ol.median_ms,
                    "cramp.onset_latency_p95_ms": ol.p95_ms,
                    "cramp.confirm_latency_median_ms": cl.median_ms,
                    "cramp.confirm_latency_p95_ms": cl.p95_ms,
                    "cramp.end_err_median_abs_ms": ee.median_abs_ms,
                    "cramp.end_err_p95_abs_ms": ee.p95_abs_ms,
                    "cramp.end_err_median_ms": ee.median_ms,
                    "cramp.spasms_cleared": float(c.n_cleared),
                }
            )
        b = self.burst
        if b is not None:
            be = b.onset_error
            rel = None
            if b.count_error is not None and b.count_labelled:
                rel = abs(b.count_error) / b.count_labelled
            out.update(
                {
                    "burst.labelled_onsets": float(b.n_labelled),
                    "burst.hits": float(b.hits),
                    "burst.missed": float(len(b.missed)),
                    "burst.false_onsets": float(len(b.false_onsets)),
                    "burst.onset_sensitivity": b.onset_sensitivity,
                    "burst.onset_err_median_abs_ms": be.median_abs_ms,
                    "burst.onset_err_p95_abs_ms": be.p95_abs_ms,
                    "burst.onset_err_median_ms": be.median_ms,
                    "burst.count_labelled": _opt(b.count_labelled),
                    "burst.count_detected": _opt(b.count_detected),
                    "burst.count_rel_error": rel,
                    "burst.cramps_raised": float(b.cramps_raised),
                }
            )
        return out


def _opt(v: int | None) -> float | None:
    return None if v is None else float(v)


def summarize(results: Sequence[RecordingResult]) -> Summary:
    """Pool per-recording results (counts add, errors pool)."""
    cramps = [r.cramp for r in results if r.cramp is not None]
    bursts = [r.burst for r in results if r.burst is not None]
    causes: dict[str, int] = {}
    for r in results:
        for k, v in r.causes.items():
            causes[k] = causes.get(k, 0) + v
    return Summary(
        cramp=pool_cramp_scores(cramps) if cramps else None,
        burst=pool_burst_scores(bursts) if bursts else None,
        n_cramp_recordings=len(cramps),
        n_burst_recordings=len(bursts),
        causes=dict(sorted(causes.items())),
        processing_s=sum(r.processing_s for r in results),
        duration_s=sum(r.duration_s for r in results),
    )


def failed_targets(summary: Summary, targets: dict[str, Target] | None = None) -> list[str]:
    """Names of the targets whose metric exists and misses its goal."""
    values = summary.metrics()
    return [
        name
        for name, target in (targets or TARGETS).items()
        if name in values and target.check(values[name]) is False
    ]


# --------------------------------------------------------------------------- formatting


def _fmt(v: float | int | None, spec: str = ".0f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isnan(v):
        return "–"
    return format(v, spec)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


CRAMP_HEADERS = (
    "recording",
    "hours",
    "cramps",
    "TP",
    "FN",
    "FP",
    "FP/h",
    "sens",
    "prec",
    "|onset err| med ms",
    "onset lat med ms",
    "confirm lat med ms",
    "|end err| med ms",
    "cleared",
    "quality",
    "x realtime",
)

BURST_HEADERS = (
    "recording",
    "seconds",
    "labelled",
    "hits",
    "missed",
    "false",
    "|onset err| med ms",
    "count lab/det",
    "episodes",
    "cramps raised",
    "x realtime",
)


def _speed(r: RecordingResult) -> str:
    return _fmt(r.duration_s / r.processing_s if r.processing_s > 0 else None, ".0f")


def _score_cells(c: CrampScore, spec: str) -> list[str]:
    """Counts, rates (formatted with ``spec``) and median timings of a cramp score."""
    return [
        str(c.n_truth),
        str(c.tp),
        str(c.fn),
        str(c.fp),
        _fmt(c.false_per_hour, spec),
        _fmt(c.sensitivity, spec),
        _fmt(c.precision, spec),
        _fmt(c.onset_error.median_abs_ms),
        _fmt(c.onset_latency.median_ms),
        _fmt(c.confirm_latency.median_ms),
    ]


def cramp_rows(results: Sequence[RecordingResult]) -> list[list[str]]:
    """One table row per cramp-truth recording."""
    rows = []
    for r in results:
        c = r.cramp
        if c is None:
            continue
        rows.append(
            [
                r.name,
                _fmt(r.duration_s / 3600.0, ".2f"),
                *_score_cells(c, ".2f"),
                _fmt(c.end_error.median_abs_ms),
                str(c.n_cleared),
                str(r.n_quality_events),
                _speed(r),
            ]
        )
    return rows


def burst_rows(results: Sequence[RecordingResult]) -> list[list[str]]:
    """One table row per burst-truth recording."""
    rows = []
    for r in results:
        b = r.burst
        if b is None:
            continue
        labelled = str(b.n_labelled) if b.n_labelled else "–"
        count = "–"
        if b.count_labelled is not None:
            count = f"{b.count_labelled}/{b.count_detected}"
        rows.append(
            [
                r.name,
                _fmt(r.duration_s, ".1f"),
                labelled,
                str(b.hits) if b.n_labelled else "–",
                str(len(b.missed)) if b.n_labelled else "–",
                str(len(b.false_onsets)) if b.n_labelled else "–",
                _fmt(b.onset_error.median_abs_ms),
                count,
                str(b.n_episodes),
                str(b.cramps_raised),
                _speed(r),
            ]
        )
    return rows


SUMMARY_LABELS: dict[str, tuple[str, str]] = {
    "cramp.hours": ("hours of simulated night", ".2f"),
    "cramp.truth": ("truth cramps", ".0f"),
    "cramp.tp": ("detected (TP)", ".0f"),
    "cramp.fn": ("missed (FN)", ".0f"),
    "cramp.fp": ("false cramps (FP)", ".0f"),
    "cramp.sensitivity": ("sensitivity", ".3f"),
    "cramp.precision": ("precision", ".3f"),
    "cramp.false_per_hour": ("false cramps per hour", ".3f"),
    "cramp.onset_err_median_abs_ms": ("onset error |median| ms", ".0f"),
    "cramp.onset_err_p95_abs_ms": ("onset error |p95| ms", ".0f"),
    "cramp.onset_err_median_ms": ("onset error signed median ms", ".0f"),
    "cramp.onset_latency_median_ms": ("spasm_onset latency median ms", ".0f"),
    "cramp.onset_latency_p95_ms": ("spasm_onset latency p95 ms", ".0f"),
    "cramp.confirm_latency_median_ms": ("confirmation latency median ms", ".0f"),
    "cramp.confirm_latency_p95_ms": ("confirmation latency p95 ms", ".0f"),
    "cramp.end_err_median_abs_ms": ("end error |median| ms", ".0f"),
    "cramp.end_err_p95_abs_ms": ("end error |p95| ms", ".0f"),
    "cramp.end_err_median_ms": ("end error signed median ms", ".0f"),
    "cramp.spasms_cleared": ("spasms cleared (not cramps)", ".0f"),
    "burst.labelled_onsets": ("labelled burst onsets", ".0f"),
    "burst.hits": ("burst onsets found", ".0f"),
    "burst.missed": ("burst onsets missed", ".0f"),
    "burst.false_onsets": ("false onsets", ".0f"),
    "burst.onset_sensitivity": ("burst onset sensitivity", ".3f"),
    "burst.onset_err_median_abs_ms": ("burst onset error |median| ms", ".0f"),
    "burst.onset_err_p95_abs_ms": ("burst onset error |p95| ms", ".0f"),
    "burst.onset_err_median_ms": ("burst onset error signed median ms", ".0f"),
    "burst.count_labelled": ("bursts labelled (count only)", ".0f"),
    "burst.count_detected": ("episodes detected (count only)", ".0f"),
    "burst.count_rel_error": ("burst count |relative error|", ".3f"),
    "burst.cramps_raised": ("cramps raised on burst sets", ".0f"),
}


def summary_rows(summary: Summary, targets: dict[str, Target] | None = None) -> list[list[str]]:
    """``metric, value, target, ✓/✗`` rows of the pooled summary."""
    targets = TARGETS if targets is None else targets
    rows = []
    for name, value in summary.metrics().items():
        label, spec = SUMMARY_LABELS.get(name, (name, ".3f"))
        target = targets.get(name)
        ok = target.check(value) if target is not None else None
        mark = "" if target is None else "?" if ok is None else "✓" if ok else "✗"
        rows.append([label, _fmt(value, spec), "" if target is None else str(target), mark])
    return rows


def group_of(result: RecordingResult) -> str:
    """Grouping key of the by-group table: the profile of a night, the folder of a file."""
    src = result.source
    return src.profile if isinstance(src, SimulatedSource) else src.path.parent.name


GROUP_CRAMP_HEADERS = ("profile", "nights", *CRAMP_HEADERS[1:12])  # hours .. confirm lat
GROUP_BURST_HEADERS = (
    "set",
    "files",
    "labelled",
    "hits",
    "false",
    "|onset err| med ms",
    "count lab/det",
    "episodes",
    "cramps raised",
)


def group_rows(results: Sequence[RecordingResult]) -> tuple[list[list[str]], list[list[str]]]:
    """Pooled rows per group: (cramp-labelled rows, burst-labelled rows)."""
    groups: dict[str, list[RecordingResult]] = {}
    for r in results:
        groups.setdefault(group_of(r), []).append(r)
    cramp_out, burst_out = [], []
    for name, items in groups.items():
        cs = [r.cramp for r in items if r.cramp is not None]
        bs = [r.burst for r in items if r.burst is not None]
        if cs:
            c = pool_cramp_scores(cs)
            cramp_out.append(
                [
                    name,
                    str(len(cs)),
                    _fmt(c.duration_s / 3600.0, ".1f"),
                    *_score_cells(c, ".3f"),
                ]
            )
        if bs:
            b = pool_burst_scores(bs)
            count = "–"
            if b.count_labelled is not None:
                count = f"{b.count_labelled}/{b.count_detected}"
            burst_out.append(
                [
                    name,
                    str(len(bs)),
                    str(b.n_labelled) if b.n_labelled else "–",
                    str(b.hits) if b.n_labelled else "–",
                    str(len(b.false_onsets)) if b.n_labelled else "–",
                    _fmt(b.onset_error.median_abs_ms),
                    count,
                    str(b.n_episodes),
                    str(b.cramps_raised),
                ]
            )
    return cramp_out, burst_out


def format_report(results: Sequence[RecordingResult], summary: Summary) -> str:
    """The whole text report: per-recording tables, per-group tables, the pooled summary."""
    parts = []
    g_cramp, g_burst = group_rows(results)
    if any(r.cramp is not None for r in results):
        parts += ["Cramp-labelled recordings", format_table(CRAMP_HEADERS, cramp_rows(results))]
        parts += ["", "By profile", format_table(GROUP_CRAMP_HEADERS, g_cramp)]
        if summary.causes:
            causes = ", ".join(f"{k} {v}" for k, v in summary.causes.items())
            parts.append(f"false cramps by cause: {causes}")
        parts.append("")
    if any(r.burst is not None for r in results):
        parts += ["Burst-labelled recordings", format_table(BURST_HEADERS, burst_rows(results))]
        parts += ["", "By set", format_table(GROUP_BURST_HEADERS, g_burst), ""]
    pieces = []
    if summary.n_cramp_recordings:
        pieces.append(f"{summary.n_cramp_recordings} cramp-labelled")
    if summary.n_burst_recordings:
        pieces.append(f"{summary.n_burst_recordings} burst-labelled")
    speed = summary.duration_s / summary.processing_s if summary.processing_s > 0 else 0.0
    parts.append(
        f"Summary ({' + '.join(pieces) or 'no'} recordings, "
        f"{summary.duration_s / 3600.0:.2f} h in {summary.processing_s:.1f} s, "
        f"{speed:.0f}x real time incl. generation/reading)"
    )
    parts.append(format_table(("metric", "value", "target", ""), summary_rows(summary)))
    return "\n".join(parts)


# --------------------------------------------------------------------------- JSON


def _err_json(s: ErrorStats) -> dict[str, Any]:
    return {
        "n": s.n,
        "median_abs_ms": s.median_abs_ms,
        "p95_abs_ms": s.p95_abs_ms,
        "median_ms": s.median_ms,
    }


def _lat_json(s: LatencyStats) -> dict[str, Any]:
    return {"n": s.n, "median_ms": s.median_ms, "p95_ms": s.p95_ms}


def cramp_json(c: CrampScore) -> dict[str, Any]:
    """JSON-ready form of a :class:`CrampScore`."""
    return {
        "hours": c.duration_s / 3600.0,
        "truth": c.n_truth,
        "tp": c.tp,
        "fn": c.fn,
        "fp": c.fp,
        "sensitivity": c.sensitivity,
        "precision": c.precision,
        "false_per_hour": c.false_per_hour,
        "onset_error": _err_json(c.onset_error),
        "onset_latency": _lat_json(c.onset_latency),
        "confirm_latency": _lat_json(c.confirm_latency),
        "end_error": _err_json(c.end_error),
        "spasms_cleared": c.n_cleared,
        "matches": [
            {
                "truth_onset_s": m.truth_onset_s,
                "truth_end_s": m.truth_end_s,
                "detected_onset_s": m.detected.onset_s,
                "detected_end_s": m.detected.end_s,
                "onset_latency_s": m.onset_latency_s,
                "confirm_latency_s": m.confirm_latency_s,
            }
            for m in c.matches
        ],
        "missed_truth_index": list(c.missed),
        "false_alarm_onsets_s": [f.onset_s for f in c.false_alarms],
    }


def burst_json(b: BurstScore) -> dict[str, Any]:
    """JSON-ready form of a :class:`BurstScore`."""
    return {
        "seconds": b.duration_s,
        "labelled_onsets": b.n_labelled,
        "hits": b.hits,
        "missed_onsets_s": list(b.missed),
        "false_onsets_s": list(b.false_onsets),
        "onset_sensitivity": b.onset_sensitivity,
        "onset_error": _err_json(b.onset_error),
        "count_labelled": b.count_labelled,
        "count_detected": b.count_detected,
        "count_error": b.count_error,
        "episodes": b.n_episodes,
        "cramps_raised": b.cramps_raised,
    }


def report_json(
    results: Sequence[RecordingResult],
    summary: Summary,
    targets: dict[str, Target] | None = None,
) -> dict[str, Any]:
    """Machine-readable report (``crampwatch evaluate --json``)."""
    targets = TARGETS if targets is None else targets
    values = summary.metrics()
    recs = []
    for r in results:
        doc: dict[str, Any] = {
            "name": r.name,
            "label_kind": r.label_kind,
            "duration_s": r.duration_s,
            "emg_fs": r.emg_fs,
            "processing_s": r.processing_s,
            "quality_events": r.n_quality_events,
        }
        if isinstance(r.source, SimulatedSource):
            doc["simulated"] = {
                "seed": r.source.seed,
                "hours": r.source.hours,
                "profile": r.source.profile,
                "mains_hz": r.source.mains_hz,
            }
        else:
            doc["path"] = str(r.source.path)
        if r.cramp is not None:
            doc["cramp"] = cramp_json(r.cramp)
            doc["false_alarm_causes"] = r.causes
        if r.burst is not None:
            doc["burst"] = burst_json(r.burst)
        recs.append(doc)
    return {
        "recordings": recs,
        "summary": {
            "metrics": values,
            "false_alarm_causes": summary.causes,
            "targets": {
                name: {"target": str(t), "value": values[name], "met": t.check(values[name])}
                for name, t in targets.items()
                if name in values
            },
            "processing_s": summary.processing_s,
            "duration_s": summary.duration_s,
        },
    }
