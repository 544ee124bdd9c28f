"""FreqAI's side of ``bench/bench_walkforward.py``: one freqtrade backtest with FreqAI retraining a
LightGBM classifier every 30 days on the 180 days before (13 retrains over 2021-10-11 → 2022-10-11),
on the same shared BTC/USDT 1h candles, offline.

    python bench/freqai_walkforward.py --data /path/BTC_USDT-1h.json [--threads 1]

Run by an interpreter that has ``freqtrade`` (and FreqAI's ``scikit-learn``, ``lightgbm``,
``datasieve``) installed; prints one JSON line: wall seconds and the retrains counted. Freqtrade
loads the exchange's market list through the network at start; there is none here, so the
runner gives it BTC/USDT's market (precision and limits of Binance spot) instead. The candles are
linked into a temporary user directory, never copied into the project.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

STRATEGY = '''
import numpy as np
import talib.abstract as ta
from pandas import DataFrame
from freqtrade.strategy import IStrategy


class TvgwFreqaiBench(IStrategy):
    """FreqAI's documented example, reduced: features on 10/20-bar periods, 5-bar up/down target."""

    timeframe = "1h"
    minimal_roi = {"0": 0.1}
    stoploss = -0.05
    process_only_new_candles = True
    startup_candle_count = 40
    can_short = False

    def feature_engineering_expand_all(
        self, dataframe: DataFrame, period: int, metadata: dict, **kwargs
    ) -> DataFrame:
        dataframe["%-rsi-period"] = ta.RSI(dataframe, timeperiod=period)
        dataframe["%-mfi-period"] = ta.MFI(dataframe, timeperiod=period)
        dataframe["%-adx-period"] = ta.ADX(dataframe, timeperiod=period)
        dataframe["%-roc-period"] = ta.ROC(dataframe, timeperiod=period)
        volume = dataframe["volume"]
        dataframe["%-relative_volume-period"] = volume / volume.rolling(period).mean()
        return dataframe

    def feature_engineering_expand_basic(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-pct-change"] = dataframe["close"].pct_change()
        dataframe["%-raw_volume"] = dataframe["volume"]
        return dataframe

    def feature_engineering_standard(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        dataframe["%-day_of_week"] = dataframe["date"].dt.dayofweek
        dataframe["%-hour_of_day"] = dataframe["date"].dt.hour
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs) -> DataFrame:
        self.freqai.class_names = ["down", "up"]
        dataframe["&s-up_or_down"] = np.where(dataframe["close"].shift(-5) > dataframe["close"], "up", "down")
        return dataframe

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df.loc[(df["do_predict"] == 1) & (df["&s-up_or_down"] == "up"), "enter_long"] = 1
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df.loc[df["&s-up_or_down"] == "down", "exit_long"] = 1
        return df
'''


def config(threads: int) -> dict:
    pricing = {"price_side": "same", "use_order_book": False, "price_last_balance": 0.0}
    return {
        "max_open_trades": 1, "stake_currency": "USDT", "stake_amount": "unlimited", "dry_run": True,
        "dry_run_wallet": 10000, "timeframe": "1h", "dataformat_ohlcv": "json", "bot_name": "tvgw-bench",
        "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT"], "ccxt_config": {},
                     "ccxt_async_config": {}},
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": pricing, "exit_pricing": pricing,
        "freqai": {
            "enabled": True, "identifier": "tvgw-bench", "purge_old_models": 2,
            "train_period_days": 180, "backtest_period_days": 30,
            "feature_parameters": {
                "include_timeframes": ["1h"], "include_corr_pairlist": [], "label_period_candles": 5,
                "include_shifted_candles": 2, "indicator_periods_candles": [10, 20], "DI_threshold": 0,
                "use_SVM_to_remove_outliers": False,
            },
            "data_split_parameters": {"test_size": 0.25, "random_state": 1, "shuffle": False},
            "model_training_parameters": {"n_estimators": 200, "n_jobs": threads, "verbose": -1},
        },
    }  # fmt: skip


def offline_markets() -> None:
    """Freqtrade asks the exchange for its market list at start: give it BTC/USDT instead."""
    from freqtrade.exchange.exchange import Exchange

    market = {
        "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
        "quoteId": "USDT",
        "active": True, "spot": True, "type": "spot", "contract": False, "linear": None, "inverse": None,
        "precision": {"amount": 1e-5, "price": 0.01, "base": 1e-8, "quote": 1e-8},
        "limits": {"amount": {"min": 1e-5, "max": 9000.0}, "price": {"min": 0.01, "max": 1e6},
                   "cost": {"min": 5.0, "max": 9e6}, "leverage": {"min": None, "max": None}},
        "maker": 0.001, "taker": 0.001, "info": {},
    }  # fmt: skip

    def reload_markets(self, force: bool = False, *, load_leverage_tiers: bool = True) -> None:
        self._markets = {"BTC/USDT": market}
        self._api.markets = self._markets
        self._api.markets_by_id = {"BTCUSDT": [market]}
        self._last_markets_refresh = 1

    Exchange.reload_markets = reload_markets  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (default 1, as ours)")
    parser.add_argument("--timerange", default="20211011-20221011", help="traded period (freqtrade's form)")
    args = parser.parse_args()
    offline_markets()
    from freqtrade.main import main as freqtrade_main

    with tempfile.TemporaryDirectory(prefix="bench-freqai-") as tmp:
        user = Path(tmp)
        (user / "data" / "binance").mkdir(parents=True)
        (user / "data" / "binance" / "BTC_USDT-1h.json").symlink_to(args.data.resolve())
        (user / "strategies").mkdir()
        (user / "strategies" / "TvgwFreqaiBench.py").write_text(STRATEGY)
        (user / "config.json").write_text(json.dumps(config(args.threads)))
        log = user / "freqtrade.log"
        argv = ["backtesting", "--config", str(user / "config.json"), "--userdir", str(user),
                "--strategy", "TvgwFreqaiBench", "--freqaimodel", "LightGBMClassifier",
                "--timerange", args.timerange, "--logfile", str(log), "--cache", "none"]  # fmt: skip
        started = time.perf_counter()
        try:
            freqtrade_main(argv)
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                print(log.read_text()[-4000:] if log.exists() else "", file=sys.stderr)
                raise
        wall = time.perf_counter() - started
        text = log.read_text() if log.exists() else ""
        retrains = text.count("Done training")
    print(json.dumps({"wall_s": wall, "retrains": retrains}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
