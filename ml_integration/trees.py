"""Tree ensembles as plain numpy arrays: no pickle on disk, no sklearn overhead per row.

A fitted ``RandomForestClassifier`` or ``HistGradientBoostingRegressor`` is flattened into one
table of nodes (feature, threshold, left, right, value) covering every tree. Prediction walks
all trees at once, one numpy step per tree level, so a single-row prediction costs tens of
microseconds instead of the milliseconds sklearn spends dispatching each tree, and the arrays
save to an ``.npz`` file that loads without executing code (unlike a joblib pickle).

Leaves point to themselves, so walking ``depth`` steps leaves every tree at its leaf whatever
its own depth. Split rule, as in sklearn: go left when ``x[feature] <= threshold``. Inputs must
be finite (the feature pipeline drops rows with NaN before they get here).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CompiledTrees",
    "compile_forest_classifier",
    "compile_hist_gradient_boosting",
    "compile_hist_gradient_boosting_classifier",
]


@dataclass(frozen=True)
class CompiledTrees:
    """Flattened trees. ``kind`` is ``"mean"`` (average of leaf values: a forest), ``"sum"``
    (``base`` plus the sum of leaf values: boosting) or ``"logistic"`` (the sigmoid of that sum:
    a boosted classifier's probability of class 1)."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    kind: str
    base: float
    n_features: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One value per row of ``x`` (shape (n, n_features))."""
        return self.combine(self.leaf_values(x))

    def leaf_values(self, x: np.ndarray, trees: np.ndarray | None = None) -> np.ndarray:
        """Each tree's leaf value for each row of ``x``: shape (n, trees); ``trees`` (positions,
        default every tree) walks only those. A tree's column does not depend on the others, so
        replacing some columns by a walk of those trees alone gives the same matrix."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected shape (n, {self.n_features}), got {x.shape}")
        roots = self.roots if trees is None else self.roots[trees]
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(roots, (len(x), len(roots)))
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node]

    def trees_reading(self, column: int) -> np.ndarray:
        """Positions of the trees with a split on ``column`` (the only ones whose leaf for a row
        can change when that column alone changes)."""
        nodes = np.arange(len(self.feature))
        split = (self.left != nodes) & (self.feature == column)  # a leaf points to itself
        tree_of = np.searchsorted(self.roots, nodes[split], side="right") - 1
        return np.unique(tree_of)

    def combine(self, leaves: np.ndarray) -> np.ndarray:
        """The ensemble's value per row from :meth:`leaf_values` of every tree."""
        if self.kind == "mean":
            return leaves.mean(axis=1)
        total = self.base + leaves.sum(axis=1)
        if self.kind == "logistic":
            return 0.5 * (np.tanh(0.5 * total) + 1.0)  # the sigmoid, without overflow warnings
        return total

    def to_arrays(self) -> dict[str, Any]:
        meta = np.array([self.depth, self.n_features], dtype=np.int64)
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "roots": self.roots,
            "meta": meta,
            "kind": np.array(self.kind),
            "base": np.array(self.base),
        }

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, **self.to_arrays())

    @classmethod
    def load(cls, path: str | Path) -> CompiledTrees:
        with np.load(path, allow_pickle=False) as data:
            arrays: dict[str, Any] = {key: data[key] for key in data.files}
        depth, n_features = (int(v) for v in arrays.pop("meta"))
        return cls(
            feature=arrays["feature"],
            threshold=arrays["threshold"],
            left=arrays["left"],
            right=arrays["right"],
            value=arrays["value"],
            roots=arrays["roots"],
            depth=depth,
            kind=str(arrays["kind"]),
            base=float(arrays["base"]),
            n_features=n_features,
        )


def _assemble(
    trees: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    kind: str,
    base: float,
    n_features: int,
) -> CompiledTrees:
    """Concatenate per-tree (feature, threshold, left, right, value, is_leaf) arrays."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
    roots, offset, depth = [], 0, 1
    for feature, threshold, left, right, value, is_leaf in trees:
        n = len(feature)
        own = np.arange(n)
        parts["feature"].append(np.where(is_leaf, 0, feature))
        parts["threshold"].append(np.where(is_leaf, np.inf, threshold))
        parts["left"].append(np.where(is_leaf, own, left) + offset)
        parts["right"].append(np.where(is_leaf, own, right) + offset)
        parts["value"].append(value)
        roots.append(offset)
        depth = max(depth, _depth(left, right, is_leaf))
        offset += n
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return CompiledTrees(
        feature=joined["feature"].astype(np.int64),
        threshold=joined["threshold"].astype(np.float64),
        left=joined["left"].astype(np.int64),
        right=joined["right"].astype(np.int64),
        value=joined["value"].astype(np.float64),
        roots=np.asarray(roots, dtype=np.int64),
        depth=depth,
        kind=kind,
        base=base,
        n_features=n_features,
    )


def _depth(left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray) -> int:
    level, frontier = 0, np.array([0])
    while True:
        inner = frontier[~is_leaf[frontier]]
        if not inner.size:
            return max(level, 1)
        frontier = np.concatenate([left[inner], right[inner]])
        level += 1


def compile_forest_classifier(forest: Any) -> CompiledTrees:
    """A fitted binary ``RandomForestClassifier`` → the probability of class 1 per row."""
    if list(forest.classes_) != [0, 1]:
        raise ValueError(f"expected a binary classifier with classes [0, 1], got {forest.classes_}")
    trees = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        counts = tree.value[:, 0, :]
        proba = counts[:, 1] / counts.sum(axis=1)
        is_leaf = tree.children_left == -1
        trees.append((tree.feature, tree.threshold, tree.children_left, tree.children_right, proba, is_leaf))
    return _assemble(trees, kind="mean", base=0.0, n_features=int(forest.n_features_in_))


def compile_hist_gradient_boosting(model: Any) -> CompiledTrees:
    """A fitted ``HistGradientBoostingRegressor`` (squared error, numeric features) → its
    prediction per row."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        is_leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            (
                nodes["feature_idx"],
                nodes["num_threshold"],
                nodes["left"],
                nodes["right"],
                nodes["value"],
                is_leaf,
            )
        )
    base = float(np.ravel(model._baseline_prediction)[0])
    return _assemble(trees, kind="sum", base=base, n_features=int(model.n_features_in_))


def compile_hist_gradient_boosting_classifier(model: Any) -> CompiledTrees:
    """A fitted binary ``HistGradientBoostingClassifier`` (numeric features) → the probability
    of class 1 per row: the same trees as the regressor's, read through a sigmoid."""
    if list(model.classes_) != [0, 1]:
        raise ValueError(f"expected a binary classifier with classes [0, 1], got {model.classes_}")
    return replace(compile_hist_gradient_boosting(model), kind="logistic")
