"""What the direction blend adds to a served signal: one-row P(up) of the blend (forest on the
selected columns + logistic regression) against the forest alone on every model column (the
shape served before the blend), default forest size, warm, 2,000 calls each.

    python -m bench.bench_direction_latency

Random columns with one planted informative one, so the trees are as deep as the real ones
(``max_depth`` 8); the feature computation that precedes this in ``generate_signal`` is the
same for both and not timed here (``bench.bench_ml`` times the whole call).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ml_integration.direction import DirectionParams, fit_learners
from ml_integration.features import MODEL_FEATURES


def _percentiles(predict: Callable[[np.ndarray], np.ndarray], row: np.ndarray) -> tuple[float, float]:
    for _ in range(50):
        predict(row)
    laps = []
    for _ in range(2000):
        t0 = time.perf_counter()
        predict(row)
        laps.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.asarray(laps) * 1e3, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    rng = np.random.default_rng(0)
    n_cols = len(MODEL_FEATURES)
    x = rng.normal(size=(4000, n_cols))
    y = (x[:, 3] + rng.normal(size=4000) > 0).astype(int)
    params = DirectionParams(n_jobs=1)
    forest_only = fit_learners(x, y, tuple(range(n_cols)), params).with_weights((1.0, 0.0, 0.0))
    blend = fit_learners(x, y, tuple(range(0, n_cols, 2)), params).with_weights((0.7, 0.0, 0.3))
    for name, model in (("forest alone, every column", forest_only), ("forest + logistic, half", blend)):
        p50, p99 = _percentiles(model.predict, x[:1])
        print(f"{name:28s} p50 {p50:.4f} ms  p99 {p99:.4f} ms")


if __name__ == "__main__":
    main()
