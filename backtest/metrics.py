"""Trading metrics of an equity curve and its trades, Monte Carlo over the trades, and the
pooled out-of-sample prediction metrics (through ``ml_integration.evaluation``, the project's
one metrics module).

Conventions: the equity curve is marked at every bar's close; returns are bar-to-bar; Sharpe
and Sortino are annualised with the bars in a year (no risk-free rate); the maximum drawdown is
the largest fall from a running peak, as a fraction; Calmar is the annualised return over it. A
*trade* runs from the fill that leaves a flat book to the fill that makes it flat again (or
flips it); its profit is the change of cash plus position at the fill prices, fees included.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from backtest.replay import Fill
from ml_integration.evaluation import block_bootstrap_ci, calibration_by_decile, direction_report
from storage.orders import FLAT

__all__ = [
    "MonteCarlo",
    "TradingMetrics",
    "max_drawdown",
    "monte_carlo",
    "prediction_metrics",
    "trade_returns",
    "trading_metrics",
]

SECONDS_PER_YEAR = 365.25 * 86_400


@dataclass(frozen=True)
class TradingMetrics:
    """One arm's trading figures. A figure that does not apply is None (shown "—"), never a 0
    that reads as a result: win rate, profit factor and average win/loss without a closed trade
    (buy and hold never closes), an average win without a win, Calmar without a drawdown,
    Sharpe/Sortino on a curve that never moves (or never falls)."""

    total_return: float
    annualised_return: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    calmar: float | None
    win_rate: float | None
    profit_factor: float | None
    average_win: float | None
    average_loss: float | None
    trades: int
    exposure: float
    fees: float
    final_equity: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0 for a curve that never
    falls)."""
    if len(equity) == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak))


def trade_returns(fills: list[Fill], start_equity: float) -> tuple[np.ndarray, np.ndarray]:
    """(profit, return on the equity at entry) of every closed trade, in order."""
    profits: list[float] = []
    returns: list[float] = []
    position, cash = 0.0, start_equity
    opened_at: float | None = None
    for fill in fills:
        before = cash + position * fill.price
        after = fill.cash_after + fill.position_after * fill.price
        if opened_at is None and abs(fill.position_after) > FLAT:
            opened_at = before
        elif opened_at is not None and (
            abs(fill.position_after) <= FLAT or fill.position_after * position < 0
        ):
            profits.append(after - opened_at)
            returns.append((after - opened_at) / opened_at)
            opened_at = after if abs(fill.position_after) > FLAT else None
        position, cash = fill.position_after, fill.cash_after
    return np.asarray(profits), np.asarray(returns)


def trading_metrics(
    equity: np.ndarray, position: np.ndarray, fills: list[Fill], *, start_equity: float, fees: float,
    bar_seconds: int,
) -> TradingMetrics:  # fmt: skip
    """The metrics of one arm's per-bar equity and its fills."""
    curve = np.concatenate([[start_equity], equity])
    total = float(curve[-1] / start_equity - 1.0)
    years = len(equity) * bar_seconds / SECONDS_PER_YEAR
    annual = float((1.0 + total) ** (1.0 / years) - 1.0) if years > 0 and total > -1 else -1.0
    bars = np.diff(curve) / curve[:-1]
    per_year = math.sqrt(SECONDS_PER_YEAR / bar_seconds)
    spread = float(np.std(bars))
    downside = float(np.sqrt(np.mean(np.minimum(bars, 0.0) ** 2)))
    sharpe = float(np.mean(bars) / spread * per_year) if spread > 0 else None
    sortino = float(np.mean(bars) / downside * per_year) if downside > 0 else None
    drawdown = max_drawdown(curve)
    profits, _ = trade_returns(fills, start_equity)
    wins, losses = profits[profits > 0], profits[profits <= 0]
    return TradingMetrics(
        total_return=total, annualised_return=annual, sharpe=sharpe, sortino=sortino,
        max_drawdown=drawdown, calmar=annual / drawdown if drawdown > 0 else None,
        win_rate=float(len(wins) / len(profits)) if len(profits) else None,
        profit_factor=_profit_factor(wins, losses) if len(profits) else None,
        average_win=float(wins.mean()) if len(wins) else None,
        average_loss=float(losses.mean()) if len(losses) else None,
        trades=len(profits), exposure=float(np.mean(np.abs(position) > FLAT)) if len(position) else 0.0,
        fees=float(fees), final_equity=float(curve[-1]),
    )  # fmt: skip


