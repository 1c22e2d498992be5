"""Scoring rules of :mod:`cramp_signal.metrics` on hand-built event lists.

Every expected number below is worked out by hand from the matching rules in the
module docstring (comments show the arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cramp_signal.errors import SignalError
from cramp_signal.metrics import (
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


@dataclass(frozen=True)
class Ev:
    type: str
    episode: int | None
    t_s: float
    emitted_at_s: float


@dataclass(frozen=True)
class Span:
    kind: str
    start_s: float
    end_s: float


def cramp(ep: int, onset: float, *, confirmed: bool = True, end: float | None = None) -> list[Ev]:
    """Events of one episode: onset emitted 0.1 s late, confirmation 1.0 s late."""
    evs = [Ev("spasm_onset", ep, onset, onset + 0.1)]
    if confirmed:
        evs.append(Ev("cramp_confirmed", ep, onset, onset + 1.0))
        if end is not None:
            evs.append(Ev("cramp_end", ep, end, end + 0.5))
    else:
        evs.append(Ev("spasm_cleared", ep, onset + 0.4, onset + 0.6))
    return evs


def ep(onset: float, confirmed: bool = True) -> DetectedEpisode:
    return DetectedEpisode(0, onset, onset, onset + 1.0 if confirmed else None, None, None)


# --------------------------------------------------------------------------- episodes


def test_episodes_group_events_and_ignore_others() -> None:
    events = [
        Ev("prelude", None, 5.0, 5.0),
        *cramp(2, 50.0, confirmed=False),
        Ev("signal_quality", None, 60.0, 60.0),
        *cramp(1, 10.0, end=40.0),
    ]
    eps = episodes_from_events(events)
    assert [e.episode for e in eps] == [1, 2]  # ordered by onset, not by arrival
    first, second = eps
    assert first.confirmed and not second.confirmed
    assert (first.onset_s, first.onset_emitted_s) == (10.0, 10.1)
    assert first.confirmed_emitted_s == 11.0
    assert (first.end_s, first.end_emitted_s) == (40.0, 40.5)
    assert second.end_s == 50.4  # spasm_cleared closes it


def test_episode_without_onset_event_uses_confirmation_time() -> None:
    (only,) = episodes_from_events([Ev("cramp_confirmed", 7, 3.0, 4.5)])
    assert only.onset_s == 3.0
    assert only.onset_emitted_s is None
    assert only.confirmed


def test_closing_event_alone_makes_no_episode() -> None:
    assert episodes_from_events([Ev("cramp_end", 3, 9.0, 9.0)]) == ()


# --------------------------------------------------------------------------- statistics


def test_error_stats_by_hand() -> None:
    s = ErrorStats.of([-0.010, 0.020, 0.030, -0.040])
    assert s.n == 4
    assert s.median_abs_ms == pytest.approx(25.0)  # |err| = 10, 20, 30, 40
    assert s.p95_abs_ms == pytest.approx(38.5)  # rank 0.95*3 = 2.85 → 30 + 0.85*10
    assert s.median_ms == pytest.approx(5.0)  # sorted -40, -10, 20, 30 → (-10+20)/2


def test_latency_stats_by_hand() -> None:
    s = LatencyStats.of([0.5, 0.1, 0.3, 0.2, 0.4])
    assert s.n == 5
    assert s.median_ms == pytest.approx(300.0)
    assert s.p95_ms == pytest.approx(480.0)  # rank 0.95*4 = 3.8 → 400 + 0.8*100


def test_empty_stats_are_none() -> None:
    assert ErrorStats.of([]) == ErrorStats(0, None, None, None)
    assert LatencyStats.of([]) == LatencyStats(0, None, None)


# --------------------------------------------------------------------------- cramps


def test_match_cramps_by_hand() -> None:
    # truth: A [100, 130], B [500, 520], C [1000, 1030]; two hours
    events = [
        *cramp(1, 99.5, end=131.0),  # A: 0.5 s early, inside the 2-s allowance
        *cramp(2, 101.0, end=125.0),  # also a candidate for A but farther → FP
        *cramp(3, 497.0, end=519.0),  # 3 s before B: outside the window → FP, B missed
        *cramp(4, 1000.2, confirmed=False),  # never confirmed: not a cramp, C missed
    ]
    score = match_cramps(
        episodes_from_events(events), [100.0, 500.0, 1000.0], [130.0, 520.0, 1030.0], 7200.0
    )
    assert (score.tp, score.fn, score.fp) == (1, 2, 2)
    assert score.missed == (1, 2)
    assert [f.episode for f in score.false_alarms] == [2, 3]
    assert score.n_cleared == 1
    assert score.sensitivity == pytest.approx(1 / 3)
    assert score.precision == pytest.approx(1 / 3)
    assert score.false_per_hour == pytest.approx(1.0)  # 2 FP / 2 h
    (m,) = score.matches
    assert m.truth_index == 0
    assert m.onset_error_s == pytest.approx(-0.5)
    assert m.onset_latency_s == pytest.approx(-0.4)  # emitted at 99.6
    assert m.confirm_latency_s == pytest.approx(0.5)  # emitted at 100.5
    assert m.end_error_s == pytest.approx(1.0)  # 131 - 130
    assert score.onset_error.median_ms == pytest.approx(-500.0)
    assert score.confirm_latency.median_ms == pytest.approx(500.0)
    assert score.end_error.median_abs_ms == pytest.approx(1000.0)


def test_match_is_greedy_by_distance_not_by_order() -> None:
    # A [10, 40], B [41, 60]. A detection at 40.0 may match A (≤ end) or B (≥ 41-2);
    # it is 30 s from A's onset and 1 s from B's, so it goes to B; 12.0 takes A.
    score = match_cramps([ep(40.0), ep(12.0)], [10.0, 41.0], [40.0, 60.0], 100.0)
    assert score.fp == 0 and score.fn == 0
    by_truth = {m.truth_index: m.detected.onset_s for m in score.matches}
    assert by_truth == {0: 12.0, 1: 40.0}


def test_window_edges_are_inclusive() -> None:
    # onset - 2 s and the true end itself still match; just past either does not
    on, end = [100.0], [120.0]
    assert match_cramps([ep(98.0)], on, end, 1000.0).tp == 1
    assert match_cramps([ep(120.0)], on, end, 1000.0).tp == 1
    assert match_cramps([ep(97.9)], on, end, 1000.0).tp == 0
    assert match_cramps([ep(120.1)], on, end, 1000.0).tp == 0


def test_ratios_are_none_when_undefined() -> None:
    score = match_cramps([], [], [], 3600.0)
    assert score.sensitivity is None and score.precision is None
    assert score.false_per_hour == 0.0
    assert match_cramps([], [], [], 0.0).false_per_hour is None


def test_bad_truth_is_rejected() -> None:
    with pytest.raises(SignalError):
        match_cramps([], [1.0, 2.0], [3.0], 10.0)
    with pytest.raises(SignalError):
        match_cramps([], [5.0], [4.0], 10.0)
    with pytest.raises(SignalError):
        match_cramps([], [float("nan")], [4.0], 10.0)


def test_pool_adds_counts_and_pools_errors() -> None:
    a = match_cramps([ep(10.5)], [10.0], [20.0], 3600.0)  # TP, err +0.5
    b = match_cramps([ep(11.0), ep(300.0)], [10.0, 50.0], [20.0, 60.0], 3600.0)  # TP +1, FP, FN
    pooled = pool_cramp_scores([a, b])
    assert (pooled.tp, pooled.fn, pooled.fp, pooled.n_truth) == (2, 1, 1, 3)
    assert pooled.false_per_hour == pytest.approx(0.5)  # 1 FP / 2 h
    assert pooled.onset_error.median_ms == pytest.approx(750.0)  # errors 500, 1000 ms


def test_false_alarm_causes_by_hand() -> None:
    spans = [
        Span("plm", 100.0, 102.0),
        Span("voluntary", 104.0, 110.0),
        Span("cramp", 500.0, 530.0),
    ]
    # 103.0 lies within 2 s of both plm and voluntary; nearest start wins:
    # |103-100| = 3, |103-104| = 1 → voluntary.  531.0 is only near the cramp → "cramp".
    # 101.0 → plm.  2000.0 → nothing.
    fas = [ep(103.0), ep(531.0), ep(101.0), ep(2000.0)]
    assert false_alarm_causes(fas, spans) == {"cramp": 1, "none": 1, "plm": 1, "voluntary": 1}


@settings(max_examples=60, deadline=None)
@given(
    truth=st.lists(st.floats(0.0, 10_000.0), max_size=8),
    det=st.lists(st.tuples(st.floats(0.0, 10_050.0), st.booleans()), max_size=12),
)
def test_cramp_counts_are_consistent(truth: list[float], det: list[tuple[float, bool]]) -> None:
    onsets = sorted(truth)
    ends = [t + 30.0 for t in onsets]
    eps = [ep(t, c) for t, c in det]
    score = match_cramps(eps, onsets, ends, 36_000.0)
    n_conf = sum(c for _, c in det)
    assert score.tp + score.fn == len(onsets)
    assert score.tp + score.fp == n_conf
    assert score.n_cleared == len(det) - n_conf
    assert len({m.truth_index for m in score.matches}) == score.tp
    for m in score.matches:
        assert -2.0 <= m.onset_error_s <= 30.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10_000.0), min_size=1, max_size=8, unique=True))
def test_detections_at_true_onsets_score_perfectly(truth: list[float]) -> None:
    onsets = sorted(truth)
    score = match_cramps([ep(t) for t in onsets], onsets, [t + 20 for t in onsets], 36_000.0)
    assert score.sensitivity == 1.0 and score.precision == 1.0
    assert score.onset_error.median_abs_ms == 0.0


# --------------------------------------------------------------------------- bursts


def test_match_onsets_by_hand() -> None:
    eps = [ep(1.2, False), ep(4.4, False), ep(9.1, True), ep(9.3, False), ep(15.0, False)]
    score = match_onsets(eps, [1.0, 5.0, 9.0], 20.0, tolerance_s=0.5)
    # 1.2↔1.0 (0.2 s), 9.1↔9.0 (0.1 s); 4.4 is 0.6 s from 5.0: out of tolerance
    assert score.hits == 2
    assert score.missed == (5.0,)
    assert score.false_onsets == (4.4, 9.3, 15.0)
    assert score.onset_sensitivity == pytest.approx(2 / 3)
    assert score.onset_error.median_abs_ms == pytest.approx(150.0)
    assert score.onset_error.median_ms == pytest.approx(150.0)
    assert score.cramps_raised == 1  # the episode at 9.1 confirmed
    assert score.n_episodes == 5
    assert score.count_error is None


def test_burst_count_only() -> None:
    score = match_onsets(
        [ep(1.0, False), ep(5.0, False), ep(8.0, False)], None, 30.0, burst_count=5
    )
    assert score.count_labelled == 5 and score.count_detected == 3
    assert score.count_error == -2
    assert score.false_onsets == () and score.missed == ()


def test_unlabelled_recording_only_counts_cramps() -> None:
    score = match_onsets([ep(1.0, True), ep(5.0, False)], None, 10.0)
    assert score.count_error is None and score.onset_sensitivity is None
    assert score.cramps_raised == 1 and score.n_episodes == 2


def test_pool_bursts() -> None:
    a = match_onsets([ep(1.1, False)], [1.0, 2.0], 10.0)
    b = match_onsets([ep(1.0, False)] * 4, None, 10.0, burst_count=6)
    c = match_onsets([ep(3.0, True)], None, 10.0)
    pooled = pool_burst_scores([a, b, c])
    assert (pooled.n_labelled, pooled.hits, len(pooled.missed)) == (2, 1, 1)
    assert (pooled.count_labelled, pooled.count_detected, pooled.count_error) == (6, 4, -2)
    assert pooled.cramps_raised == 1
    assert pooled.duration_s == 30.0
