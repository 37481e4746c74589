"""The re-selection's rules (pipeline.selection) without a cluster: candidates, ranking, the choice."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from pipeline.selection import (
    Candidate,
    choose,
    pick_candidates,
    rank_candidates,
    score_pairs,
    selection_markdown,
    selection_table,
    start_trial,
)
from pipeline.trials import TrialRow
from schemas.config import TuneConfig

NAN = math.nan


def _row(trial_id: str, best: float, batch_size: int) -> TrialRow:
    return TrialRow(trial_id, f"run-{trial_id}", {"batch_size": batch_size}, best, 3, "finished", 0.5)


def test_candidates_are_the_top_distinct_scored_trials_in_search_order():
    ranked = [_row("a", 0.9, 32), _row("b", 0.9, 32), _row("c", 0.8, 64), _row("d", NAN, 128), _row("e", 0.7, 16)]
    assert [t.trial_id for t in pick_candidates(ranked, 3)] == ["a", "c", "e"]  # b repeats a; d reported nothing
    assert [t.trial_id for t in pick_candidates(ranked, 2)] == ["a", "c"]


def test_the_start_trial_is_always_a_candidate_in_the_last_place():
    ranked = [_row("a", 0.9, 32), _row("b", 0.85, 64), _row("c", 0.8, 16), _row("s", 0.7, 128)]
    start = ranked[3]
    assert [t.trial_id for t in pick_candidates(ranked, 3, keep=start)] == ["a", "b", "s"]
    assert [t.trial_id for t in pick_candidates(ranked, 2, keep=ranked[0])] == ["a", "b"]  # already in: no change
    twin = _row("s2", 0.95, 128)  # a trial with the start's sample already among the top: no second copy
    assert [t.trial_id for t in pick_candidates([twin, *ranked], 2, keep=start)] == ["s2", "a"]
    failed = _row("f", NAN, 8)  # a start trial that reported nothing is not trained again
    assert [t.trial_id for t in pick_candidates(ranked, 2, keep=failed)] == ["a", "b"]
    assert [t.trial_id for t in pick_candidates(ranked[:1], 3, keep=start)] == ["a", "s"]


def test_the_start_trial_is_the_first_created_with_every_start_value():
    rows = [
        TrialRow("x_00003", None, {"batch_size": 64, "lr": 0.01}, 0.9, 3, "finished"),
        TrialRow("x_00000", None, {"batch_size": 64, "lr": 0.003}, 0.7, 3, "finished"),
        TrialRow("x_00001", None, {"batch_size": 64, "lr": 0.003}, 0.8, 3, "finished"),
        TrialRow("x_00002", None, {"batch_size": 32, "lr": 0.003}, 0.8, 3, "finished"),
    ]
    assert start_trial(rows, {"batch_size": 64, "lr": 0.003}).trial_id == "x_00000"
    assert start_trial(rows, {"batch_size": 128}) is None
    assert start_trial(rows, {"cell": "gru"}) is None  # a key no sample holds
    assert start_trial(rows, {}) is None  # nothing started from the config


def test_the_start_candidate_is_marked_in_the_tables():
    rows = [_row("a", 0.9, 32), _row("s", 0.7, 64)]
    cands = score_pairs(rows, [(0, 0, 0.7, 0.5), (1, 0, 0.8, 0.4)], splits=1, start=rows[1])
    assert [c.start for c in cands] == [False, True]
    ranked = rank_candidates(cands, "max")
    assert choose(ranked).trial.trial_id == "s"  # the start point kept its place by the better mean
    assert "| s (start) | 0.7000 | 0.8000 |" in selection_markdown(ranked, "val_accuracy", ranked[0])
    assert selection_table(ranked, "val_accuracy")["start"] == [True, False]


def test_pairs_land_on_their_candidate_and_split():
    rows = [_row("a", 0.9, 32), _row("b", 0.8, 64)]
    cands = score_pairs(rows, [(1, 0, 0.7, 0.6), (0, 1, 0.8, 0.4), (0, 0, 0.6, 0.5)], splits=2)
    assert cands[0].scores == [0.6, 0.8] and cands[0].losses == [0.5, 0.4]
    assert cands[1].scores[0] == 0.7 and math.isnan(cands[1].scores[1]) and cands[1].scored == 1
    assert cands[0].mean == pytest.approx(0.7) and cands[1].mean == pytest.approx(0.7)


def test_the_best_mean_wins_over_the_search_order_and_ties_go_to_the_lower_loss():
    a, b, c = _row("a", 0.95, 32), _row("b", 0.90, 64), _row("c", 0.85, 128)
    ranked = rank_candidates(
        [
            Candidate(a, [0.70, 0.74], [0.5, 0.5]),
            Candidate(b, [0.76, 0.74], [0.6, 0.6]),
            Candidate(c, [0.76, 0.74], [0.4, 0.5]),
        ],
        "max",
    )
    assert [x.trial.trial_id for x in ranked] == ["c", "b", "a"]
    assert choose(ranked).trial.trial_id == "c"
    by_loss = rank_candidates([Candidate(a, [0.5], []), Candidate(b, [0.4], [])], "min")
    assert by_loss[0].trial.trial_id == "b"


def test_a_candidate_cut_short_ranks_after_those_scored_on_every_split():
    a, b, c = _row("a", 0.95, 32), _row("b", 0.90, 64), _row("c", 0.85, 128)
    ranked = rank_candidates(
        [
            Candidate(a, [0.90, NAN], [0.3, NAN]),
            Candidate(b, [0.70, 0.72], [0.5, 0.5]),
            Candidate(c, [0.71, 0.73], [0.5, 0.5]),
        ],
        "max",
    )
    assert [x.trial.trial_id for x in ranked] == ["c", "b", "a"]
    assert choose(ranked).trial.trial_id == "c"


def test_no_choice_without_two_candidates_scored_alike():
    a, b = _row("a", 0.95, 32), _row("b", 0.90, 64)
    alone = rank_candidates([Candidate(a, [NAN, NAN], [NAN, NAN]), Candidate(b, [0.8, NAN], [0.4, NAN])], "max")
    assert alone[0].trial.trial_id == "b" and choose(alone) is None  # one split of one candidate: no comparison
    assert choose(rank_candidates([Candidate(a, [NAN], [NAN]), Candidate(b, [NAN], [NAN])], "max")) is None
    assert choose([]) is None
    note = selection_markdown(alone, "val_accuracy", None)
    assert "the search's best trial stands" in note and "| b | 0.9000 | 0.8000 |" in note


def test_select_top_of_one_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match="tune.select_top=1 re-scores only the search's own winner; set 0"):
        TuneConfig(select_top=1)
    assert TuneConfig(select_top=0).select_top == 0 and TuneConfig(select_top=4).select_splits == 3
