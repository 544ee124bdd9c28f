"""Numbers the strategy acts on earn their place: on a market with a planted edge, the served
probability and confidence are calibrated (monotone by decile on bars the model never saw) and
Kelly trades; on a market with none, Kelly is zero on every bar; a prediction log that stops
supporting the edge cuts Kelly to zero."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ml_integration.calibration import ConfidenceCalibrator
from ml_integration.candles import epoch_seconds
from ml_integration.evaluation import calibration_by_decile
from ml_integration.features import compute_feature_matrix
from ml_integration.labels import make_labels
from ml_integration.strategy import MLTradingStrategy, kelly_fraction
from ml_integration.synthetic import planted_edge_candles
from tests.ml_integration.conftest import TINY

_CONFIG = replace(TINY, use_lstm=False)
#: Bars of the unseen stretch that are scored one signal at a time.
_SCORED = 300


def _train(edge: float, *, seed: int = 1, **config: Any) -> MLTradingStrategy:
    strategy = MLTradingStrategy({"target_periods": 1, **config}, model_config=_CONFIG)
    strategy.train_strategy(planted_edge_candles(4000, edge=edge, seed=seed), synthetic=True)
    return strategy


def _unseen(edge: float):
    """The same market later on (another seed): bars no model was fit or calibrated on."""
    return planted_edge_candles(3000, edge=edge, seed=2, start="2024-01-01")


def _signals(strategy: MLTradingStrategy, frame) -> list[Any]:
    features = compute_feature_matrix(frame.to_numpy(), epoch_seconds(frame.index), 3600)
    out = []
    for s in range(len(frame) - _SCORED, len(frame)):
        now = frame.index[s].timestamp() + 3600
        out.append(
            strategy.generate_signal(frame.iloc[: s + 1], "X/USDT", now=now, features=features[: s + 1])
        )
    return out


@pytest.fixture(scope="module")
def edge_strategy() -> MLTradingStrategy:
    return _train(0.5)


def _monotone_within_noise(bins) -> None:
    """No decile is significantly below the one before it (their 95% intervals overlap), and
    the top decile is above the bottom one's interval: a real, rising slope."""
    for before, after in itertools.pairwise(bins):
        assert after.observed_ci[1] >= before.observed_ci[0], [b.observed for b in bins]
    assert bins[-1].observed > bins[0].observed_ci[1], [b.observed for b in bins]


@pytest.mark.slow  # trains a model on 4,000 bars and scores 3,000 more
def test_planted_edge_gives_monotone_calibration_of_probability_and_confidence(edge_strategy):
    frame = _unseen(0.5)
    p = edge_strategy.predictor.direction_probabilities(frame)
    labels = make_labels(frame, 1, timeframe_sec=3600)
    rows = np.isfinite(p) & labels.valid
    y, p = labels.direction[rows].astype(float), p[rows]
    _monotone_within_noise(calibration_by_decile(y, p))
    fitted = edge_strategy.predictor.fitted_
    confidence = fitted.confidence(p)
    right = ((p >= 0.5) == (y == 1)).astype(float)
    _monotone_within_noise(calibration_by_decile(right, confidence))
    # calibrated: the confidence says how often the side is right, within a few points overall
    # and in every decile (its Wilson interval, widened by the spread of the decile's own
    # predictions): the calibrators were fit on out-of-fold predictions, not on rows the
    # learners had seen, so the top deciles are not over-confident.
    assert abs(float(confidence.mean()) - float(right.mean())) < 0.03
    for b in calibration_by_decile(right, confidence):
        assert b.observed_ci[0] - 0.02 <= b.mean_predicted <= b.observed_ci[1] + 0.02, b


@pytest.mark.slow
def test_planted_edge_trades_with_kelly_from_its_conservative_edge(edge_strategy):
    signals = _signals(edge_strategy, _unseen(0.5))
    traded = [s for s in signals if s.kelly_fraction > 0]
    assert len(traded) >= _SCORED // 10, "a validated edge should trade"
    for s in traded:
        assert s.action in ("buy", "sell") and s.stop_loss is not None
        assert s.kelly_fraction <= edge_strategy.config.max_kelly
        # sized from a p no larger than the combined one: never more than plain Kelly
        p_side = s.combined_probability if s.action == "buy" else 1 - s.combined_probability
        assert s.kelly_fraction <= 0.25 * kelly_fraction(p_side, 1.0) + 1e-12
    assert all(s.action == "hold" for s in signals if s.kelly_fraction == 0)


class _Sentiment:
    def __init__(self, score: float):
        self.score = score

    def get_combined_sentiment(self, symbol: str, *, allow_fetch: bool = True) -> dict[str, Any]:
        return {"combined_sentiment": self.score, "no_data": False}


