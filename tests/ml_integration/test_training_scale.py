"""Training with tuning, and batch training on a Dask cluster (real SQLite, real model folders,
a real ``distributed.LocalCluster`` with worker processes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_integration import create_ml_training_pipeline, run_batch_training
from ml_integration.store import load_latest_strategy
from ml_integration.synthetic import synthetic_candles
from ml_integration.training import FOREST_FIELDS
from storage.database import Storage, query
from tvgw.cli import main

from .conftest import TINY

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
MODEL = {**TINY.__dict__, "use_lstm": False, "lstm": {}, "n_jobs": 1}


def _batch(folder: Path, cluster: str | None = None, **overrides: Any) -> tuple[list[Any], Storage]:
    storage = Storage(folder / "db.sqlite")
    storage.migrate()
    pipeline = create_ml_training_pipeline(storage=storage, model_dir=folder / "models")
    results = run_batch_training(
        SYMBOLS, "1h", 60, pipeline=pipeline, overrides={"synthetic": True, "model": MODEL, **overrides},
        cluster=cluster,
    )  # fmt: skip
    return results, storage


def _served_outputs(model_dir: Path, symbol: str, frame: Any) -> np.ndarray:
    """The saved (reloaded from disk) models' outputs on every usable row of ``frame``."""
    predictor = load_latest_strategy(model_dir, symbol, "1h").predictor
    design = predictor.design(frame, 5)
    x = design.matrix[design.rows]
    fitted = predictor.fitted_
    assert fitted is not None
    return np.column_stack([fitted.calibrator(fitted.direction.predict(x)), fitted.boosting.predict(x)])


@pytest.mark.slow
def test_a_batch_on_a_dask_cluster_gives_the_local_models(tmp_path):
    from distributed import LocalCluster

    tuned = {"tuning_method": "random", "n_trials": 2}
    local, _ = _batch(tmp_path / "local", **tuned)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        remote, storage = _batch(tmp_path / "dask", cluster.scheduler_address, **tuned)
        prefixes = list(cluster.scheduler.task_prefixes)
    for work in ("cv_score", "_train_or_error"):  # the tuning trials and the fits
        assert any(work in p for p in prefixes), f"{work} did not run on the cluster: {prefixes}"
    assert [r.symbol for r in remote] == SYMBOLS
    jobs = query(storage, "SELECT symbol, status FROM ml_training_jobs ORDER BY id")
    assert [tuple(j) for j in jobs] == [(s, "done") for s in SYMBOLS]
    frame = synthetic_candles(1200, seed=9)  # rows neither run trained on
    for here, there in zip(local, remote, strict=True):
        assert here.report["holdout"]["direction"] == there.report["holdout"]["direction"]
        assert here.report["tuning"]["best_params"] == there.report["tuning"]["best_params"]
        ours = _served_outputs(tmp_path / "local" / "models", here.symbol, frame)
        theirs = _served_outputs(tmp_path / "dask" / "models", there.symbol, frame)
        assert len(ours) > 500
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_a_failed_symbol_is_recorded_and_the_others_are_saved(tmp_path):
    storage = Storage(tmp_path / "db.sqlite")
    storage.migrate()
    pipeline = create_ml_training_pipeline(storage=storage, model_dir=tmp_path / "models")
    good = synthetic_candles(1500, seed=1)
    good.to_csv(tmp_path / "good.csv", index_label="time")
    good.iloc[:150].to_csv(tmp_path / "short.csv", index_label="time")  # too few rows to train
    from ml_integration.training import create_training_config

    configs = [
        create_training_config("BTC/USDT", {"data_file": str(tmp_path / "good.csv"), "model": MODEL}),
        create_training_config("ETH/USDT", {"data_file": str(tmp_path / "short.csv"), "model": MODEL}),
    ]
    with pytest.raises(Exception, match="rows"):
        pipeline.run_many(configs)
    jobs = query(storage, "SELECT symbol, status, model_version FROM ml_training_jobs ORDER BY id")
    assert [(j["symbol"], j["status"]) for j in jobs] == [("BTC/USDT", "done"), ("ETH/USDT", "failed")]
    assert jobs[0]["model_version"] and load_latest_strategy(tmp_path / "models", "BTC/USDT", "1h")


@pytest.mark.slow
def test_tvgw_train_tune_feeds_the_tuned_forest_and_reuses_the_search(cli_env, capsys):
    tmp_path = cli_env
    argv = ["train", "--symbol", "BTC/USDT", "--synthetic", "--days", "60", "--quick", "--no-lstm",
            "--no-progress", "--tune", "--tuning-method", "random", "--n-trials", "2"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tuned random_forest random: 2 trials" in out and "base rate" in out
    (cache,) = (tmp_path / "models" / "tuning_results").glob("random_forest-random-*.json")
    tuned = json.loads(cache.read_text())["result"]
    assert set(tuned["best_params"]) == set(FOREST_FIELDS)
    served = load_latest_strategy(tmp_path / "models", "BTC/USDT", "1h").predictor.config
    assert {k: getattr(served, k) for k in FOREST_FIELDS} == tuned["best_params"]
    # the search saw the training rows only, never the calibration or test slices
    (job,) = query(Storage(tmp_path / "tvgw.sqlite"), "SELECT params FROM ml_training_jobs")
    assert json.loads(job["params"])["tuning_method"] == "random"
    predictor = load_latest_strategy(tmp_path / "models", "BTC/USDT", "1h").predictor
    assert tuned["n_rows"] == predictor.fitted_.info["split"]["train_rows"]
    assert main(argv) == 0
    assert "2 trials (cached)" in capsys.readouterr().out


def test_tvgw_train_refuses_bad_batch_options(cli_env, capsys):
    assert main(["train", "--symbol", "BTC/USDT", "--symbols", "ETH/USDT"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["train", "--symbols", "BTC/USDT,ETHUSDT", "--synthetic", "--offline"]) == 2
    assert "'ETHUSDT'" in capsys.readouterr().err
    assert main(["train", "--symbol", "BTC/USDT", "--synthetic", "--tune", "--n-trials", "0"]) == 2
    assert "n_trials must be >= 1" in capsys.readouterr().err


def test_a_candle_error_from_a_worker_reads_the_same_here():
    """Workers send errors back pickled: the message must not change on the way."""
    import pickle

    from ml_integration.exceptions import CandleDataError, GapInWindowError

    for error in (CandleDataError("too few rows", row=3, when="2024-01-01"), GapInWindowError("gap")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error) and back.row == error.row


def test_tvgw_train_sends_work_to_the_scheduler_the_environment_names(cli_env, monkeypatch, capsys):
    """TVGW_DASK_SCHEDULER is read by the command; an unreachable scheduler is a clear error."""
    import dask

    from tests.conftest import refused_port

    argv = ["train", "--symbol", "BTC/USDT", "--synthetic", "--days", "30", "--quick", "--no-lstm"]
    # The port is held (bound, never listening) for the whole run: nothing else can answer there.
    with refused_port() as port, dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        monkeypatch.setenv("TVGW_DASK_SCHEDULER", f"tcp://127.0.0.1:{port}")
        assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tvgw train: ") and "127.0.0.1" in err and "Traceback" not in err
    (job,) = query(Storage(cli_env / "tvgw.sqlite"), "SELECT status, error FROM ml_training_jobs")
    assert job["status"] == "failed" and "127.0.0.1" in job["error"]
