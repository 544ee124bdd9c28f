"""Small, fast inputs for the model-zoo tests: feature rows of a synthetic market with a
planted edge (the next bar leans against the last one), and tiny model sizes."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pytest

from ml_integration.candles import epoch_seconds
from ml_integration.features import MODEL_COLUMNS, compute_feature_matrix
from ml_integration.labels import make_labels
from ml_integration.synthetic import planted_edge_candles

#: Model sizes that fit a few hundred rows in well under a second each (one thread each).
TINY_PARAMS: dict[str, dict[str, object]] = {
    "random_forest": {"n_estimators": 20, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 20},
    "xgboost": {"n_estimators": 20, "n_jobs": 1},
    "lightgbm": {"n_estimators": 20, "n_jobs": 1},
    "catboost": {"iterations": 20, "thread_count": 1},
    "svm": {"gap": 1},
    "lstm": {"units": (4,), "epochs": 2, "sequence_length": 4, "batch_size": 256},
}

#: The quick models most ensemble tests combine (seconds in all).
FAST_MODELS = ("random_forest", "logistic_regression", "xgboost")


@functools.cache
def edge_rows(n_bars: int = 1200, edge: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features, 0/1 direction one bar ahead) of a planted-edge market, rows in time order."""
    frame = planted_edge_candles(n_bars, edge=edge, seed=seed)
    matrix = compute_feature_matrix(frame.to_numpy(), epoch_seconds(frame.index), 3600)[:, MODEL_COLUMNS]
    labels = make_labels(frame, 1)
    rows = np.flatnonzero(np.isfinite(matrix).all(axis=1) & labels.valid)
    return matrix[rows], labels.direction[rows]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread per model in these tests: on a shared, loaded machine OpenMP's
    spinning threads (HistGradientBoosting) turn a 0.3 s fit into 30 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
