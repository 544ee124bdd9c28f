"""Benchmark of the volatility forecast on real candles: walk-forward scores, training and serving cost.

    .venv/bin/python -m bench.bench_volatility [--symbols BTC_USDT ETH_USDT] [--windows 12]
        [--train-days 365] [--test-days 30] [--horizon 5] [--calls 1000]

1. Walk-forward on each shared Binance 1h file: for each of ``--windows`` consecutive
   ``--test-days`` blocks ending at the file's last bar, the volatility part is trained exactly
   as ``tvgw train`` trains it (``train_volatility``: GARCH(1,1) + ridge, weight chosen on its
   own calibration slice, then refit on every row) on the ``--train-days`` before the block,
   and forecasts every bar of the block. Pooled over the blocks: QLIKE and R² of log volatility
   of GARCH, ML, combined and the two naive baselines (last ``horizon`` bars' realised
   volatility; the training window's mean), with 95% block-bootstrap intervals, the
   Mincer-Zarnowitz R² and the paired QLIKE gain over the long-run mean
   (``evaluation.volatility_report``).
2. Training seconds of the volatility part per symbol-year.
3. ``generate_signal`` with and without the volatility part on ``--calls`` windows (the same
   fitted direction model, no LSTM: the part's cost does not depend on it).

Figures are printed, not asserted: this is not part of the test run. A missing file is skipped
with a line saying so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data" / "ohlcv" / "binance"

_NAMES = ("garch", "ml", "combined", "last_realised", "long_run_mean")


@dataclass
class _Pooled:
    realised: list[np.ndarray] = field(default_factory=list)
    forecasts: dict[str, list[np.ndarray]] = field(default_factory=lambda: {n: [] for n in _NAMES})
    train_s: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def _walk_forward(frame, args) -> _Pooled:
    from common.indicators import rolling_mean
    from ml_integration.candles import epoch_seconds
    from ml_integration.volatility import VOL_WINDOW, log_returns, realised_forward, train_volatility

    pooled = _Pooled()
    block, train = args.test_days * 24, args.train_days * 24
    first = len(frame) - args.windows * block
    for k in range(args.windows):
        start, end = first + k * block, first + (k + 1) * block
        t0 = time.perf_counter()
        history = frame.iloc[start - train : start]
        model, report = train_volatility(history, horizon=args.horizon, timeframe_sec=3600)
        pooled.train_s.append(time.perf_counter() - t0)
        pooled.weights.append(report["weight_garch"])
        # forecasts for the block's bars, from a frame that ends where their targets end
        context = frame.iloc[start - VOL_WINDOW - 1 : end + args.horizon]
        values = context.to_numpy()
        returns = log_returns(values[:, 3], epoch_seconds(context.index), 3600)
        parts = model.components(values, returns)
        rows = np.arange(VOL_WINDOW + 1, VOL_WINDOW + 1 + (end - start))
        y = realised_forward(returns, args.horizon)[rows]
        train_returns = log_returns(
            frame["close"].to_numpy()[start - train : start],
            epoch_seconds(frame.index[start - train : start]), 3600,
        )  # fmt: skip
        forecasts = {
            **parts,
            "last_realised": np.sqrt(rolling_mean(returns * returns, args.horizon)),
            "long_run_mean": np.full(len(returns), np.sqrt(np.nanmean(train_returns**2))),
        }
        ok = np.isfinite(y) & np.all([np.isfinite(f[rows]) for f in forecasts.values()], axis=0)
        pooled.realised.append(y[ok])
        for name in _NAMES:
            pooled.forecasts[name].append(forecasts[name][rows][ok])
    return pooled


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _print_scores(symbol: str, pooled: _Pooled, horizon: int) -> None:
    from ml_integration.evaluation import volatility_report

    y = np.concatenate(pooled.realised)
    base = np.concatenate(pooled.forecasts["long_run_mean"])
    print(f"\n== {symbol}: pooled walk-forward, {len(y)} bars, {horizon}-bar realised vol ==")
    print(f"  {'forecast':14s} {'QLIKE':>7s} {'95% CI':>17s} {'R2 log':>7s} {'95% CI':>17s} "
          f"{'MZ R2':>6s} {'95% CI':>15s} {'gain vs mean':>12s} {'95% CI':>17s}")  # fmt: skip
    for name in _NAMES:
        r = volatility_report(y, np.concatenate(pooled.forecasts[name]), baseline_vol=base, block=24)
        print(
            f"  {name:14s} {r.qlike:7.4f} {_ci(r.qlike_ci):>17s} {r.r2_log:7.3f} {_ci(r.r2_log_ci):>17s} "
            f"{r.mz_r2_log:6.3f} {_ci(r.mz_r2_log_ci):>15s} {r.qlike_gain:12.4f} {_ci(r.qlike_gain_ci):>17s}"
        )
    print(
        f"  training the volatility part: mean {np.mean(pooled.train_s):.2f} s, max "
        f"{np.max(pooled.train_s):.2f} s per {len(pooled.train_s)} windows; GARCH weight per "
        f"window {', '.join(f'{w:.2f}' for w in pooled.weights)}"
    )


def _latency(frame, calls: int) -> None:
    from ml_integration.prediction import ModelConfig
    from ml_integration.strategy import MLTradingStrategy

    data = frame.iloc[-(365 * 24 + calls) : -calls]
    strategy = MLTradingStrategy(model_config=ModelConfig(use_lstm=False))
    strategy.train_strategy(data, symbol="BTC/USDT", timeframe="1h")
    model = strategy.volatility
    need = strategy.predictor.rows_needed + 50
    timings: dict[str, list[float]] = {"with": [], "without": []}
    for i in range(calls):
        window = frame.iloc[len(frame) - calls + i - need : len(frame) - calls + i]
        for label, part in (("with", model), ("without", None)):  # interleaved: same load for both
            strategy.volatility = part
            t = time.thread_time()
            strategy.generate_signal(window, "BTC/USDT", now=window.index[-1].timestamp() + 3600)
            timings[label].append((time.thread_time() - t) * 1000)
    strategy.volatility = model
    w, wo = np.array(timings["with"]), np.array(timings["without"])
    print(f"\n== generate_signal CPU time, {calls} windows, no LSTM ==")
    for label, ms in (("without the volatility part", wo), ("with it", w)):
        print(f"  {label:28s} p50 {np.percentile(ms, 50):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms")
    print(f"  added (p50 of paired differences) {np.percentile(w - wo, 50):.3f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", nargs="+", default=["BTC_USDT", "ETH_USDT"])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--train-days", type=int, default=365)
    parser.add_argument("--test-days", type=int, default=30)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    from ml_integration import read_candle_file

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared machine)")
    latency_frame = None
    for symbol in args.symbols:
        path = DATA / f"{symbol}-1h.json"
        if not path.exists():
            print(f"skipped {symbol}: {path} not found (the shared data folder sits beside the repo)")
            continue
        frame = read_candle_file(path)
        print(f"data: {path.name}, {len(frame)} candles {frame.index[0]} .. {frame.index[-1]}")
        _print_scores(symbol, _walk_forward(frame, args), args.horizon)
        latency_frame = frame if latency_frame is None else latency_frame
    if latency_frame is not None and args.calls > 0:
        _latency(latency_frame, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
