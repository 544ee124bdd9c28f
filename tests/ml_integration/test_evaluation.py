"""The one metrics module: the rank AUC against a brute-force pairwise count, one Wilson interval."""

from __future__ import annotations

import numpy as np
import pytest

from ml_integration.evaluation import brier_score, direction_report, rank_auc, wilson_interval


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The definition, O(n²): the share of (positive, negative) pairs ranked right, ties half."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", range(20))
def test_rank_auc_equals_the_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes present
    # Few distinct scores, so many ties within and across the classes.
    scores = np.round(rng.random(n) * rng.integers(1, 12), 0) / 12
    assert len(np.unique(scores)) < n  # the perturbation the test is about: ties exist
    assert rank_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_rank_auc_known_values_and_one_class() -> None:
    assert rank_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert rank_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert rank_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied: no skill
    assert rank_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    with pytest.raises(ValueError, match="as many labels as scores"):
        rank_auc([0, 1], [0.5])


def test_direction_report_uses_the_rank_auc_and_one_wilson() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, 300), 0, 1).round(1)
    report = direction_report(y, p, train_up_rate=0.5, n_boot=20)
    assert report.auc == pytest.approx(pairwise_auc(y, p))
    hits = int(((p >= 0.5) == (y == 1)).sum())
    assert report.accuracy_ci == wilson_interval(hits, 300)
    assert report.brier == pytest.approx(brier_score(y, p))
    low, high = report.auc_ci
    assert low <= report.auc <= high


def test_wilson_interval_contains_the_proportion_and_narrows_with_n() -> None:
    low, high = wilson_interval(7, 10)
    assert low < 0.7 < high
    low_big, high_big = wilson_interval(700, 1000)
    assert low < low_big < 0.7 < high_big < high
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
