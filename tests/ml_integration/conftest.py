"""The ML library tests' model size. Their fixtures (seeded synthetic candles, the tiny trained
strategy) live in tests/conftest.py, shared with the webhook and end-to-end tests that need a
model; real candles come through ``tests.conftest.shared_candle_file`` (skipped when absent)."""

from __future__ import annotations

from ml_integration.lstm import LSTMConfig
from ml_integration.prediction import ModelConfig

#: Small enough to train in about a second (plus the one-off TensorFlow import).
TINY = ModelConfig(
    n_estimators=30,
    max_depth=6,
    min_samples_leaf=20,
    gb_max_iter=30,
    lstm=LSTMConfig(units=(8, 4), epochs=2, batch_size=256),
    n_jobs=1,
    # The suite's shared model serves the default blend without a tournament (which would cost
    # every training here several fits, and serve "no model" on the edgeless synthetic candles);
    # tests/ml_integration/test_tournament.py runs the tournament itself.
    tournament=(),
)

# ``candles`` and ``trained`` (the one tiny strategy the whole suite shares) are in tests/conftest.py.
