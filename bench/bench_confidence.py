"""Is the served confidence a probability, walk-forward on real candles?

``python -m bench.bench_confidence --data /work/shared/data/ohlcv/binance/BTC_USDT-1h.json
--symbol BTC/USDT --start 2021-10-11 --end 2022-10-11`` trains the full strategy per window
exactly as ``tvgw backtest`` does (``backtest.models.train_windows``, 180-day training, 30-day
test, no LSTM), then pools every test bar and prints, by decile: the served P(up) against the
up-rate that followed, and the served confidence against how often the model's side was right
(each with its Wilson interval); the mean P(up) next to the realised up-rate (the lean check);
and the share of bars whose confidence reaches ``ml_gate``'s default threshold, with the side's
hit rate there (the trade rate at the default). It also prints the pooled AUC and Brier (95%
block-bootstrap intervals, ``backtest.metrics.prediction_metrics``, as ``tvgw backtest`` reports
them) of the strategy and of the plain baseline forest trained on the same windows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from backtest.data import CandleSource, load_candles
from backtest.metrics import prediction_metrics
from backtest.models import baseline_matrix, train_windows
from backtest.windows import plan_windows
from engine.settings import StrategySettings
from ml_integration.candles import timeframe_seconds
from ml_integration.evaluation import calibration_by_decile, wilson_interval
from ml_integration.features import LOOKBACK
from ml_integration.labels import make_labels
from ml_integration.prediction import ModelConfig

HORIZON = 5


Pooled = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def pooled(frame: pd.DataFrame, start: str, end: str) -> Pooled:
    """(P(up), confidence, went up, the baseline's P(up), its window's training up-rate) of every
    test bar of every window, in time order."""
    step = timeframe_seconds("1h")
    windows = plan_windows(
        frame.index, step_s=step, train=pd.Timedelta(days=180), test=pd.Timedelta(days=30),
        embargo_bars=HORIZON, warmup_bars=LOOKBACK, min_train_bars=400,
        start=pd.Timestamp(start, tz="UTC"), end=pd.Timestamp(end, tz="UTC"),
    )  # fmt: skip
    models = train_windows(frame, None, windows, horizon=HORIZON, model_config=ModelConfig(use_lstm=False),
                           step_s=step)  # fmt: skip
    labels = make_labels(frame, HORIZON, timeframe_sec=step)
    base_x = baseline_matrix(frame, None)
    ps, confs, ys, base_ps, up_rates = [], [], [], [], []
    for window, model in zip(windows, models, strict=True):
        assert model.strategy is not None
        predictor = model.strategy.predictor
        lo, hi = frame.index.searchsorted(window.test_start), frame.index.searchsorted(window.test_end)
        p = predictor.direction_probabilities(frame.iloc[max(0, lo - predictor.rows_needed) : hi])[
            -(hi - lo) :
        ]
        base_p = model.baseline.predict_up(base_x[lo:hi])
        ok = np.isfinite(p) & np.isfinite(base_p) & labels.valid[lo:hi]
        assert predictor.fitted_ is not None
        base_ps.append(base_p[ok])
        up_rates.append(np.full(int(ok.sum()), model.train_up_rate))
        ps.append(p[ok])
        confs.append(predictor.fitted_.confidence(p[ok]))
        ys.append(labels.direction[lo:hi][ok].astype(float))
    p, conf, y, base_p, up_rate = (np.concatenate(part) for part in (ps, confs, ys, base_ps, up_rates))
    return p, conf, y, base_p, up_rate


def summary(p: np.ndarray, confidence: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, object]:
    right = ((p >= 0.5) == (y == 1)).astype(float)
    gate = confidence >= threshold
    hits = float(right[gate].sum())
    return {
        "n": len(y),
        "mean_p": float(p.mean()),
        "realised_up_rate": float(y.mean()),
        "probability_by_decile": [
            (round(b.mean_predicted, 4), round(b.observed, 4), [round(v, 4) for v in b.observed_ci])
            for b in calibration_by_decile(y, p)
        ],
        "confidence_by_decile": [
            (round(b.mean_predicted, 4), round(b.observed, 4), [round(v, 4) for v in b.observed_ci])
            for b in calibration_by_decile(right, confidence)
        ],
        "threshold": threshold,
        "share_at_or_above_threshold": float(gate.mean()),
        "hit_rate_there": hits / gate.sum() if gate.any() else None,
        "hit_rate_there_ci": wilson_interval(hits, int(gate.sum())) if gate.any() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--start", default="2021-10-11")
    parser.add_argument("--end", default="2022-10-11")
    args = parser.parse_args()
    frame = load_candles(CandleSource(symbol=args.symbol, timeframe="1h", file=args.data))
    p, confidence, y, base_p, up_rate = pooled(frame, args.start, args.end)
    print(
        json.dumps(summary(p, confidence, y, StrategySettings.model_fields["ml_threshold"].default), indent=1)
    )
    for arm, probs in (("baseline forest", base_p), ("strategy", p)):
        m = prediction_metrics(y, probs, up_rate, horizon=HORIZON)
        print(f"{arm:16s} AUC {m['auc']:.3f} [{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]  Brier "
              f"{m['brier']:.4f} [{m['brier_ci'][0]:.4f}, {m['brier_ci'][1]:.4f}]  base-rate Brier "
              f"{m['base_rate_brier']:.4f}  n {m['n']}")  # fmt: skip


if __name__ == "__main__":
    main()
