"""Scoring detector output against ground truth (pure: event lists and times in, numbers out).

Two kinds of truth exist (see ``sensor_gateway.truth``):

Cramp truth (crampwatch's simulated nights)
    Cramp onsets and ends.  Detector events are grouped into *episodes* by their
    ``episode`` number (:func:`episodes_from_events`).  Only an episode that emitted
    ``cramp_confirmed`` is a detected cramp; one that was cleared (``spasm_cleared``)
    or never confirmed is not.  Matching rule (:func:`match_cramps`):

    * a detected cramp with onset ``d`` (the ``t_s`` of its ``spasm_onset``, or of its
      ``cramp_confirmed`` if the onset event is missing) is a *candidate* for a truth
      cramp ``[on, end]`` when ``on - early_s <= d <= end`` (``early_s`` = 2 s by
      default, so a detector that fires on the fasciculation prelude is not punished);
    * candidate pairs are taken greedily, smallest ``|d - on|`` first (ties: earlier
      truth, then earlier detection), each truth cramp and each detection used at
      most once;
    * matched pairs are true positives; unmatched truth cramps are false negatives
      (missed); unmatched detected cramps are false positives (false alarms).

    Per match: onset error ``d - on``; spasm-onset latency (``emitted_at_s`` of
    ``spasm_onset`` minus ``on``: how long after the true onset the first alert could
    go out); confirmation latency (``emitted_at_s`` of ``cramp_confirmed`` minus
    ``on``); end error (``t_s`` of ``cramp_end`` minus the true end).

Burst truth (the public sets in ``shared/data``)
    Labelled onsets of short voluntary bursts, none of them a cramp.  Every episode's
    onset counts, confirmed or cleared.  Matching rule (:func:`match_onsets`): a
    detected onset and a labelled onset are candidates when ``|d - on| <=
    tolerance_s`` (0.5 s by default); pairs are taken greedily, smallest ``|d - on|``
    first, one-to-one.  Unmatched labels are missed bursts, unmatched detections
    are false onsets (only on recordings with labelled onsets: without them no
    single onset can be called false).  When only a burst *count* is labelled,
    the number of detected episodes is compared with it.  ``cramps_raised``
    (confirmed episodes) must be 0 on these sets: none of their bursts is a cramp.

Statistics: percentiles use linear interpolation between order statistics
(``numpy.percentile``'s default); medians of an even count are the mean of the
two middle values.  An empty sample gives ``None`` for every statistic, and a
ratio whose denominator is 0 (sensitivity without truth cramps, precision
without detections) is ``None``.  Times are seconds in, milliseconds in the
reported statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from cramp_signal.errors import SignalError

#: Event types that open, settle or close a detector episode.
SPASM_ONSET = "spasm_onset"
CRAMP_CONFIRMED = "cramp_confirmed"
CRAMP_END = "cramp_end"
SPASM_CLEARED = "spasm_cleared"

#: Default tolerances of the matching rules (seconds).
CRAMP_EARLY_S = 2.0
BURST_TOLERANCE_S = 0.5


class EventLike(Protocol):
    """What the metrics read from a detector event (``cramp_signal.detector.DetectorEvent``)."""

    @property
    def type(self) -> str: ...

    @property
    def episode(self) -> int | None: ...

    @property
    def t_s(self) -> float: ...

    @property
    def emitted_at_s(self) -> float: ...


class TruthSpanLike(Protocol):
    """A scripted truth episode: ``kind`` plus start and end in seconds."""

    @property
    def kind(self) -> str: ...

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...


@dataclass(frozen=True)
class DetectedEpisode:
    """One detector episode, assembled from its events.

    Attributes
    ----------
    episode
        The detector's episode number.
    onset_s
        Detected onset: ``t_s`` of ``cramp_confirmed`` (the start of the sustained
        contraction, which may be later than the candidate's ``spasm_onset`` when
        the candidate began with a prelude), else of ``spasm_onset``.
    onset_emitted_s
        ``emitted_at_s`` of ``spasm_onset`` (``None`` if absent).
    confirmed_emitted_s
        ``emitted_at_s`` of ``cramp_confirmed``; ``None`` if the episode never confirmed.
    end_s
        ``t_s`` of ``cramp_end`` or ``spasm_cleared`` (``None`` if neither was emitted).
    end_emitted_s
        ``emitted_at_s`` of that closing event.
    """

    episode: int
    onset_s: float
    onset_emitted_s: float | None
    confirmed_emitted_s: float | None
    end_s: float | None
    end_emitted_s: float | None

    @property
    def confirmed(self) -> bool:
        """Whether the episode was confirmed as a cramp."""
        return self.confirmed_emitted_s is not None


def episodes_from_events(events: Iterable[EventLike]) -> tuple[DetectedEpisode, ...]:
    """Group detector events into episodes, ordered by onset.

    Events other than the four episode events (``prelude``, ``signal_quality``) and
    events without an episode number are ignored.  An episode needs a ``spasm_onset``
    or a ``cramp_confirmed`` event; closing events of an episode never opened are
    ignored.

    Parameters
    ----------
    events
        Detector events in any order.

    Returns
    -------
    tuple of DetectedEpisode
        One per episode, sorted by ``onset_s`` then episode number.
    """
    onset: dict[int, tuple[float, float]] = {}
    confirmed: dict[int, tuple[float, float]] = {}
    closed: dict[int, tuple[float, float]] = {}
    for ev in events:
        if ev.episode is None:
            continue
        key = (float(ev.t_s), float(ev.emitted_at_s))
        if ev.type == SPASM_ONSET:
            onset.setdefault(ev.episode, key)
        elif ev.type == CRAMP_CONFIRMED:
            confirmed.setdefault(ev.episode, key)
        elif ev.type in (CRAMP_END, SPASM_CLEARED):
            closed.setdefault(ev.episode, key)
    out = []
    for ep in set(onset) | set(confirmed):
        on = onset.get(ep)
        conf = confirmed.get(ep)
        end = closed.get(ep)
        onset_s = conf[0] if conf is not None else on[0] if on is not None else 0.0
        out.append(
            DetectedEpisode(
                episode=ep,
                onset_s=onset_s,
                onset_emitted_s=None if on is None else on[1],
                confirmed_emitted_s=None if conf is None else conf[1],
                end_s=None if end is None else end[0],
                end_emitted_s=None if end is None else end[1],
            )
        )
    out.sort(key=lambda e: (e.onset_s, e.episode))
    return tuple(out)


def _greedy_pairs(
    detected: NDArray[np.float64], truth: NDArray[np.float64], allowed: NDArray[np.bool_]
) -> list[tuple[int, int]]:
    """One-to-one pairs (truth index, detection index), smallest ``|d - t|`` first."""
    ti, di = np.nonzero(allowed)
    if ti.size == 0:
        return []
    dist = np.abs(detected[di] - truth[ti])
    order = np.lexsort((di, ti, dist))
    used_t: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for k in order:  # candidate pairs only, a handful per truth label
        t, d = int(ti[k]), int(di[k])
        if t in used_t or d in used_d:
            continue
        used_t.add(t)
        used_d.add(d)
        pairs.append((t, d))
    pairs.sort()
    return pairs


def _check_times(name: str, values: Sequence[float]) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise SignalError(f"{name}: times must be finite")
    return arr


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class ErrorStats:
    """Statistics of a signed timing error (ms): sizes of ``|err|`` and the signed median."""

    n: int
    median_abs_ms: float | None
    p95_abs_ms: float | None
    median_ms: float | None

    @classmethod
    def of(cls, errors_s: Sequence[float] | NDArray[np.float64]) -> ErrorStats:
        """Summarise errors given in seconds."""
        e = np.asarray(errors_s, dtype=np.float64).reshape(-1) * 1000.0
        if e.size == 0:
            return cls(0, None, None, None)
        a = np.abs(e)
        return cls(
            int(e.size),
            float(np.median(a)),
            float(np.percentile(a, 95.0)),
            float(np.median(e)),
        )


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of a latency (ms): median and 95th percentile of the signed values."""

    n: int
    median_ms: float | None
    p95_ms: float | None

    @classmethod
    def of(cls, latencies_s: Sequence[float] | NDArray[np.float64]) -> LatencyStats:
        """Summarise latencies given in seconds."""
        v = np.asarray(latencies_s, dtype=np.float64).reshape(-1) * 1000.0
        if v.size == 0:
            return cls(0, None, None)
        return cls(int(v.size), float(np.median(v)), float(np.percentile(v, 95.0)))


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