@pytest.mark.slow
def test_sentiment_against_the_validated_side_gives_no_stake(edge_strategy):
    """Sentiment that turns the combined side against the model is sized from the mirror of the
    model's interval: a stake only where the model's own side is validated to be *wrong* (its
    upper bound below a coin flip), hold everywhere else. Agreeing sentiment keeps the model's
    stake."""
    frame = _unseen(0.5)
    plain = _signals(edge_strategy, frame)
    for score in (-1.0, 1.0):
        strategy = MLTradingStrategy(
            {**edge_strategy.config.__dict__, "use_sentiment": True}, sentiment=_Sentiment(score)
        )
        strategy.predictor = edge_strategy.predictor
        strategy.volatility = edge_strategy.volatility  # the same fitted model
        for before, after in zip(plain, _signals(strategy, frame), strict=True):
            model_side = "buy" if before.ml_probability >= 0.5 else "sell"
            combined_side = "buy" if after.combined_probability >= 0.5 else "sell"
            if combined_side != model_side:  # sentiment turned the side
                high = edge_strategy.predictor.fitted_.confidence.win_rate_bounds(before.ml_probability)[1]
                assert after.kelly_fraction == 0.0 or high < 0.5
                assert after.kelly_fraction == 0.0 or after.action != model_side
            elif before.kelly_fraction > 0 and (score > 0) == (model_side == "buy"):
                assert after.action == model_side and after.kelly_fraction > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 3])
def test_no_edge_market_gives_kelly_zero_on_every_bar(seed):
    """Even with no cost and no minimum edge, a random walk never earns a stake: the out-of-sample
    win rate's lower bound is not above a coin flip — on the bars served, and at every
    probability the model could ever serve (every margin bucket of the confidence map)."""
    strategy = _train(0.0, seed=seed, round_trip_cost=0.0, min_edge=0.0)
    signals = _signals(strategy, _unseen(0.0))
    assert any(abs(s.combined_probability - 0.5) > 1e-3 for s in signals)  # it does lean, yet:
    assert [s.kelly_fraction for s in signals] == [0.0] * _SCORED
    assert {s.action for s in signals} == {"hold"}
    confidence = strategy.predictor.fitted_.confidence
    lows = [confidence.win_rate_bounds(p)[0] for p in np.linspace(0.005, 0.995, 199)]
    assert max(lows) <= 0.5, confidence


@pytest.mark.slow
def test_recent_accuracy_in_the_log_cuts_kelly(edge_strategy):
    asked: list[str] = []

    def failing(symbol: str) -> tuple[int, int]:
        asked.append(symbol)
        return (20, 60)  # a third right lately: the edge no longer holds

    frame = _unseen(0.5)
    baseline = _signals(edge_strategy, frame)
    cut = MLTradingStrategy(edge_strategy.config.__dict__, recent_accuracy=failing)
    cut.predictor = edge_strategy.predictor
    cut.volatility = edge_strategy.volatility  # the same fitted model
    signals = _signals(cut, frame)
    assert asked and set(asked) == {"X/USDT"}
    assert any(s.kelly_fraction > 0 for s in baseline)
    assert all(s.kelly_fraction == 0.0 and s.action == "hold" for s in signals)
    assert "recent accuracy" in signals[0].reason
    too_few = MLTradingStrategy(edge_strategy.config.__dict__, recent_accuracy=lambda symbol: (0, 5))
    too_few.predictor = edge_strategy.predictor
    too_few.volatility = edge_strategy.volatility  # the same fitted model
    assert [s.kelly_fraction for s in _signals(too_few, frame)] == [s.kelly_fraction for s in baseline]


def test_confidence_calibrator_is_monotone_and_pools_noisy_buckets():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 0.7, 5000)
    went_up = (rng.random(5000) < p).astype(float)
    calibrator = ConfidenceCalibrator.fit(p, went_up)
    grid = np.linspace(0.0, 1.0, 101)
    values = calibrator(grid)
    assert np.all(np.diff(values[51:]) >= 0) and np.all(np.diff(values[:50]) <= 0)  # symmetric in the side
    assert calibrator(0.5) == pytest.approx(0.5, abs=0.05) and calibrator(0.69) == pytest.approx(
        0.69, abs=0.05
    )
    low, high, n = calibrator.win_rate_bounds(0.69)
    assert low < 0.69 < high and n >= 500
    # a bucket that is less right than the one below it is pooled with it
    calibrator = ConfidenceCalibrator.fit(
        np.array([0.55] * 40 + [0.65] * 40), np.array([1.0] * 30 + [0.0] * 10 + [1.0] * 20 + [0.0] * 20)
    )
    assert calibrator.wins == (50, 50) and calibrator.counts == (80, 80)
    assert ConfidenceCalibrator.from_dict(calibrator.to_dict()) == calibrator
