"""Labels and the purged time-ordered split."""

from __future__ import annotations

import numpy as np
import pytest

from ml_integration.labels import make_labels, purged_split


def test_labels_are_the_forward_return_and_its_sign(candles):
    labels = make_labels(candles, 5)
    close = candles["close"].to_numpy()
    np.testing.assert_allclose(labels.forward_return[:-5], np.log(close[5:] / close[:-5]))
    assert not labels.valid[-5:].any() and labels.valid[:-5].all()
    assert (labels.direction[:-5] == (close[5:] > close[:-5])).all()


def test_labels_across_a_gap_are_dropped(candles):
    holed = candles.drop(candles.index[1000:1003])
    labels = make_labels(holed, 5)
    # rows 995..999 look ahead across the hole
    assert not labels.valid[995:1000].any()
    assert labels.valid[994] and labels.valid[1000]


@pytest.mark.parametrize("gap", [1, 5, 24])
def test_split_is_ordered_and_purged(gap):
    split = purged_split(1000, test_fraction=0.2, calibration_fraction=0.15, gap=gap)
    assert split.train[-1] < split.calibration[0] < split.calibration[-1] < split.test[0]
    assert split.calibration[0] - split.train[-1] == gap + 1
    assert split.test[0] - split.calibration[-1] == gap + 1
    assert split.test[-1] == 999 and len(split.test) == 200 and len(split.calibration) == 150
    # with gap >= horizon, a training label window (t, t + horizon] never reaches a later part
    horizon = gap
    assert split.train[-1] + horizon < split.calibration[0]


def test_split_refuses_impossible_requests():
    with pytest.raises(ValueError, match="too few"):
        purged_split(10, test_fraction=0.3, calibration_fraction=0.3, gap=5)
    with pytest.raises(ValueError, match="fractions"):
        purged_split(100, test_fraction=0.6, calibration_fraction=0.5, gap=1)


def test_purged_folds_are_time_ordered_purged_and_cover_every_row_after_the_first_block() -> None:
    from ml_integration.labels import purged_folds

    folds = purged_folds(1000, n_folds=4, gap=5)
    tested = np.concatenate([test for _, test in folds])
    assert tested.tolist() == list(range(200, 1000))  # every row after the first block, once, in order
    for train, test in folds:
        assert train[0] == 0 and train[-1] == test[0] - 6  # expanding, and exactly `gap` rows purged
    with pytest.raises(ValueError, match="too few"):
        purged_folds(10, n_folds=4, gap=5)