def _profit_factor(wins: np.ndarray, losses: np.ndarray) -> float:
    """Gross profit over gross loss; infinite with wins and no loss, 0 with losses (or break-evens)
    only."""
    if losses.sum() < 0:
        return float(wins.sum() / -losses.sum())
    return float("inf") if len(wins) else 0.0


@dataclass(frozen=True)
class MonteCarlo:
    """Final equity and maximum drawdown when the trades' returns are drawn again, in a random
    order and with replacement (so a lucky streak is not counted twice by design)."""

    simulations: int
    final_equity: list[float]
    max_drawdown: list[float]
    final_equity_percentiles: dict[str, float]
    max_drawdown_percentiles: dict[str, float]
    probability_of_loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def monte_carlo(
    returns: np.ndarray, start_equity: float, *, simulations: int = 1000, seed: int = 0
) -> MonteCarlo | None:
    """None when there are fewer than two trades (nothing to reorder)."""
    if len(returns) < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = rng.choice(returns, size=(simulations, len(returns)), replace=True)
    paths = start_equity * np.cumprod(1.0 + draws, axis=1)
    paths = np.concatenate([np.full((simulations, 1), start_equity), paths], axis=1)
    finals = paths[:, -1]
    drawdowns = np.max(1.0 - paths / np.maximum.accumulate(paths, axis=1), axis=1)

    def pct(values: np.ndarray) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(values, q)) for q in (5, 25, 50, 75, 95)}

    return MonteCarlo(
        simulations=simulations, final_equity=[float(v) for v in finals],
        max_drawdown=[float(v) for v in drawdowns], final_equity_percentiles=pct(finals),
        max_drawdown_percentiles=pct(drawdowns), probability_of_loss=float(np.mean(finals < start_equity)),
    )  # fmt: skip


def prediction_metrics(
    y: np.ndarray, p: np.ndarray, base_rate: np.ndarray, *, horizon: int, n_boot: int = 200
) -> dict[str, Any]:
    """Pooled out-of-sample direction metrics with 95% block-bootstrap intervals, and whether
    they can tell the model from a coin."""
    block = max(24, horizon)
    report = direction_report(y, p, base_rate, block=block, n_boot=n_boot).to_dict()
    report["accuracy_block_ci"] = block_bootstrap_ci(y, p, "accuracy", block=block, n_boot=n_boot)
    report["calibration"] = [asdict(b) for b in calibration_by_decile(y, p)]
    report["verdict"] = _verdict(report)
    return report


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Plain words: can the 95% intervals tell this model from a coin (AUC 0.5, the base-rate
    Brier, the majority class's accuracy)?"""
    auc_low, auc_high = report["auc_ci"]
    brier_low = report["brier_ci"][0]
    acc_low = report["accuracy_block_ci"][0]
    auc_coin = bool(auc_low <= 0.5 <= auc_high) if not math.isnan(auc_low) else True
    brier_coin = bool(brier_low <= report["base_rate_brier"]) if not math.isnan(brier_low) else True
    acc_coin = bool(acc_low <= report["majority_accuracy"])
    coin = auc_coin and brier_coin and acc_coin
    if coin:
        text = ("the 95% intervals cannot tell this model from a coin: AUC, Brier and accuracy are all "
                "within reach of 0.5, the base-rate Brier and the majority class")  # fmt: skip
    elif not auc_coin and auc_low > 0.5:
        text = f"AUC above 0.5 with 95% confidence ({auc_low:.3f} .. {auc_high:.3f})"
    else:
        text = "at least one interval excludes the coin, but not in the model's favour on AUC"
    return {"cannot_tell_from_coin": coin, "auc_includes_half": auc_coin,
            "brier_not_better_than_base_rate": brier_coin, "accuracy_not_better_than_majority": acc_coin,
            "text": text}  # fmt: skip
