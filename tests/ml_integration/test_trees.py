"""Compiled (numpy) trees give sklearn's numbers."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier

from ml_integration.trees import CompiledTrees, compile_forest_classifier, compile_hist_gradient_boosting


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1500, 12))
    y = (x[:, 0] - 0.5 * x[:, 3] + rng.normal(size=1500) > 0).astype(int)
    r = 0.01 * x[:, 1] + 0.002 * rng.normal(size=1500)
    return x, y, r, rng.normal(size=(400, 12))


def test_forest_probabilities_match_sklearn(tmp_path):
    x, y, _, test = _data()
    forest = RandomForestClassifier(n_estimators=40, max_depth=7, random_state=0, n_jobs=1).fit(x, y)
    compiled = compile_forest_classifier(forest)
    np.testing.assert_allclose(compiled.predict(test), forest.predict_proba(test)[:, 1], atol=1e-12)
    compiled.save(tmp_path / "f.npz")
    np.testing.assert_array_equal(
        CompiledTrees.load(tmp_path / "f.npz").predict(test), compiled.predict(test)
    )


def test_boosting_predictions_match_sklearn():
    x, _, r, test = _data(1)
    model = HistGradientBoostingRegressor(max_iter=60, max_depth=4, early_stopping=False, random_state=0).fit(
        x, r
    )
    compiled = compile_hist_gradient_boosting(model)
    np.testing.assert_allclose(compiled.predict(test), model.predict(test), atol=1e-12)
