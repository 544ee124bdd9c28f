"""Training configuration and batch training through the pipeline (real SQLite, real files)."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest

from ml_integration import create_ml_training_pipeline, create_training_config, run_batch_training
from ml_integration.artifacts import library_versions
from ml_integration.lstm import LSTMConfig
from ml_integration.prediction import MLPricePrediction, ModelConfig
from ml_integration.store import latest_version
from storage.database import Storage, query

from .conftest import TINY


def test_training_config_validates_and_nests():
    config = create_training_config(
        "ETH/USDT", {"days": 30, "model": {"n_estimators": 7, "lstm": {"epochs": 1}}}
    )
    assert config.days == 30 and config.model.n_estimators == 7 and config.model.lstm.epochs == 1
    with pytest.raises(ValueError, match=r"unknown training options \['dayz'\]"):
        create_training_config("ETH/USDT", {"dayz": 3})
    with pytest.raises(ValueError, match=r"unknown model options \['trees'\]"):
        create_training_config("ETH/USDT", {"model": {"trees": 3}})
    with pytest.raises(ValueError, match=r"unknown LSTM options \['unitz'\]"):
        create_training_config("ETH/USDT", {"model": {"lstm": {"unitz": [8]}}})
    with pytest.raises(ValueError, match="timeframe"):
        create_training_config("ETH/USDT", {"timeframe": "1 hour"})
    with pytest.raises(ValueError, match="BTC/USDT"):
        create_training_config("BTCUSDT")


def test_a_model_config_reads_back_from_its_json_and_from_training_options():
    """One reader for both dict forms: the stored JSON (tuples come back as lists) gives the
    same config, and a training run's ``model`` options build it the same way."""
    config = ModelConfig(direction_learners=("forest",), lstm=LSTMConfig(units=(8, 4), epochs=1))
    stored = json.loads(json.dumps(config.to_dict()))
    assert stored["lstm"]["units"] == [8, 4]
    assert ModelConfig.from_dict(stored) == config
    assert create_training_config("ETH/USDT", {"model": stored}).model == config
    with pytest.raises(ValueError, match=r"unknown MLPricePrediction options \['trees'\]"):
        MLPricePrediction(trees=3)


def test_a_model_records_the_library_versions_it_was_written_with():
    versions = library_versions("numpy", "no-such-distribution-tvgw")
    assert versions == {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "no-such-distribution-tvgw": "not installed",
    }


def test_batch_training_saves_one_version_per_symbol(tmp_path):
    storage = Storage(tmp_path / "db.sqlite")
    storage.migrate()
    pipeline = create_ml_training_pipeline(storage=storage, model_dir=tmp_path / "models")
    model = {**TINY.__dict__, "use_lstm": False, "lstm": {}}
    results = run_batch_training(
        ["BTC/USDT", "ETH/USDT"], "1h", 100, pipeline=pipeline, overrides={"synthetic": True, "model": model}
    )
    assert [r.symbol for r in results] == ["BTC/USDT", "ETH/USDT"]
    for result in results:
        assert result.synthetic and result.data_source == "synthetic"
        assert latest_version(tmp_path / "models", result.symbol, "1h") == result.version
    jobs = query(storage, "SELECT symbol, status FROM ml_training_jobs ORDER BY id")
    assert [tuple(j) for j in jobs] == [("BTC/USDT", "done"), ("ETH/USDT", "done")]
