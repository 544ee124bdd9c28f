"""The walk-forward runs BLAS on one thread: on its small matrices OpenBLAS's extra threads only
spin (``direction.one_blas_thread``: ten logistic fits cost 10x the CPU with two threads on the
shared 2-core machine), and a ``--jobs`` worker process sets it again itself."""

from __future__ import annotations

from typing import Any

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from backtest import models, run


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads() -> Any:
    if not _blas_threads():
        pytest.skip("numpy has no BLAS thread pool threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        yield


@pytest.mark.usefixtures("two_blas_threads")
def test_a_window_trains_with_one_blas_thread(monkeypatch):
    seen: list[list[int]] = []
    monkeypatch.setattr(models, "_train_window", lambda *a, **k: seen.append(_blas_threads()) or "fitted")
    assert models.train_window(None, None, horizon=5, model_config=None, step_s=3600) == "fitted"  # type: ignore[arg-type]
    assert seen == [[1] * len(_blas_threads())]
    assert set(_blas_threads()) == {2}  # given back afterwards


@pytest.mark.usefixtures("two_blas_threads")
def test_the_whole_backtest_runs_with_one_blas_thread(monkeypatch):
    seen: list[list[int]] = []
    monkeypatch.setattr(run, "_run_backtest", lambda *a, **k: seen.append(_blas_threads()) or "result")
    assert run.run_backtest(None, None) == "result"  # type: ignore[arg-type]
    assert seen == [[1] * len(_blas_threads())]
