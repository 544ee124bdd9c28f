"""The replay's shortcut: the full strategy's signal from feature rows computed once over the
whole period is the signal serving computes from the candles alone, bar for bar."""

from __future__ import annotations

import pytest

from ml_integration.candles import epoch_seconds
from ml_integration.features import compute_feature_matrix


@pytest.mark.parametrize("gap", [False, True])
def test_precomputed_features_give_the_served_signal(trained, candles, gap):
    frame = candles.drop(candles.index[1800:1804]) if gap else candles
    features = compute_feature_matrix(frame.to_numpy(), epoch_seconds(frame.index), 3600)
    bars = [400, 1200, 1801, 1850, 2000, len(frame) - 1]
    holds = 0
    for s in bars:
        served = trained.generate_signal(frame.iloc[: s + 1], "BTC/USDT", now=0.0)
        window = frame.iloc[: s + 1]
        replayed = trained.generate_signal(window, "BTC/USDT", now=0.0, features=features[: s + 1])
        assert replayed.to_dict() == served.to_dict()
        holds += served.quality_grade == "F" and served.ml_probability is None
    assert holds == (3 if gap else 0)  # bars whose window spans the hole hold, on both paths
