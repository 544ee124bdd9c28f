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


def test_walking_some_trees_gives_their_columns_and_only_trees_reading_a_column_move_with_it():
    """``leaf_values`` of a subset equals those trees' columns of the full walk; changing one
    column changes no leaf of a tree outside ``trees_reading`` (what permutation importance
    relies on to walk those trees alone)."""
    x, y, _, test = _data(2)
    x, test = x[:, ::-1].copy(), test[:, ::-1].copy()  # column 0 (what a leaf's entry holds) is noise
    forest = RandomForestClassifier(n_estimators=30, max_depth=4, max_features="sqrt", random_state=0,
                                    n_jobs=1).fit(x, y)  # fmt: skip
    compiled = compile_forest_classifier(forest)
    leaves = compiled.leaf_values(test)
    assert leaves.shape == (len(test), 30)
    np.testing.assert_array_equal(compiled.combine(leaves), compiled.predict(test))
    some = np.array([3, 7, 11])
    np.testing.assert_array_equal(compiled.leaf_values(test, some), leaves[:, some])
    for column in range(test.shape[1]):
        reading = compiled.trees_reading(column)
        used = {i for i, tree in enumerate(forest.estimators_) if (tree.tree_.feature == column).any()}
        assert set(reading.tolist()) == used
        moved = test.copy()
        moved[:, column] = np.random.default_rng(column).permutation(moved[:, column])
        others = np.setdiff1d(np.arange(30), reading)
        np.testing.assert_array_equal(compiled.leaf_values(moved, others), leaves[:, others])
