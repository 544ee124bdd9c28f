"""The volatility forecast: GARCH(1,1) + ridge, combined, scored, and used by the one signal.

A market with a known GARCH process checks the fit and the scores; the causality test rewrites
the future; the strategy tests change only the forecast (a fitted model with a higher level,
plain data) and check what the signal does with it; the degradation tests remove the part the
way it goes missing in the field (an old artifact, ``arch`` not importable).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_integration.artifacts import METADATA_FILE, seal
from ml_integration.candles import epoch_seconds
from ml_integration.evaluation import qlike, r2_log_volatility, volatility_report
from ml_integration.features import compute_feature_matrix
from ml_integration.strategy import MLTradingStrategy
from ml_integration.synthetic import garch_candles, planted_edge_candles
from ml_integration.volatility import (
    VOL_WINDOW,
    GarchParams,
    VolatilityModel,
    log_returns,
    train_volatility,
    vol_target_scale,
)
from tests.ml_integration.conftest import TINY

_TRUE = {"omega": 2e-6, "alpha": 0.08, "beta": 0.90}
_NO_LSTM = replace(TINY, use_lstm=False)


@pytest.fixture(scope="module")
def garch_market() -> Any:
    return garch_candles(8000, seed=3, **_TRUE)


@pytest.fixture(scope="module")
def garch_fit(garch_market) -> tuple[VolatilityModel, dict[str, Any]]:
    return train_volatility(garch_market, horizon=5, timeframe_sec=3600)


def _returns(frame) -> np.ndarray:
    return log_returns(frame["close"].to_numpy(), epoch_seconds(frame.index), 3600)


def test_garch_fit_finds_the_known_process_and_beats_the_naive_forecasts(garch_fit):
    model, report = garch_fit
    fitted = report["validation_garch"]  # fit on the training slice only
    assert fitted["alpha"] == pytest.approx(_TRUE["alpha"], abs=0.03)
    assert fitted["beta"] == pytest.approx(_TRUE["beta"], abs=0.04)
    assert fitted["omega"] == pytest.approx(_TRUE["omega"], rel=0.6)
    test = report["test"]
    for name in ("garch", "combined"):
        assert test[name]["qlike"] < test["last_realised"]["qlike"]
        assert test[name]["qlike"] < test["long_run_mean"]["qlike"]
        assert test[name]["qlike_gain_ci"][0] > 0, f"{name}: better than the long-run mean, beyond noise"
        assert test[name]["r2_log"] > 0 > test["long_run_mean"]["r2_log"] - 1e-9
        assert test[name]["mz_r2_log"] > 0.05 and test["long_run_mean"]["mz_r2_log"] == 0
    assert 0.0 <= report["weight_garch"] <= 1.0 and report["method"] == model.method


def test_serving_recursion_is_arch_s_recursion_with_the_fitted_parameters(garch_market, garch_fit):
    """The finite-window recursion serving runs (no ``arch`` at serving) gives arch's own
    forecast with the same fixed parameters."""
    from arch import arch_model

    model, _ = garch_fit
    g = model.garch
    returns = _returns(garch_market)[1:]
    fixed = arch_model(returns * 100, mean="Zero", vol="GARCH", p=1, q=1, rescale=False).fix(
        [g.omega * 1e4, g.alpha, g.beta]
    )
    arch_variance = fixed.forecast(horizon=model.horizon, reindex=False).variance.to_numpy()[-1] / 1e4
    ours = g.next_variance(returns)[-1]
    assert ours == pytest.approx(arch_variance[0], rel=1e-6)
    mean = g.mean_variance(np.array([ours]), model.horizon)[0]
    assert mean == pytest.approx(arch_variance.mean(), rel=1e-6)


def test_forecast_at_t_ignores_every_later_bar_and_serving_gives_the_batch_number(garch_market, garch_fit):
    model, _ = garch_fit
    values = garch_market.to_numpy()
    t = 6000
    before = model.components(values, _returns(garch_market))
    future = garch_market.copy()
    rng = np.random.default_rng(0)
    shock = np.exp(np.cumsum(rng.normal(0, 0.05, len(future) - t - 1)))
    future.iloc[t + 1 :, :4] = future.iloc[t + 1 :, :4].to_numpy() * shock[:, None]
    after = model.components(future.to_numpy(), _returns(future))
    for name in ("garch", "ml", "combined"):
        np.testing.assert_array_equal(before[name][: t + 1], after[name][: t + 1])
        # the rewrite is strong enough to move every later forecast it reaches
        assert np.abs(np.log(after[name][t + 10 :] / before[name][t + 10 :])).mean() > 0.1
    served = model.forecast(garch_market.iloc[: t + 1])
    assert served is not None and served.sigma == pytest.approx(before["combined"][t], rel=1e-12)
    assert served.annualised == pytest.approx(served.sigma * math.sqrt(365.25 * 24), rel=1e-9)


def test_a_gap_in_the_window_gives_no_forecast(garch_market, garch_fit):
    model, _ = garch_fit
    window = garch_market.iloc[-(VOL_WINDOW + 1) :].drop(garch_market.index[-50])
    assert model.forecast(window) is None


@pytest.mark.parametrize("beta", [0.9, 1.0])
def test_the_recursion_holds_for_an_integrated_fit(beta):
    """arch can fit beta = 1 (an integrated GARCH): the window recursion is still the plain
    loop σ² ← omega + alpha·r² + beta·σ², started from the long-run variance."""
    params = GarchParams(omega=4e-9, alpha=0.05 if beta < 1 else 0.0, beta=beta, long_run_variance=2e-5)
    returns = np.random.default_rng(5).normal(0.0, 0.004, VOL_WINDOW)
    variance = params.long_run_variance
    for r in returns:
        variance = params.omega + params.alpha * r * r + params.beta * variance
    assert params.next_variance(returns)[-1] == pytest.approx(variance, rel=1e-9)


def test_qlike_and_r2_score_a_perfect_forecast_best():
    rng = np.random.default_rng(1)
    realised = np.exp(rng.normal(-5, 0.5, 500))
    assert qlike(realised, realised) == pytest.approx(0.0, abs=1e-12)
    assert r2_log_volatility(realised, realised) == pytest.approx(1.0)
    # under-prediction of risk costs more than over-prediction by the same factor
    assert qlike(realised, realised * 0.5) > qlike(realised, realised * 2.0) > 0
    report = volatility_report(realised, realised * 1.1, baseline_vol=np.full(500, realised.mean()))
    assert report.qlike_gain is not None and report.qlike_gain > 0
    assert report.qlike_ci[0] <= report.qlike <= report.qlike_ci[1]


# --- the one signal -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edge_strategy() -> MLTradingStrategy:
    """A strategy that trades (a planted edge), with its volatility part."""
    strategy = MLTradingStrategy({"target_periods": 1}, model_config=_NO_LSTM)
    strategy.train_strategy(planted_edge_candles(4000, edge=0.5, seed=1), synthetic=True)
    assert strategy.volatility is not None
    return strategy


def _twin(
    strategy: MLTradingStrategy, volatility: VolatilityModel | None, **config: Any
) -> MLTradingStrategy:
    twin = MLTradingStrategy({**strategy.config.__dict__, **config})
    twin.predictor, twin.synthetic, twin.volatility = strategy.predictor, strategy.synthetic, volatility
    return twin


def _signals(strategy: MLTradingStrategy, frame, count: int = 150) -> list[Any]:
    features = compute_feature_matrix(frame.to_numpy(), epoch_seconds(frame.index), 3600)
    return [
        strategy.generate_signal(
            frame.iloc[: s + 1], "X/USDT", now=frame.index[s].timestamp() + 3600, features=features[: s + 1]
        )
        for s in range(len(frame) - count, len(frame))
    ]


@pytest.fixture(scope="module")
def unseen() -> Any:
    return planted_edge_candles(1500, edge=0.5, seed=2, start="2024-01-01")


def test_stop_widens_and_leverage_never_rises_when_the_forecast_rises(edge_strategy, unseen):
    model = edge_strategy.volatility
    assert model is not None
    calm = _signals(_twin(edge_strategy, model), unseen)
    wild = _signals(_twin(edge_strategy, replace(model, level=model.level + math.log(4.0))), unseen)
    both = [(c, w) for c, w in zip(calm, wild, strict=True) if c.stop_loss and w.stop_loss]
    assert len(both) >= 15, "the planted edge should trade"
    for c, w in both:
        assert c.entry_price == w.entry_price
        assert w.volatility_forecast["sigma"] == pytest.approx(2 * c.volatility_forecast["sigma"])
        assert abs(w.entry_price - w.stop_loss) == pytest.approx(2 * abs(c.entry_price - c.stop_loss))
        assert w.leverage <= c.leverage


def test_size_is_the_conservative_kelly_cut_by_the_vol_target_never_raised(edge_strategy, unseen):
    model = edge_strategy.volatility
    whole = _signals(_twin(edge_strategy, model, vol_target=1e6), unseen)  # target never binds
    cut = _signals(_twin(edge_strategy, model, vol_target=0.1), unseen)  # below the market's vol
    assert any(s.kelly_fraction > 0 for s in whole)
    for w, c in zip(whole, cut, strict=True):
        assert c.kelly_fraction <= w.kelly_fraction <= edge_strategy.config.max_kelly
        scale = 0.1 / c.volatility_forecast["annualised"]
        assert scale < 1
        assert c.kelly_fraction == pytest.approx(w.kelly_fraction * scale, abs=1e-15)
        if w.kelly_fraction == 0:
            assert c.kelly_fraction == 0 and c.action == "hold"
    assert vol_target_scale(0.05, 0.6) == 1.0 and vol_target_scale(1.2, 0.6) == 0.5


def test_signal_and_answer_carry_the_forecast_and_its_method(edge_strategy, unseen):
    signal = _signals(edge_strategy, unseen, count=1)[0]
    body = signal.to_dict()["volatility_forecast"]
    assert body["method"].startswith("GARCH(1,1) x") and body["sigma"] > 0 and body["horizon"] == 1
    assert "forecast volatility" in signal.reason
    assert edge_strategy.training_report is not None
    assert set(edge_strategy.training_report["volatility"]["test"]) == {
        "garch", "ml", "combined", "last_realised", "long_run_mean"
    }  # fmt: skip


def _save_without_volatility(strategy: MLTradingStrategy, folder: Path) -> Path:
    """What a version saved before the volatility part looks like: sealed without the file."""
    strategy.save_strategy(folder, version="old")
    (folder / "volatility.json").unlink()
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata.pop("artifacts")
    seal(folder, metadata)
    return folder


def test_old_artifact_without_volatility_loads_with_one_line_and_serves_as_before(
    edge_strategy, unseen, tmp_path, caplog
):
    folder = _save_without_volatility(edge_strategy, tmp_path / "old")
    with caplog.at_level(logging.WARNING):
        loaded = MLTradingStrategy().load_strategy(folder)
    lines = [r for r in caplog.records if "no volatility forecast" in r.getMessage()]
    assert len(lines) == 1 and loaded.volatility is None
    before = _signals(_twin(edge_strategy, None), unseen, count=40)
    served = _signals(loaded, unseen, count=40)
    assert [s.to_dict() | {"model_version": None} for s in served] == [s.to_dict() for s in before]
    assert all(s.volatility_forecast is None for s in served)
    # and a model saved with the part reads it back
    again = MLTradingStrategy().load_strategy(edge_strategy.save_strategy(tmp_path / "new"))
    assert again.volatility == edge_strategy.volatility


@pytest.mark.slow
def test_arch_missing_trains_with_one_line_and_serves_as_before(candles, monkeypatch, caplog):
    candles = candles.iloc[:1200]  # two trainings: keep them small
    with_arch = MLTradingStrategy(model_config=_NO_LSTM)
    with_arch.train_strategy(candles, synthetic=True)
    monkeypatch.setitem(sys.modules, "arch", None)  # `import arch` now fails, as when not installed
    without = MLTradingStrategy(model_config=_NO_LSTM)
    with caplog.at_level(logging.WARNING):
        report = without.train_strategy(candles, synthetic=True)
    lines = [r for r in caplog.records if r.name == "ml_integration.volatility"]
    assert len(lines) == 1 and "arch is not installed" in lines[0].getMessage()
    assert without.volatility is None and "arch" in report["volatility"]["skipped"]
    as_before = _twin(with_arch, None)
    now = candles.index[-1].timestamp() + 3600
    for end in range(len(candles) - 30, len(candles)):
        window = candles.iloc[: end + 1]
        got = without.generate_signal(window, "BTC/USDT", now=now).to_dict()
        assert got == as_before.generate_signal(window, "BTC/USDT", now=now).to_dict()
        assert got["volatility_forecast"] is None


def test_a_model_trained_without_arch_loads_quietly(edge_strategy, tmp_path, caplog):
    """A serve-only install trains without ``arch``: training says once why it skipped the
    forecast; every worker's load of that model stays quiet (it is not an old artifact)."""
    strategy = _twin(edge_strategy, None)
    strategy.training_report = {
        **(strategy.training_report or {}),
        "volatility": {"skipped": "volatility forecast skipped: arch is not installed"},
    }
    folder = strategy.save_strategy(tmp_path / "serve-only", version="serve-only")
    assert not (folder / "volatility.json").exists()
    with caplog.at_level(logging.WARNING):
        loaded = MLTradingStrategy().load_strategy(folder)
    assert loaded.volatility is None
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_skipped_forecast_is_said_once_per_process(caplog):
    """A backtest trains one model per window: the reason to skip is logged once, not per window."""
    from ml_integration.synthetic import synthetic_candles
    from ml_integration.volatility import train_or_skip

    short = synthetic_candles(43, seed=5, n_gaps=0)  # too few rows, a length no other test uses
    with caplog.at_level(logging.WARNING):
        first, why = train_or_skip(short, horizon=5, timeframe_sec=3600)
        second, again = train_or_skip(short, horizon=5, timeframe_sec=3600)
    assert first is None and second is None and why == again and "skipped" in why["skipped"]
    assert [r.getMessage() for r in caplog.records].count(why["skipped"]) == 1