# --------------------------------------------------------------------------- cramps


@dataclass(frozen=True)
class CrampMatch:
    """A truth cramp and the detected cramp matched to it."""

    truth_index: int
    truth_onset_s: float
    truth_end_s: float
    detected: DetectedEpisode

    @property
    def onset_error_s(self) -> float:
        """Detected onset minus true onset (negative = early)."""
        return self.detected.onset_s - self.truth_onset_s

    @property
    def onset_latency_s(self) -> float | None:
        """``emitted_at_s`` of ``spasm_onset`` minus the true onset."""
        t = self.detected.onset_emitted_s
        return None if t is None else t - self.truth_onset_s

    @property
    def confirm_latency_s(self) -> float | None:
        """``emitted_at_s`` of ``cramp_confirmed`` minus the true onset."""
        t = self.detected.confirmed_emitted_s
        return None if t is None else t - self.truth_onset_s

    @property
    def end_error_s(self) -> float | None:
        """``t_s`` of ``cramp_end`` minus the true end (``None`` if the cramp never ended)."""
        t = self.detected.end_s
        return None if t is None else t - self.truth_end_s


@dataclass(frozen=True)
class CrampScore:
    """Detected cramps of one or more recordings scored against cramp truth."""

    duration_s: float
    n_truth: int
    matches: tuple[CrampMatch, ...]
    missed: tuple[int, ...]
    false_alarms: tuple[DetectedEpisode, ...]
    n_cleared: int

    @property
    def tp(self) -> int:
        """True positives: matched truth cramps."""
        return len(self.matches)

    @property
    def fn(self) -> int:
        """False negatives: missed truth cramps."""
        return len(self.missed)

    @property
    def fp(self) -> int:
        """False positives: confirmed cramps matching no truth cramp."""
        return len(self.false_alarms)

    @property
    def sensitivity(self) -> float | None:
        """TP / (TP + FN); ``None`` without truth cramps."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); ``None`` without detected cramps."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def false_per_hour(self) -> float | None:
        """False alarms per hour of recording; ``None`` for a zero-length recording."""
        return None if self.duration_s <= 0 else self.fp / (self.duration_s / 3600.0)

    @property
    def onset_error(self) -> ErrorStats:
        """Statistics of detected onset minus true onset."""
        return ErrorStats.of([m.onset_error_s for m in self.matches])

    @property
    def onset_latency(self) -> LatencyStats:
        """Statistics of ``spasm_onset`` emission time minus true onset."""
        return LatencyStats.of([x for m in self.matches if (x := m.onset_latency_s) is not None])

    @property
    def confirm_latency(self) -> LatencyStats:
        """Statistics of ``cramp_confirmed`` emission time minus true onset."""
        return LatencyStats.of([x for m in self.matches if (x := m.confirm_latency_s) is not None])

    @property
    def end_error(self) -> ErrorStats:
        """Statistics of detected end minus true end (cramps that ended only)."""
        return ErrorStats.of([x for m in self.matches if (x := m.end_error_s) is not None])


def match_cramps(
    episodes: Sequence[DetectedEpisode],
    onsets_s: Sequence[float],
    ends_s: Sequence[float],
    duration_s: float,
    *,
    early_s: float = CRAMP_EARLY_S,
) -> CrampScore:
    """Score detected episodes against truth cramps (rule in the module docstring).

    Parameters
    ----------
    episodes
        Detector episodes (:func:`episodes_from_events`); unconfirmed ones are counted
        in ``n_cleared`` and otherwise ignored.
    onsets_s, ends_s
        Truth cramp onsets and ends, same length.
    duration_s
        Length of the recording (for false alarms per hour).
    early_s
        How long before the true onset a detected onset may lie and still match.

    Returns
    -------
    CrampScore

    Raises
    ------
    SignalError
        If onsets and ends differ in length, a time is not finite, an end precedes
        its onset, or ``early_s`` is negative.
    """
    on = _check_times("onsets_s", onsets_s)
    end = _check_times("ends_s", ends_s)
    if on.shape != end.shape:
        raise SignalError(f"{on.size} cramp onsets but {end.size} ends")
    if np.any(end < on):
        raise SignalError("a cramp ends before it starts")
    if not early_s >= 0:
        raise SignalError("early_s must be >= 0")
    cramps = [e for e in episodes if e.confirmed]
    d = np.array([e.onset_s for e in cramps], dtype=np.float64)
    allowed = (d[None, :] >= on[:, None] - early_s) & (d[None, :] <= end[:, None])
    pairs = _greedy_pairs(d, on, allowed)
    matched_t = {t for t, _ in pairs}
    matched_d = {k for _, k in pairs}
    return CrampScore(
        duration_s=float(duration_s),
        n_truth=int(on.size),
        matches=tuple(CrampMatch(t, float(on[t]), float(end[t]), cramps[k]) for t, k in pairs),
        missed=tuple(t for t in range(on.size) if t not in matched_t),
        false_alarms=tuple(c for k, c in enumerate(cramps) if k not in matched_d),
        n_cleared=sum(1 for e in episodes if not e.confirmed),
    )


def false_alarm_causes(
    false_alarms: Sequence[DetectedEpisode],
    truth_events: Sequence[TruthSpanLike],
    *,
    margin_s: float = CRAMP_EARLY_S,
) -> dict[str, int]:
    """Count false alarms by the scripted episode they fell on.

    A false alarm is attributed to the truth event (any kind but ``cramp``) whose span
    ``[start - margin_s, end + margin_s]`` contains its onset, the one with the nearest
    start if several do; ``"none"`` if no event does.  ``cramp`` spans are skipped:
    a false alarm near a cramp is a duplicate detection, reported as ``"cramp"``
    only when no other event explains it.

    Returns
    -------
    dict
        Cause → number of false alarms, sorted by cause.
    """
    counts: dict[str, int] = {}
    spans = [(ev.kind, ev.start_s, ev.end_s) for ev in truth_events]
    for fa in false_alarms:
        best: tuple[float, str] | None = None
        fallback: str | None = None
        for kind, start, stop in spans:
            if not start - margin_s <= fa.onset_s <= stop + margin_s:
                continue
            if kind == "cramp":
                fallback = "cramp"
                continue
            dist = abs(fa.onset_s - start)
            if best is None or dist < best[0]:
                best = (dist, kind)
        cause = best[1] if best is not None else fallback or "none"
        counts[cause] = counts.get(cause, 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- bursts


@dataclass(frozen=True)
class OnsetMatch:
    """A labelled burst onset and the detected onset matched to it."""

    truth_index: int
    truth_onset_s: float
    detected_onset_s: float

    @property
    def error_s(self) -> float:
        """Detected minus labelled onset."""
        return self.detected_onset_s - self.truth_onset_s


@dataclass(frozen=True)
class BurstScore:
    """Detector episodes of one or more recordings scored against burst labels.

    ``n_labelled`` counts recordings' labelled onsets; recordings labelled only by a
    count contribute to ``count_labelled``/``count_detected`` instead.
    """

    duration_s: float
    n_labelled: int
    matches: tuple[OnsetMatch, ...]
    missed: tuple[float, ...]
    false_onsets: tuple[float, ...]
    count_labelled: int | None
    count_detected: int | None
    n_episodes: int
    cramps_raised: int

    @property
    def hits(self) -> int:
        """Labelled onsets matched by a detected onset."""
        return len(self.matches)

    @property
    def onset_sensitivity(self) -> float | None:
        """Matched / labelled onsets; ``None`` without labelled onsets."""
        return _ratio(self.hits, self.n_labelled)

    @property
    def onset_error(self) -> ErrorStats:
        """Statistics of detected minus labelled onset over the matches."""
        return ErrorStats.of([m.error_s for m in self.matches])

    @property
    def count_error(self) -> int | None:
        """Detected minus labelled burst count (count-only recordings)."""
        if self.count_labelled is None or self.count_detected is None:
            return None
        return self.count_detected - self.count_labelled


def match_onsets(
    episodes: Sequence[DetectedEpisode],
    onsets_s: Sequence[float] | None,
    duration_s: float,
    *,
    burst_count: int | None = None,
    tolerance_s: float = BURST_TOLERANCE_S,
) -> BurstScore:
    """Score episode onsets against labelled burst onsets (rule in the module docstring).

    Parameters
    ----------
    episodes
        Detector episodes, confirmed or not.
    onsets_s
        Labelled burst onsets; ``None`` or empty when the recording has none.
    duration_s
        Length of the recording.
    burst_count
        The labelled number of bursts, used only when no onsets are labelled.
    tolerance_s
        Largest ``|detected - labelled|`` of a match.

    Returns
    -------
    BurstScore

    Raises
    ------
    SignalError
        If a time is not finite or ``tolerance_s`` is negative.
    """
    if not tolerance_s >= 0:
        raise SignalError("tolerance_s must be >= 0")
    on = _check_times("onsets_s", onsets_s or ())
    d = np.array([e.onset_s for e in episodes], dtype=np.float64)
    cramps_raised = sum(1 for e in episodes if e.confirmed)
    if on.size == 0:
        # Without labelled onsets no single onset can be called false.
        counted = burst_count is not None
        return BurstScore(
            duration_s=float(duration_s),
            n_labelled=0,
            matches=(),
            missed=(),
            false_onsets=(),
            count_labelled=burst_count,
            count_detected=len(episodes) if counted else None,
            n_episodes=len(episodes),
            cramps_raised=cramps_raised,
        )
    allowed = np.abs(d[None, :] - on[:, None]) <= tolerance_s
    pairs = _greedy_pairs(d, on, allowed)
    matched_t = {t for t, _ in pairs}
    matched_d = {k for _, k in pairs}
    return BurstScore(
        duration_s=float(duration_s),
        n_labelled=int(on.size),
        matches=tuple(OnsetMatch(t, float(on[t]), float(d[k])) for t, k in pairs),
        missed=tuple(float(on[t]) for t in range(on.size) if t not in matched_t),
        false_onsets=tuple(float(d[k]) for k in range(d.size) if k not in matched_d),
        count_labelled=None,
        count_detected=None,
        n_episodes=len(episodes),
        cramps_raised=cramps_raised,
    )


# --------------------------------------------------------------------------- pooling


def pool_cramp_scores(scores: Iterable[CrampScore]) -> CrampScore:
    """Pool several recordings: counts and durations add, errors are pooled.

    Truth indices of the pooled matches keep their per-recording values.
    """
    items = list(scores)
    return CrampScore(
        duration_s=sum(s.duration_s for s in items),
        n_truth=sum(s.n_truth for s in items),
        matches=tuple(m for s in items for m in s.matches),
        missed=tuple(t for s in items for t in s.missed),
        false_alarms=tuple(f for s in items for f in s.false_alarms),
        n_cleared=sum(s.n_cleared for s in items),
    )


def _sum_optional(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def pool_burst_scores(scores: Iterable[BurstScore]) -> BurstScore:
    """Pool several recordings: counts and durations add, onset errors are pooled.

    Burst counts add over the count-only recordings.
    """
    items = list(scores)
    return BurstScore(
        duration_s=sum(s.duration_s for s in items),
        n_labelled=sum(s.n_labelled for s in items),
        matches=tuple(m for s in items for m in s.matches),
        missed=tuple(t for s in items for t in s.missed),
        false_onsets=tuple(f for s in items for f in s.false_onsets),
        count_labelled=_sum_optional(s.count_labelled for s in items),
        count_detected=_sum_optional(s.count_detected for s in items),
        n_episodes=sum(s.n_episodes for s in items),
        cramps_raised=sum(s.cramps_raised for s in items),
    )
