"""Figures behind the predictor's and the technical score's constants, on real candles.

Prints, for a Binance 1h file beside the repo (``../shared/data``):

* percentiles of the annualised 24-bar realised volatility
  (``ml_integration.market_call.realized_volatility``),
  which ground ``HIGH_VOLATILITY`` (leverage back to 1x);
* the leverage ``leverage_for`` gives at those percentiles for a few confidences;
* how often each technical-score component fires and the score distribution per side.

Run: ``.venv/bin/python -m bench.bench_market_inputs [SYMBOL]`` (default BTC_USDT).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ml_integration.market_call import HIGH_VOLATILITY, leverage_for, realized_volatility
from ml_integration.technical import COMPONENTS, technical_components

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ohlcv" / "binance"


def load(symbol: str) -> pd.DataFrame:
    path = DATA / f"{symbol}-1h.json"
    if not path.exists():
        sys.exit(f"no candles at {path}: this benchmark needs ../shared/data beside the repo")
    df = pd.DataFrame(json.loads(path.read_text()), columns=["ts", "open", "high", "low", "close", "volume"])
    df.index = pd.to_datetime(df.pop("ts"), unit="ms", utc=True)
    return df.astype(float)


def main() -> None:
    symbol = sys.argv[1] if len(sys.argv) > 1 else "BTC_USDT"
    df = load(symbol)
    print(f"{symbol} 1h: {len(df)} candles, {df.index[0]} .. {df.index[-1]}")

    # Every 6th bar keeps the run short; windows overlap, so the percentiles barely move.
    ends = range(25, len(df) + 1, 6)
    vols = np.array([realized_volatility(df.iloc[end - 25 : end], 24) for end in ends])
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    values = np.quantile(vols, quantiles)
    print(f"\nannualised 24-bar realised volatility over {len(vols)} windows:")
    for q, v in zip(quantiles, values, strict=True):
        print(f"  p{int(q * 100):02d}: {v:.3f}")
    print(f"  share at or above HIGH_VOLATILITY={HIGH_VOLATILITY}: {(vols >= HIGH_VOLATILITY).mean():.1%}")

    print("\nleverage_for(max_leverage=3) at those volatilities:")
    print("  confidence  " + "  ".join(f"p{int(q * 100):02d}" for q in quantiles))
    for confidence in (0.2, 0.5, 0.8, 1.0):
        row = [leverage_for(confidence=confidence, volatility=v, max_leverage=3.0) for v in values]
        print(f"  {confidence:10.1f}  " + "  ".join(f"{x:.2f}" for x in row))

    for side in ("buy", "sell"):
        table = technical_components(df, side).dropna()
        print(f"\ntechnical score, {side}: {len(table)} bars")
        print("  fires: " + ", ".join(f"{c} {(table[c] > 0).mean():.1%}" for c in COMPONENTS))
        score = table["score"]
        print(
            f"  score: mean {score.mean():.2f}, median {score.median():.1f}, "
            f">= 6 on {(score >= 6).mean():.2%} of bars, max {score.max():.1f}"
        )


if __name__ == "__main__":
    main()
