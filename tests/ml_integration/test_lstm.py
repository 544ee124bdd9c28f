"""The numpy LSTM reproduces TensorFlow; serving never imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ml_integration.features import FeatureEngineering
from ml_integration.labels import make_labels
from ml_integration.lstm import LSTMConfig, NumpyLSTM, build_sequences, sequence_ready, train_lstm

REPO = Path(__file__).resolve().parents[2]
#: float32 (TensorFlow) against float64 (numpy) over 24 steps of two layers.
TOLERANCE = 1e-5


@pytest.mark.slow  # imports TensorFlow and trains an LSTM
def test_numpy_forward_pass_matches_tensorflow(candles, tmp_path):
    features = FeatureEngineering().create_features(candles).to_numpy()
    labels = make_labels(candles, 5)
    rows = np.flatnonzero(sequence_ready(np.isfinite(features).all(axis=1), 24) & labels.valid)
    sequences = build_sequences(features, rows, 24)
    target = labels.forward_return[rows]
    model, keras_model = train_lstm(
        sequences[:1200],
        target[:1200],
        sequences[1300:1500],
        target[1300:1500],
        LSTMConfig(units=(12, 6), epochs=2, batch_size=256),
    )
    held_out = model.standardise(sequences[1500:]).astype(np.float32)
    reference = np.asarray(keras_model(held_out, training=False))[:, 0]
    ours = model.predict_scaled(held_out)
    assert np.std(reference) > 0  # a constant output would make the comparison meaningless
    assert np.max(np.abs(ours - reference)) <= TOLERANCE
    model.save(tmp_path / "lstm.npz")
    reloaded = NumpyLSTM.load(tmp_path / "lstm.npz")
    np.testing.assert_array_equal(reloaded.predict(sequences[1500:]), model.predict(sequences[1500:]))


def test_serving_a_saved_strategy_does_not_import_tensorflow(trained, candles, tmp_path):
    folder = trained.save_strategy(tmp_path / "model", version="v1")
    candles.to_pickle(tmp_path / "candles.pkl")  # the test's own frame, read back by the child
    script = textwrap.dedent(
        f"""
        import sys
        import pandas as pd
        from ml_integration import MLTradingStrategy
        strategy = MLTradingStrategy().load_strategy({str(folder)!r})
        signal = strategy.generate_signal(pd.read_pickle({str(tmp_path / "candles.pkl")!r}), "BTC/USDT")
        assert signal.action in ("buy", "sell", "hold"), signal
        print("tensorflow" in sys.modules, "keras" in sys.modules, "sklearn" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
