"""The ML library the gateway uses to enrich alerts: candles in, predictions and signals out.

It knows nothing about Flask, orders or ``engine``. Serving (loading a saved strategy and
calling ``generate_signal``) runs on numpy alone; TensorFlow is imported only while training
the LSTM. The training names (``create_ml_training_pipeline`` and friends) are imported
lazily so that ``import ml_integration`` stays light.
"""

from __future__ import annotations

from typing import Any

from ml_integration.candles import find_gaps, read_candle_file, validate_candles
from ml_integration.exceptions import (
    CandleDataError,
    GapInWindowError,
    MLError,
    ModelIntegrityError,
    NotTrainedError,
)
from ml_integration.features import FEATURE_NAMES, LOOKBACK, FeatureEngineering
from ml_integration.prediction import MLPricePrediction, ModelConfig, Prediction
from ml_integration.store import latest_version, load_latest_strategy, save_version
from ml_integration.strategy import MLTradingStrategy, StrategyConfig, TradingSignal
from ml_integration.synthetic import synthetic_candles

__all__ = [
    "FEATURE_NAMES",
    "LOOKBACK",
    "CandleDataError",
    "FeatureEngineering",
    "GapInWindowError",
    "MLError",
    "MLPricePrediction",
    "MLTradingStrategy",
    "ModelConfig",
    "ModelIntegrityError",
    "NotTrainedError",
    "Prediction",
    "StrategyConfig",
    "TradingSignal",
    "create_ml_training_pipeline",
    "create_training_config",
    "find_gaps",
    "latest_version",
    "load_latest_strategy",
    "read_candle_file",
    "run_batch_training",
    "save_version",
    "synthetic_candles",
    "validate_candles",
]

_TRAINING_NAMES = {"create_ml_training_pipeline", "create_training_config", "run_batch_training"}


def __getattr__(name: str) -> Any:
    if name in _TRAINING_NAMES:
        from ml_integration import training

        return getattr(training, name)
    raise AttributeError(f"module 'ml_integration' has no attribute {name!r}")
