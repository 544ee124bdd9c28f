"""The model tournament: a planted edge is won by a richer candidate, a market without one by
"no model" or the plain baseline, ties go to the simpler candidate, and what training serves
and saves is the winner with its evidence."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from ml_integration.store import load_latest_strategy, save_version
from ml_integration.strategy import MLTradingStrategy
from ml_integration.synthetic import planted_edge_candles, planted_week_candles
from ml_integration.tournament import (
    CANDIDATES,
    COMBINER_CANDIDATES,
    CandidateResult,
    choose_winner,
    score_candidates,
)
from tests.ml_integration.conftest import TINY

#: Tiny sizes, and only what the tournament's decision needs: 3 folds (the first only fits what
#: later folds' blends and calibrators learn from), no final refit, 2 calibration folds. Measured
#: in CPU seconds (wall time moves with the shared machine's load), the two module fixtures cost
#: 12 s against 21.6 s with ``TINY``'s sizes and the default 4 folds, and decide the same: the week
#: edge's winner still beats the baseline beyond the interval (paired difference [0.011, 0.067]),
#: while 1,800 bars instead of 2,400 no longer separate them. The zoo's combiners (three more
#: models per fold) have their own test below.
CONFIG = replace(
    TINY, use_lstm=False, n_estimators=20, gb_max_iter=20, tournament_folds=3, calibration_folds=2,
    final_fit=False, tournament=tuple(c for c in CANDIDATES if c not in COMBINER_CANDIDATES),
)  # fmt: skip
BARS = 2400


def _train(frame):  # type: ignore[no-untyped-def]
    """The strategy, and the stages its training reported (the progress bar's and the API's)."""
    strategy, stages = MLTradingStrategy(model_config=CONFIG), []
    strategy.train_strategy(frame, synthetic=True, symbol="BTC/USDT", timeframe="1h", on_stage=stages.append)
    return strategy, stages


@pytest.fixture(scope="module")
def week_frame():  # type: ignore[no-untyped-def]
    return planted_week_candles(BARS, seed=1)


@pytest.fixture(scope="module")
def week_edge(week_frame):  # type: ignore[no-untyped-def]
    return (week_frame, *_train(week_frame))


@pytest.fixture(scope="module")
def no_edge():  # type: ignore[no-untyped-def]
    frame = planted_edge_candles(BARS, edge=0.0, seed=1)
    return (frame, *_train(frame))


def _now(frame) -> float:  # type: ignore[no-untyped-def]
    return float(frame.index[-1].timestamp() + 3600)


@pytest.mark.slow
def test_a_planted_edge_the_baseline_cannot_see_is_won_by_a_richer_candidate(week_edge, tmp_path):
    frame, strategy, _ = week_edge
    tournament = strategy.training_report["tournament"]
    names = {c["name"] for c in tournament["candidates"]}
    assert {"no_model", "baseline_forest", "default_blend", "blend+htf", "blend+week"} == names
    winner = tournament["winner"]
    assert winner not in ("no_model", "baseline_forest"), tournament["reason"]
    by_name = {c["name"]: c for c in tournament["candidates"]}
    # the richer winner beats the plain baseline beyond the paired interval
    assert by_name["baseline_forest"]["log_loss"] > by_name[winner]["log_loss"]
    assert by_name["baseline_forest"]["delta_log_loss_ci"][0] > 0
    for row in tournament["candidates"]:  # every candidate carries its intervals
        lo, hi = row["log_loss_ci"]
        assert lo <= row["log_loss"] <= hi and row["delta_log_loss_ci"][0] <= row["delta_log_loss_ci"][1]
    # the week's calendar is what the baseline's hour of day cannot see: its family helps
    assert tournament["families"]["week"]["delta_log_loss"] < 0
    signal = strategy.generate_signal(frame, "BTC/USDT", now=_now(frame))
    assert signal.ml_probability is not None
    # what is served is the winner: its probability is the one the tournament scored
    assert strategy.training_report["served_direction"] == winner
    # the evidence travels in the model directory's metadata file, for whoever promotes it
    folder = save_version(strategy, tmp_path, "BTC/USDT", "1h", version="v1")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["model"]["tournament"]["winner"] == winner
    loaded = load_latest_strategy(tmp_path, "BTC/USDT", "1h")
    again = loaded.generate_signal(frame, "BTC/USDT", now=_now(frame))
    assert again.ml_probability == pytest.approx(signal.ml_probability, abs=1e-12)


@pytest.mark.slow
def test_a_market_without_edge_is_won_by_no_model_or_the_baseline(no_edge, tmp_path):
    frame, strategy, _ = no_edge
    tournament = strategy.training_report["tournament"]
    assert tournament["winner"] in ("no_model", "baseline_forest"), tournament["reason"]
    signal = strategy.generate_signal(frame, "BTC/USDT", now=_now(frame))
    if tournament["winner"] == "no_model":
        # the strategy says so, and makes no call: the engine's fallback rule decides
        assert signal.action == "hold" and signal.ml_probability is None and signal.kelly_fraction == 0
        assert signal.reason.startswith("no model:")
        save_version(strategy, tmp_path, "BTC/USDT", "1h", version="v1")
        loaded = load_latest_strategy(tmp_path, "BTC/USDT", "1h")
        assert loaded.generate_signal(frame, "BTC/USDT", now=_now(frame)).reason.startswith("no model:")


@pytest.mark.slow
def test_training_reports_its_stages_in_the_order_progress_counts_them(week_edge):
    """The tournament runs before the direction fits: the progress bar and a training job's
    ``progress`` (the API's) list it there, so they only ever move forward."""
    from ml_integration.training import _Progress

    _, _, stages = week_edge
    order = [_Progress.STAGES.index(stage) for stage in stages]
    assert "tournament" in stages and "random forest" in stages
    assert order == sorted(order), stages


def _result(name: str, simplicity: int, loss: float, ci: tuple[float, float]) -> CandidateResult:
    delta = 0.0 if ci == (0.0, 0.0) else (ci[0] + ci[1]) / 2
    return CandidateResult(name, simplicity, "", loss, (loss - 0.01, loss + 0.01), 0.25, (0.24, 0.26), 0.5,
                           (0.49, 0.51), delta, ci, 0.0)  # fmt: skip


def test_ties_go_to_the_simpler_candidate_and_a_clear_win_to_the_better():
    best = _result("stacking", 5, 0.690, (0.0, 0.0))
    tied = [
        best,
        _result("no_model", 0, 0.693, (-0.001, 0.007)),
        _result("default_blend", 2, 0.691, (-0.002, 0.004)),
    ]
    winner, reason = choose_winner(tied)
    assert winner == "no_model" and "ties go to the simpler" in reason
    beaten = [
        best,
        _result("no_model", 0, 0.699, (0.004, 0.014)),
        _result("default_blend", 2, 0.691, (-0.002, 0.004)),
    ]
    assert choose_winner(beaten)[0] == "default_blend"
    clear = [
        best,
        _result("no_model", 0, 0.699, (0.004, 0.014)),
        _result("default_blend", 2, 0.695, (0.001, 0.009)),
    ]
    winner, reason = choose_winner(clear)
    assert winner == "stacking" and "every simpler candidate is worse beyond the interval" in reason


def test_scores_are_paired_on_the_same_rows():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.5).astype(float)
    informative = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.05, len(y)), 0.01, 0.99)
    results = {r.name: r for r in score_candidates(
        y, {"no_model": np.full(len(y), 0.5), "default_blend": informative}, horizon=5
    )}  # fmt: skip
    assert results["default_blend"].delta_log_loss == 0.0
    assert results["no_model"].delta_log_loss > 0 and results["no_model"].delta_log_loss_ci[0] > 0
    assert results["no_model"].auc == 0.5 and results["default_blend"].auc > 0.7


