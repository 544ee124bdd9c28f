"""``MLTradingStrategy``: ML prediction + sentiment → a sized, graded trading signal.

Combination (the issue's formula)::

    combined_probability = ml_weight × P_ml(up) + sentiment_weight × (sentiment + 1) / 2

Without sentiment (disabled, or no cached data) the sentiment term is neutral (0.5), which
shrinks the ML probability toward 0.5 by ``sentiment_weight``; set ``sentiment_weight`` to 0
to trade on the ML probability alone.

Sizing (Kelly), from a conservative edge: the side is the one ``combined_probability``
favours; b = take-profit distance / stop distance, and the round trip's cost (fees and
slippage, ``round_trip_cost`` of the notional) is charged in units of the stop distance, so a
win pays b − c and a loss costs 1 + c (break-even p = (1 + c) / (1 + b)). The win probability
Kelly sizes from is the *smallest* of

* p of that side (the combined probability);
* the lower 95% Wilson bound of the out-of-sample win rate of the model's calls with this
  margin |2p − 1| (``calibration.ConfidenceCalibrator.win_rate_bounds``; few samples make it
  low, so the stake shrinks toward zero by itself);
* the upper 95% Wilson bound of the recent resolved accuracy in the prediction log, when the
  serving layer passes a ``recent_accuracy`` reader and at least ``min_recent_outcomes`` have
  resolved: when the market stops supporting the edge, the stake is cut, to zero below
  break-even.

f* = p / (1 + c) − (1 − p) / (b − c); the fraction is f* × ``kelly_multiplier``, capped at
``max_kelly`` (10% of the account). When that p is not above break-even, or the combined p is
within ``min_edge`` of 0.5, the action is hold and the fraction 0: there is no minimum
position. Stops and targets are ``stop_atr`` / ``take_profit_atr`` × ATR(14) from the entry.
The defaults make b = 1 on purpose: p measures the direction at the horizon, not the chance
of touching the target before the stop, so a b > 1 would manufacture an edge from the
payoff ratio alone (any p > 1/(1 + b) would look tradeable).

With a volatility forecast (``volatility``: GARCH(1,1) + ridge, saved with the model), the
forecast sets the three risk numbers: the stop's yardstick is the forecast per-bar volatility
× price × the training median of ATR(14)/close per unit of it (so ``stop_atr`` keeps its
meaning on an average day, and the stop widens when the forecast rises); leverage's volatility
is the forecast, annualised; and the Kelly fraction is multiplied by
``min(1, vol_target / forecast)`` (volatility targeting that can only cut the conservative
Kelly, never raise it). A model saved without one (older versions, ``arch`` missing at
training) logs one line when loaded and behaves as before.

Quality grade (``validate_signal_quality``), each component in [0, 1]:

==================== ====== =====================================================================
component            weight 1.0 when …
==================== ====== =====================================================================
probability          0.35   |2·combined − 1| ≥ 0.3 (linear below)
model_agreement      0.25   the boosting and LSTM magnitudes agree with the classifier's side
sentiment_agreement  0.15   sentiment has the trade's sign (0.5 neutral or no data, 0 opposed)
volatility_regime    0.15   ATR(14) is between its 20th and 80th training percentiles
                            (0.5 within the 5th-95th, 0 outside: an unfamiliar regime)
data_freshness       0.10   the last candle closed at most one bar ago (0.5 within 3 bars, else 0)
==================== ====== =====================================================================

quality_score = 100 × Σ weight × component; grade A ≥ 80, B ≥ 65, C ≥ 50, D ≥ 35, else F.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from common.checks import refuse_unknown_keys
from common.kelly import kelly_fraction
from ml_integration.artifacts import seal, verify
from ml_integration.context import Reference, reference_symbol
from ml_integration.evaluation import wilson_interval
from ml_integration.exceptions import GapInWindowError, NotTrainedError
from ml_integration.market_call import (
    LEVERAGE_CEILING,
    MarketCall,
    SignalType,
    predict_market,
    realized_volatility,
)
from ml_integration.prediction import MLPricePrediction, ModelConfig, Prediction
from ml_integration.volatility import VolatilityForecast, VolatilityModel, train_or_skip, vol_target_scale

__all__ = [
    "QUALITY_WEIGHTS",
    "EdgeEstimate",
    "MLTradingStrategy",
    "RecentAccuracy",
    "SentimentSource",
    "StrategyConfig",
    "TradingSignal",
    "conservative_edge",
    "grade_for_score",
    "kelly_fraction",
]

QUALITY_WEIGHTS: dict[str, float] = {
    "probability": 0.35,
    "model_agreement": 0.25,
    "sentiment_agreement": 0.15,
    "volatility_regime": 0.15,
    "data_freshness": 0.10,
}
_GRADES = ((80.0, "A"), (65.0, "B"), (50.0, "C"), (35.0, "D"))

#: Combined P(side) from which a tradeable signal is a STRONG_BUY / STRONG_SELL.
STRONG_SIGNAL = 0.70

_VOLATILITY_FILE = "volatility.json"
log = logging.getLogger(__name__)


def _volatility(df: pd.DataFrame) -> float:
    """Annualised realised volatility of the last day of bars; 0 (no leverage discount) when
    the frame is too short or irregular to say."""
    try:
        return realized_volatility(df)
    except ValueError:
        return 0.0


class RecentAccuracy(Protocol):
    """Reads the prediction log: (right, resolved) of the symbol's recent resolved predictions,
    or None when unknown. The serving layer passes one in; ml_integration never reads engine or
    webhook state itself."""

    def __call__(self, symbol: str) -> tuple[int, int] | None: ...


class SentimentSource(Protocol):
    """What the strategy needs from ``ml_integration.sentiment.SentimentAnalysis``."""

    def get_combined_sentiment(self, symbol: str, *, allow_fetch: bool = True) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StrategyConfig:
    """Strategy settings (the ``config`` dict's keys)."""

    ml_weight: float = 0.6
    sentiment_weight: float = 0.4
    use_sentiment: bool = False
    kelly_multiplier: float = 0.25
    max_kelly: float = 0.10
    stop_atr: float = 2.0
    take_profit_atr: float = 2.0
    min_edge: float = 0.02
    target_periods: int = 5
    #: The most leverage a signal asks for (the engine's risk limits still cap what it gets).
    max_leverage: float = 3.0
    #: Fees and slippage of a round trip, as a fraction of the notional (0.1% a side).
    round_trip_cost: float = 0.002
    #: Resolved predictions needed before their recent accuracy may cut Kelly.
    min_recent_outcomes: int = 20
    #: Annualised volatility up to which the conservative Kelly stake is kept whole; above it
    #: the stake shrinks as target / forecast (the median 24-bar realised volatility of
    #: BTC/USDT hourly candles 2017-2022 was 0.57). Used only with a volatility forecast.
    vol_target: float = 0.6

    def __post_init__(self) -> None:
        checks = [
            (self.ml_weight >= 0 and self.sentiment_weight >= 0, "weights must be >= 0"),
            (
                abs(self.ml_weight + self.sentiment_weight - 1.0) < 1e-9,
                "ml_weight + sentiment_weight must be 1",
            ),
            (0 < self.kelly_multiplier <= 1, "kelly_multiplier must be in (0, 1]"),
            (0 < self.max_kelly <= 1, "max_kelly must be in (0, 1]"),
            (self.stop_atr > 0 and self.take_profit_atr > 0, "stop_atr and take_profit_atr must be > 0"),
            (0 <= self.min_edge < 0.5, "min_edge must be in [0, 0.5)"),
            (self.target_periods >= 1, "target_periods must be >= 1"),
            (1 <= self.max_leverage <= LEVERAGE_CEILING, f"max_leverage must be in [1, {LEVERAGE_CEILING}]"),
            (0 <= self.round_trip_cost < 0.1, "round_trip_cost must be in [0, 0.1)"),
            (self.min_recent_outcomes >= 1, "min_recent_outcomes must be >= 1"),
            (self.vol_target > 0, "vol_target must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid strategy config: {message} (got {self})")

    @classmethod
    def from_mapping(cls, config: dict[str, Any] | None) -> StrategyConfig:
        config = dict(config or {})
        refuse_unknown_keys("strategy config keys", config, cls)
        return cls(**config)


@dataclass(frozen=True)
class EdgeEstimate:
    """The win probability Kelly sizes from and why (see the module docstring)."""

    p: float
    break_even: float
    full_kelly: float
    note: str

    @property
    def positive(self) -> bool:
        return self.p > self.break_even and self.full_kelly > 0


def conservative_edge(
    *, p_side: float, bounds: tuple[float, float, int], recent: tuple[int, int] | None,
    min_recent: int, b: float, cost: float,
) -> EdgeEstimate:  # fmt: skip
    """Kelly's inputs from the weakest of the three supports of the edge: ``p_side``, the
    out-of-sample ``bounds`` (low, high, n) of the win rate at this margin for this side,
    and ``recent`` (right, resolved) from the prediction log. ``cost``: the round trip's
    cost in units of the stop distance."""
    low, _, n = bounds
    p = min(p_side, low)
    note = f"out-of-sample win rate >= {low:.3f} (n={n})"
    if recent is not None and recent[1] >= min_recent:
        recent_high = wilson_interval(recent[0], recent[1])[1]
        p = min(p, recent_high)
        note += f", recent accuracy <= {recent_high:.3f} ({recent[0]}/{recent[1]})"
    win, loss = b - cost, 1.0 + cost
    if win <= 0:
        return EdgeEstimate(p, 1.0, 0.0, note + f"; costs {cost:.2f}R exceed the target")
    return EdgeEstimate(p, loss / (win + loss), kelly_fraction(p, win, loss), note)


def _volatility_note(vol: VolatilityForecast | None, target: float) -> str:
    if vol is None:
        return ""
    return (
        f"; forecast volatility {vol.annualised:.0%}/yr over {vol.horizon} bars ({vol.method}): "
        f"stop yardstick {vol.atr_equivalent:.8g}, stake x{vol_target_scale(vol.annualised, target):.2f}"
    )


def _filled_note(filled: tuple[str, ...]) -> str:
    if not filled:
        return ""
    return (
        f"; {len(filled)} missing bar(s) in the candles read ({', '.join(filled)}) filled flat at the "
        "previous close, volume 0"
    )


#: ``ml_integration.ensemble.ENSEMBLE_FILE``, named here so that loading a default model does not
#: import the ensemble module (and scikit-learn with it) into a serving worker.
_ENSEMBLE_FILE = "ensemble.joblib"


def _predictor_for(folder: Path) -> MLPricePrediction:
    """The default predictor, or the ensemble's when the saved directory holds one."""
    if (folder / _ENSEMBLE_FILE).is_file():
        from ml_integration.ensemble import EnsemblePricePrediction

        return EnsemblePricePrediction()
    return MLPricePrediction()


def no_model_reason(report: dict[str, Any] | None) -> str:
    """Why a market whose tournament ended with ``no_model`` gives no ML opinion."""
    tournament = (report or {}).get("tournament") or {}
    return (
        "no model: no candidate beat the base rate out of sample in training's tournament "
        f"({tournament.get('reason', 'see the model metadata')}); the ML makes no call here, "
        "the strategy's fallback rule decides"
    )


def grade_for_score(score: float) -> str:
    return next((grade for floor, grade in _GRADES if score >= floor), "F")


@dataclass(frozen=True)
class TradingSignal:
    """One signal, typed; :meth:`to_dict` is the public JSON face."""

    action: str
    symbol: str
    entry_price: float
    stop_loss: float | None
    take_profit: float | None
    confidence: float
    #: The Kelly fraction of the side the signal favours (``action``'s; the side
    #: ``combined_probability`` is on), and of the other side (from 1 - p).
    kelly_fraction: float
    ml_probability: float | None
    sentiment_score: float
    combined_probability: float | None
    signal_strength: float
    magnitude: float | None
    horizon: int
    candle_time: str
    model_version: str | None
    synthetic: bool
    quality_score: float
    quality_grade: str
    quality_components: dict[str, float]
    reason: str
    #: The market call of this same signal: STRONG_BUY .. STRONG_SELL, the leverage it asks for,
    #: and the risk/reward of ``stop_loss``/``take_profit`` (one ATR, one set of stops).
    signal_type: str = SignalType.HOLD.value
    leverage: float = 1.0
    risk_reward: float | None = None
    ml_prediction: dict[str, Any] | None = None
    sentiment_data: dict[str, Any] | None = None
    feature_analysis: dict[str, Any] = field(default_factory=dict)
    #: The volatility forecast the stop, leverage and size came from (None: ATR(14) as before).
    volatility_forecast: dict[str, Any] | None = None
    kelly_other: float = 0.0

    def kelly_for(self, side: str) -> float:
        """The Kelly fraction of a trade on ``side`` (``buy`` or ``sell``): this signal's own
        when ``side`` is the one ``combined_probability`` favours, else the other side's."""
        favoured = (
            "buy"
            if (self.combined_probability if self.combined_probability is not None else 0.5) >= 0.5
            else "sell"
        )
        return self.kelly_fraction if side == favoured else self.kelly_other

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "symbol": self.symbol,
            "entry_price": self.entry_price,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "confidence": self.confidence,
            "kelly_fraction": self.kelly_fraction,
            "ml_prediction": self.ml_prediction,
            "sentiment_data": self.sentiment_data,
            "signal_components": {
                "ml_probability": self.ml_probability,
                "sentiment_score": self.sentiment_score,
                "combined_probability": self.combined_probability,
                "signal_strength": self.signal_strength,
            },
            "feature_analysis": self.feature_analysis,
            "model_version": self.model_version,
            "candle_time": self.candle_time,
            "synthetic": self.synthetic,
            "horizon": self.horizon,
            "magnitude": self.magnitude,
            "quality_grade": self.quality_grade,
            "quality_score": self.quality_score,
            "quality_components": self.quality_components,
            "signal_type": self.signal_type,
            "leverage": self.leverage,
            "risk_reward": self.risk_reward,
            "volatility_forecast": self.volatility_forecast,
            "reason": self.reason,
        }

    @property
    def direction_probability(self) -> float | None:
        """Calibrated P(up) of the models (None when the window could not be scored)."""
        return self.ml_probability


class MLTradingStrategy:
    """Turns candles (and optionally sentiment) into a :class:`TradingSignal`."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        sentiment: SentimentSource | None = None,
        model_config: ModelConfig | None = None,
        recent_accuracy: RecentAccuracy | None = None,
    ):
        self.config = StrategyConfig.from_mapping(config)
        self.sentiment = sentiment
        self.recent_accuracy = recent_accuracy
        self.predictor = MLPricePrediction(model_config)
        self.synthetic = False
        self.model_version: str | None = None
        self.symbol: str | None = None
        self.timeframe: str | None = None
        self.training_report: dict[str, Any] | None = None
        self.volatility: VolatilityModel | None = None

    # --- training and persistence -------------------------------------------------------------
    def train_strategy(
        self,
        df: pd.DataFrame,
        *,
        synthetic: bool = False,
        symbol: str | None = None,
        timeframe: str | None = None,
        on_stage: Callable[[str], None] | None = None,
        features: tuple[Any, Any] | None = None,
        reference: Reference | None = None,
        lean: bool = False,
    ) -> dict[str, Any]:
        """Train the models on ``df``; ``synthetic`` must say whether the candles are generated
        (the saved metadata and every signal carry it). ``features``, ``reference`` and ``lean``:
        see :meth:`MLPricePrediction.train_models` (a lean ``no_model`` fits no volatility
        model either: its signals are holds that read none)."""
        self.training_report = self.predictor.train_models(
            df, target_periods=self.config.target_periods, on_stage=on_stage, features=features,
            reference=reference, lean=lean,
        )  # fmt: skip
        if self.predictor.tournament_ensemble_ is not None:  # a zoo combiner won the tournament
            from ml_integration.ensemble import EnsemblePricePrediction

            self.predictor = EnsemblePricePrediction.adopt(
                self.predictor, self.predictor.tournament_ensemble_
            )
        fitted = self.predictor.fitted_
        if not (lean and fitted is not None and fitted.direction_kind == "no_model"):
            self._train_volatility(df, on_stage)
        else:
            self.volatility = None
            self.training_report["volatility"] = {"skipped": "no model is served: no volatility forecast fit"}
        self.synthetic = bool(synthetic)
        self.symbol, self.timeframe = symbol, timeframe
        self.model_version = None
        return self.training_report

    def _train_volatility(self, df: pd.DataFrame, on_stage: Callable[[str], None] | None) -> None:
        """The volatility part, with the direction model's horizon, test fraction and final-fit
        rule; its report joins the training report (``volatility``)."""
        if on_stage is not None:
            on_stage("volatility")
        fitted, cfg = self.predictor.fitted_, self.predictor.config
        assert fitted is not None and self.training_report is not None
        self.volatility, report = train_or_skip(
            df, horizon=fitted.horizon, timeframe_sec=fitted.timeframe_sec,
            test_fraction=cfg.test_fraction, final_fit=cfg.final_fit,
        )  # fmt: skip
        self.training_report["volatility"] = report

    def save_strategy(self, path: str | Path, *, version: str | None = None) -> Path:
        """Write every artifact into directory ``path`` and seal it (sha256 per file)."""
        folder = Path(path)
        meta = self.predictor.write_artifacts(folder)
        strategy = {
            "config": asdict(self.config),
            "synthetic": self.synthetic,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
        }
        skipped = ((self.training_report or {}).get("volatility") or {}).get("skipped")
        if self.volatility is None and skipped:
            strategy["volatility_skipped"] = skipped  # why, said at training; loading stays quiet
        (folder / "strategy.json").write_text(json.dumps(strategy, indent=2))
        if self.volatility is not None:
            report = (self.training_report or {}).get("volatility")
            part = {"model": self.volatility.to_dict(), "report": report}
            (folder / _VOLATILITY_FILE).write_text(json.dumps(part, indent=2))
        seal(folder, {**meta, "strategy": strategy, "version": version, "saved_at": time.time()})
        if version is not None:
            self.model_version = version
        return folder

    def load_strategy(self, path: str | Path) -> MLTradingStrategy:
        """Load (after checking every sha256) a directory written by :meth:`save_strategy`."""
        folder = Path(path)
        metadata = verify(folder)
        strategy = json.loads((folder / "strategy.json").read_text())
        self.config = StrategyConfig.from_mapping(strategy["config"])
        self.predictor = _predictor_for(folder).read_artifacts(folder, metadata)
        self.synthetic = bool(strategy["synthetic"])
        self.symbol, self.timeframe = strategy.get("symbol"), strategy.get("timeframe")
        self.model_version = metadata.get("version")
        self.training_report = metadata.get("model")
        self.volatility = self._read_volatility(folder, strategy.get("volatility_skipped"))
        self.predictor.warm_up()
        return self

    def _read_volatility(self, folder: Path, skipped: str | None) -> VolatilityModel | None:
        """The saved volatility part (already hash-checked by ``verify``), or None: quietly when
        training skipped it and said why then (``arch`` missing on a serve-only install: not a
        warning at every worker's load), with one warning for a model saved before it existed."""
        path = folder / _VOLATILITY_FILE
        if not path.is_file():
            if skipped:
                log.debug("%s: %s", folder, skipped)
            else:
                log.warning(
                    "%s has no volatility forecast: stops, leverage, size from ATR(14) as before", folder
                )
            return None
        part = json.loads(path.read_text())
        if self.training_report is not None:
            self.training_report["volatility"] = part.get("report")
        return VolatilityModel.from_dict(part["model"])

    # --- signals ---------------------------------------------------------------------------------
    def _sentiment(self, symbol: str, allow_fetch: bool) -> tuple[float, dict[str, Any] | None]:
        if not self.config.use_sentiment or self.sentiment is None:
            return 0.0, None
        data = self.sentiment.get_combined_sentiment(symbol, allow_fetch=allow_fetch)
        if data.get("no_data"):
            return 0.0, data
        return max(-1.0, min(1.0, float(data.get("combined_sentiment", 0.0)))), data

    def generate_signal(
        self,
        df: pd.DataFrame,
        symbol: str,
        *,
        now: float | None = None,
        allow_fetch: bool = False,
        features: Any = None,
        reference: Reference | None = None,
    ) -> TradingSignal:
        """The typed signal for the bar after the last candle of ``df``.

        Raises :class:`CandleDataError` for bad or too few candles; a window that straddles a gap
        gives a hold (grade F) naming the gap. ``allow_fetch`` lets sentiment use the network
        (off by default: the webhook path must not wait on it). ``now`` (epoch seconds) is
        the clock for data freshness. ``features``: feature rows computed once over a longer
        history ending at ``df``'s last candle (a replay's shortcut; see
        ``MLPricePrediction.feature_tail``), the same numbers serving computes. ``reference``:
        the reference market's candles (BTC's for an alt, :attr:`reference_symbol`), read when
        the served model uses the ``btc`` context family (:attr:`reads_reference`).
        """
        if self.predictor.fitted_ is None:
            raise NotTrainedError(
                "MLTradingStrategy is not trained: call train_strategy() or load_strategy()"
            )
        clock = time.time() if now is None else now
        if self.predictor.fitted_.direction_kind == "no_model":
            return self._gap_hold(df, symbol, no_model_reason(self.training_report))
        try:
            prediction = self.predictor.predict(df, features=features, reference=reference)
        except GapInWindowError as gap:
            return self._gap_hold(df, symbol, str(gap))
        sentiment, sentiment_data = self._sentiment(symbol, allow_fetch)
        cfg = self.config
        combined = (
            cfg.ml_weight * prediction.direction_probability + cfg.sentiment_weight * (sentiment + 1) / 2
        )
        side = 1 if combined >= 0.5 else -1
        p_side = combined if side > 0 else 1 - combined
        vol = self.volatility.forecast(df) if self.volatility is not None else None
        yardstick = vol.atr_equivalent if vol is not None else prediction.atr
        edge = self._edge(prediction, side, p_side, symbol, yardstick)
        tradeable = edge.positive and abs(combined - 0.5) >= cfg.min_edge
        kelly = self._stake(edge, tradeable, vol)
        # The other side's Kelly, from 1 - p by the same rule: what a trade against the call is
        # sized with (no edge, and so 0, unless sentiment and costs say otherwise).
        other = self._edge(prediction, -side, 1.0 - p_side, symbol, yardstick)
        kelly_other = self._stake(other, other.positive and abs(combined - 0.5) >= cfg.min_edge, vol)
        entry = prediction.close
        call = self._market_call(df, combined, prediction, tradeable, vol)
        action = {"long": "buy", "short": "sell"}.get(call.direction, "hold")
        components = self._components(prediction, combined, sentiment, sentiment_data, side, clock)
        score = round(100.0 * sum(QUALITY_WEIGHTS[k] * v for k, v in components.items()), 1)
        reason = (
            f"combined P(up) {combined:.3f} (ML {prediction.direction_probability:.3f},"
            f" sentiment {sentiment:+.2f}); {edge.note}; Kelly p {edge.p:.3f} vs break-even"
            f" {edge.break_even:.3f} after costs, f* {edge.full_kelly:+.3f}"
            + ("" if tradeable else f", no edge beyond {cfg.min_edge:.2f} and costs: hold")
            + _volatility_note(vol, cfg.vol_target)
            + _filled_note(prediction.filled_bars)
        )
        return TradingSignal(
            action=action,
            symbol=symbol,
            entry_price=entry,
            stop_loss=call.stop_loss,
            take_profit=call.take_profit,
            confidence=prediction.confidence,
            kelly_fraction=kelly,
            kelly_other=kelly_other,
            ml_probability=prediction.direction_probability,
            sentiment_score=sentiment,
            combined_probability=combined,
            signal_strength=prediction.signal_strength,
            magnitude=prediction.ensemble_magnitude,
            horizon=self.predictor.horizon,
            candle_time=prediction.candle_time.isoformat(),
            model_version=self.model_version,
            synthetic=self.synthetic,
            quality_score=score,
            quality_grade=grade_for_score(score),
            quality_components=components,
            reason=reason,
            signal_type=call.signal_type.value,
            leverage=call.leverage,
            risk_reward=call.risk_reward,
            ml_prediction=prediction.to_dict(),
            sentiment_data=sentiment_data,
            feature_analysis={
                "top_features": [{"name": n, "weight": w} for n, w in prediction.top_features],
                "values": prediction.feature_values,
                "filled_bars": list(prediction.filled_bars),
            },
            volatility_forecast=None if vol is None else vol.to_dict(),
        )

    def _stake(self, edge: EdgeEstimate, tradeable: bool, vol: VolatilityForecast | None) -> float:
        """The fraction of the account a side with ``edge`` stakes: f* x ``kelly_multiplier``,
        capped at ``max_kelly``, cut by volatility targeting; 0 when not tradeable."""
        cfg = self.config
        kelly = min(cfg.max_kelly, edge.full_kelly * cfg.kelly_multiplier) if tradeable else 0.0
        if vol is not None:
            kelly *= vol_target_scale(vol.annualised, cfg.vol_target)
        return kelly

    def _edge(
        self, prediction: Prediction, side: int, p_side: float, symbol: str, yardstick: float
    ) -> EdgeEstimate:
        """:func:`conservative_edge` for this signal: the out-of-sample interval is the model's
        side's, mirrored when sentiment turned the combined side against the model. The stop
        the costs are charged against is ``stop_atr`` × ``yardstick`` (the market call's)."""
        fitted = self.predictor.fitted_
        assert fitted is not None
        cfg = self.config
        low, high, n = fitted.confidence.win_rate_bounds(prediction.direction_probability)
        model_side = 1 if prediction.direction_probability >= 0.5 else -1
        bounds = (low, high, n) if side == model_side else (1.0 - high, 1.0 - low, n)
        stop = cfg.stop_atr * yardstick
        cost = cfg.round_trip_cost * prediction.close / stop if stop > 0 else float("inf")
        recent = self.recent_accuracy(symbol) if self.recent_accuracy is not None else None
        return conservative_edge(
            p_side=p_side, bounds=bounds, recent=recent, min_recent=cfg.min_recent_outcomes,
            b=cfg.take_profit_atr / cfg.stop_atr, cost=cost,
        )  # fmt: skip

    def _market_call(
        self, df: pd.DataFrame, combined: float, prediction: Prediction, tradeable: bool,
        vol: VolatilityForecast | None,
    ) -> MarketCall:  # fmt: skip
        """The one market call of this signal: signal type, leverage, stop, target and
        risk/reward from the strategy's ATR multiples and the feature pipeline's ATR, or with a
        volatility forecast its ATR equivalent and annualised volatility. A signal with no
        tradeable edge is a HOLD (no stops, 1x), whatever the thresholds say."""
        cfg = self.config
        edge = 0.5 + max(cfg.min_edge, 1e-9)
        if not tradeable or prediction.atr <= 0:
            return MarketCall(SignalType.HOLD, "flat", 1.0, None, None, None, "no tradeable edge")
        try:
            return predict_market(
                # leverage grows with the validated edge: 1x at a coin flip (confidence 0.5)
                direction_probability=combined, confidence=max(0.0, 2 * prediction.confidence - 1),
                price=prediction.close,
                atr=prediction.atr if vol is None else vol.atr_equivalent,
                volatility=_volatility(df) if vol is None else vol.annualised,
                max_leverage=cfg.max_leverage,
                stop_atr=cfg.stop_atr, take_profit_atr=cfg.take_profit_atr, threshold=edge,
                strong_threshold=max(edge, STRONG_SIGNAL),
            )  # fmt: skip
        except ValueError as exc:  # a stop that would sit at or below zero: no trade
            return MarketCall(SignalType.HOLD, "flat", 1.0, None, None, None, str(exc))

    def _components(
        self,
        prediction: Prediction,
        combined: float,
        sentiment: float,
        sentiment_data: dict[str, Any] | None,
        side: int,
        now: float,
    ) -> dict[str, float]:
        fitted = self.predictor.fitted_
        assert fitted is not None
        p5, p20, _, p80, p95 = fitted.atr_percentiles
        atr_frac = prediction.atr / prediction.close
        if p20 <= atr_frac <= p80:
            regime = 1.0
        elif p5 <= atr_frac <= p95:
            regime = 0.5
        else:
            regime = 0.0
        if sentiment_data is None or sentiment_data.get("no_data") or abs(sentiment) < 0.05:
            agree_sentiment = 0.5
        else:
            agree_sentiment = 1.0 if (sentiment > 0) == (side > 0) else 0.0
        bar_close = prediction.candle_time.timestamp() + fitted.timeframe_sec
        age_bars = (now - bar_close) / fitted.timeframe_sec
        freshness = 1.0 if age_bars <= 1 else 0.5 if age_bars <= 3 else 0.0
        return {
            "probability": min(1.0, abs(2 * combined - 1) / 0.3),
            "model_agreement": prediction.agreement,
            "sentiment_agreement": agree_sentiment,
            "volatility_regime": regime,
            "data_freshness": freshness,
        }

    @property
    def reads_reference(self) -> bool:
        """Whether the served model reads the reference market's candles (the ``btc`` family)."""
        fitted = self.predictor.fitted_
        return fitted is not None and fitted.reads_reference

    @property
    def reference_symbol(self) -> str | None:
        """The market whose candles :meth:`generate_signal` needs as ``reference`` (None when
        the served model reads none)."""
        return reference_symbol(self.symbol) if self.reads_reference else None

    def _gap_hold(self, df: pd.DataFrame, symbol: str, reason: str) -> TradingSignal:
        components = dict.fromkeys(QUALITY_WEIGHTS, 0.0)
        return TradingSignal(
            action="hold",
            symbol=symbol,
            entry_price=float(df["close"].iloc[-1]),
            stop_loss=None,
            take_profit=None,
            confidence=0.0,
            kelly_fraction=0.0,
            ml_probability=None,
            sentiment_score=0.0,
            combined_probability=None,
            signal_strength=0.0,
            magnitude=None,
            horizon=self.predictor.horizon,
            candle_time=pd.Timestamp(df.index[-1]).isoformat(),
            model_version=self.model_version,
            synthetic=self.synthetic,
            quality_score=0.0,
            quality_grade="F",
            quality_components=components,
            reason=reason,
        )

    @staticmethod
    def validate_signal_quality(signal: TradingSignal | dict[str, Any]) -> dict[str, Any]:
        """``{"grade", "quality_score", "components"}`` recomputed from a signal's quality
        components (see the module docstring for the table)."""
        components = (
            signal.quality_components
            if isinstance(signal, TradingSignal)
            else signal.get("quality_components")
        )
        if not isinstance(components, dict) or set(components) != set(QUALITY_WEIGHTS):
            raise ValueError(f"signal has no quality_components with keys {sorted(QUALITY_WEIGHTS)}")
        bad = {k: v for k, v in components.items() if not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ValueError(f"quality components must be in [0, 1], got {bad}")
        score = round(100.0 * sum(QUALITY_WEIGHTS[k] * float(v) for k, v in components.items()), 1)
        return {"grade": grade_for_score(score), "quality_score": score, "components": dict(components)}