@pytest.mark.slow
def test_a_winning_zoo_combiner_is_served_through_the_ensemble_and_survives_saving(week_frame, tmp_path):
    """When a zoo combiner wins, the strategy serves the combiner's probability (the ensemble
    predictor), calibrated on the tournament's evidence, and reloads it from its directory
    (without a final fit, as ``CONFIG``: the zoo refit on the rows before the test slice while
    the combiner reads the tournament's out-of-fold rows beyond them)."""
    frame = week_frame
    config = replace(CONFIG, tournament=("no_model", "soft", "stacking"))
    strategy = MLTradingStrategy(model_config=config)
    strategy.train_strategy(frame, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    assert strategy.training_report["tournament"]["winner"] in ("soft", "stacking")
    assert type(strategy.predictor).__name__ == "EnsemblePricePrediction"
    ensemble = strategy.predictor.ensemble_
    signal = strategy.generate_signal(frame, "BTC/USDT", now=_now(frame))
    matrix, _, _ = strategy.predictor.feature_tail(frame)
    assert signal.ml_probability == pytest.approx(float(ensemble.predict_proba(matrix)[-1]))
    save_version(strategy, tmp_path, "BTC/USDT", "1h", version="v1")
    loaded = load_latest_strategy(tmp_path, "BTC/USDT", "1h")
    assert loaded.generate_signal(frame, "BTC/USDT", now=_now(frame)).ml_probability == pytest.approx(
        signal.ml_probability
    )
