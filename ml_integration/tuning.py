"""Hyperparameter tuning chosen out of sample: grid, random or Optuna search scored by purged,
time-ordered cross-validation, with results cached so a second run costs nothing.

Why each piece is here:

* **Purged folds** (:func:`labels.purged_folds`, the project's one fold generator): a label at
  row t looks ``horizon`` bars ahead, so a shuffled k-fold (or folds without the gap) lets a
  model see the prices it is scored on and picks the parameters that overfit best.
* **A proper score** (log loss or Brier, from :mod:`evaluation`), pooled over every
  out-of-fold row and printed next to the *base-rate* score of the same folds (each fold's
  training up-rate predicted for its test rows): a tuned model that does not beat it has no
  edge, however good its parameters look.
* **Cache** under ``models/tuning_results/``: one JSON file per (model, method, space, data
  fingerprint, folds, scoring, seed, budget); reused unless ``retune``. A corrupt or
  incompatible file is ignored with a warning, never trusted.
* **Optuna studies in SQLite** (``optuna.db`` beside the JSON files), named from the same key
  without the budget, with ``load_if_exists``: an interrupted study resumes where it stopped,
  and a larger ``n_trials`` extends it.
* **joblib** runs the trials (a grid or random batch at once, Optuna in batches of ask/tell),
  so :func:`parallel_backend` with a Dask scheduler address moves the same work to a cluster.

Estimators come from a *factory*: ``factory(params) -> classifier`` with ``fit`` and
``predict_proba``. Without one, :func:`model_factory` builds the zoo's model of that name.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ml_integration.evaluation import brier_score, log_loss
from ml_integration.labels import purged_folds
from ml_integration.zoo import make_model

__all__ = [
    "SPACES",
    "Classifier",
    "Factory",
    "TuningResult",
    "cv_score",
    "model_factory",
    "parallel_backend",
    "tune",
]

Method = Literal["grid", "random", "optuna"]
Scoring = Literal["log_loss", "brier"]
Fold = tuple[np.ndarray, np.ndarray]
#: Search space: parameter name -> the values to try (one format for all three methods).
Space = Mapping[str, Sequence[Any]]

#: Bumped when the cache file's shape changes; older files are then ignored with a warning.
CACHE_FORMAT = 1

#: Default search spaces, keyed by the zoo's model names. Discrete values, so grid, random and
#: Optuna search the same space and its hash names the cache. Sized for hourly candles: trees
#: shallow and leaves large, because the signal is weak and the noise is not.
SPACES: dict[str, dict[str, list[Any]]] = {
    "random_forest": {
        "n_estimators": [100, 200, 400],
        "max_depth": [4, 6, 8, 12],
        "min_samples_leaf": [10, 30, 100],
    },
    "hist_gradient_boosting": {
        "max_iter": [100, 200, 400],
        "learning_rate": [0.02, 0.05, 0.1],
        "max_depth": [3, 5, 8],
        "min_samples_leaf": [20, 50, 200],
        "l2_regularization": [0.0, 1.0, 10.0],
    },
    "xgboost": {
        "n_estimators": [100, 200, 400],
        "max_depth": [3, 4, 6],
        "learning_rate": [0.02, 0.05, 0.1],
        "subsample": [0.7, 1.0],
        "colsample_bytree": [0.7, 1.0],
        "min_child_weight": [1, 5, 20],
    },
    "lightgbm": {
        "n_estimators": [100, 200, 400],
        "num_leaves": [15, 31, 63],
        "learning_rate": [0.02, 0.05, 0.1],
        "min_child_samples": [20, 50, 200],
        "subsample": [0.7, 1.0],
        "colsample_bytree": [0.7, 1.0],
    },
    "catboost": {
        "iterations": [200, 400],
        "depth": [4, 6, 8],
        "learning_rate": [0.03, 0.1],
        "l2_leaf_reg": [1.0, 3.0, 10.0],
    },
    "svm": {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01, 0.1]},
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0]},
    # names of ml_integration.lstm.LSTMConfig; lists of units are fine for every method
    "lstm": {"units": [[16, 8], [32, 16], [50, 30]], "dropout": [0.1, 0.2, 0.3], "epochs": [6, 12]},
}


class Classifier(Protocol):
    """What tuning needs of an estimator (any sklearn-compatible binary classifier)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Any: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


Factory = Callable[[dict[str, Any]], Classifier]


def model_factory(name: str, *, seed: int = 0) -> Factory:
    """The zoo's ``make_model`` for ``name`` as a factory of models with given parameters."""

    def make(params: dict[str, Any]) -> Classifier:
        model: Classifier = make_model(name, params, seed=seed)
        return model

    return make


@dataclass(frozen=True)
class TuningResult:
    """The outcome of one search; ``cached`` says whether it was read back instead of run."""

    name: str
    method: str
    scoring: str
    best_params: dict[str, Any]
    best_score: float
    base_rate_score: float
    n_trials: int
    seconds: float
    n_rows: int
    n_folds: int
    gap: int | None
    key: str
    trials: list[dict[str, Any]]
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for a report: best score against the base rate of the same folds."""
        verdict = "beats" if self.best_score < self.base_rate_score else "does NOT beat"
        source = "cached" if self.cached else f"{self.seconds:.1f} s"
        return (
            f"{self.name} {self.method}: {self.n_trials} trials ({source}), best {self.scoring} "
            f"{self.best_score:.5f} {verdict} base rate {self.base_rate_score:.5f}; {self.best_params}"
        )


# --- scoring -------------------------------------------------------------------------------------
_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"log_loss": log_loss, "brier": brier_score}


def _positive_proba(model: Classifier, x: np.ndarray) -> np.ndarray:
    """P(class 1). A training fold with one class gives a one-column ``predict_proba``."""
    proba = np.asarray(model.predict_proba(x))
    classes = list(getattr(model, "classes_", [0, 1]))
    if proba.ndim == 2 and proba.shape[1] == 2:
        return proba[:, 1]
    return np.full(len(x), 1.0 if classes == [1] else 0.0)


def cv_score(
    factory: Factory,
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    scoring: Scoring = "log_loss",
) -> float:
    """The pooled out-of-fold ``scoring`` of ``factory(params)`` over ``folds`` (lower is
    better): each fold's model is fit on its training rows only and scores its test rows."""
    scorer = _SCORERS[scoring]
    y_all, p_all = [], []
    for train, test in folds:
        model = factory(dict(params))
        model.fit(x[train], y[train])
        y_all.append(y[test])
        p_all.append(_positive_proba(model, x[test]))
    return scorer(np.concatenate(y_all), np.concatenate(p_all))


def _base_rate_score(y: np.ndarray, folds: Sequence[Fold], scoring: Scoring) -> float:
    """The score of predicting each fold's training up-rate for its test rows."""
    y_all = np.concatenate([y[test] for _, test in folds])
    p_all = np.concatenate([np.full(len(test), y[train].mean()) for train, test in folds])
    return _SCORERS[scoring](y_all, p_all)


def _run_trials(
    factory: Factory,
    candidates: Sequence[dict[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    scoring: Scoring,
    n_jobs: int | None,
) -> list[float]:
    """Score every candidate through joblib (whichever backend is active: local or Dask)."""
    from joblib import Parallel, delayed

    jobs = (delayed(cv_score)(factory, params, x, y, folds, scoring) for params in candidates)
    return [float(s) for s in Parallel(n_jobs=n_jobs)(jobs)]


# --- keys and cache ------------------------------------------------------------------------------
def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _fingerprint_data(x: np.ndarray, y: np.ndarray) -> str:
    xa, ya = np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.float64)
    return _digest(str(xa.shape).encode(), xa.tobytes(), ya.tobytes())


def _fingerprint_folds(folds: Sequence[Fold]) -> str:
    arrays = [np.ascontiguousarray(a, dtype=np.int64).tobytes() for fold in folds for a in fold]
    return _digest(str(len(folds)).encode(), *arrays)


def _study_key(name: str, method: str, space: Space, data: str, folds: str, scoring: str, seed: int) -> str:
    """What makes two searches the same search (the budget aside)."""
    spec = {"name": name, "method": method, "space": _jsonable(space), "data": data, "folds": folds,
            "scoring": scoring, "seed": seed}  # fmt: skip
    return _digest(json.dumps(spec, sort_keys=True).encode())[:24]


def _jsonable(value: Any) -> Any:
    """Tuples → lists, numpy scalars → Python: what a JSON round trip would give."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _cache_path(cache_dir: Path, name: str, method: str, key: str) -> Path:
    return cache_dir / f"{name}-{method}-{key}.json"


def _read_cache(path: Path, key: str) -> TuningResult | None:
    """The cached result at ``path``, or None (with a warning if the file is unusable)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else '?'}, "
                             f"expected {CACHE_FORMAT}")  # fmt: skip
        if data.get("key") != key:
            raise ValueError("its key does not match the search")
        result = TuningResult(**{**data["result"], "cached": True})
        if not math.isfinite(result.best_score) or not isinstance(result.best_params, dict):
            raise ValueError("it has no finite best score and parameters")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        warnings.warn(f"ignoring the tuning cache {path} ({exc}); tuning again", stacklevel=3)
        return None
    return result


def _write_cache(path: Path, result: TuningResult) -> None:
    """Write atomically, so an interrupted run never leaves half a file to be trusted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".json.partial")
    staging.write_text(json.dumps({"format": CACHE_FORMAT, "key": result.key, "result": result.to_dict()},
                                  indent=2, sort_keys=True))  # fmt: skip
    staging.replace(path)


# --- the three searches --------------------------------------------------------------------------
def _grid_candidates(space: Space) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid

    return [dict(p) for p in ParameterGrid({k: list(v) for k, v in space.items()})]


def _random_candidates(space: Space, n_trials: int, seed: int) -> list[dict[str, Any]]:
    """``n_trials`` distinct points of the space (all of it if it is smaller)."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    lists = {k: list(v) for k, v in space.items()}
    n = min(n_trials, len(ParameterGrid(lists)))
    return [dict(p) for p in ParameterSampler(lists, n_iter=n, random_state=seed)]


def _search_listed(
    factory: Factory,
    candidates: list[dict[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    scoring: Scoring,
    n_jobs: int | None,
) -> list[dict[str, Any]]:
    scores = _run_trials(factory, candidates, x, y, folds, scoring, n_jobs)
    return [{"params": _jsonable(p), "score": s} for p, s in zip(candidates, scores, strict=True)]


def _suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Optuna's categorical choice per parameter; values Optuna cannot store (lists) are
    chosen by index."""
    params = {}
    for key, values in space.items():
        choices = list(values)
        if all(v is None or isinstance(v, bool | int | float | str) for v in choices):
            params[key] = trial.suggest_categorical(key, choices)
        else:
            params[key] = choices[trial.suggest_categorical(f"{key}__index", list(range(len(choices))))]
    return params


def _search_optuna(
    factory: Factory,
    space: Space,
    x: np.ndarray,
    y: np.ndarray,
    folds: Sequence[Fold],
    *,
    scoring: Scoring,
    n_trials: int,
    seed: int,
    storage: str,
    study_name: str,
    n_jobs: int | None,
) -> list[dict[str, Any]]:
    """Run the study up to ``n_trials`` complete trials, resuming one stored under the same
    name. Trials are asked in batches and scored through joblib; a batch interrupted by an
    error is marked failed before the error propagates, so a resumed study does not wait on
    trials nobody runs."""
    import optuna
    from joblib import effective_n_jobs
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Its connections are closed when the search ends (a shared PostgreSQL store keeps no idle
    # connection of a finished study; the SQLite file is not left open).
    rdb = optuna.storages.RDBStorage(storage)
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=rdb,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            load_if_exists=True,
        )
        # A resumed study draws from a generator advanced by its finished trials, so it does not
        # repeat the first run's random start-up points; a fresh study stays reproducible.
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        study.sampler = optuna.samplers.TPESampler(seed=seed + finished)
        batch_size = max(1, effective_n_jobs(n_jobs))
        while (done := len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))) < n_trials:
            batch = [study.ask() for _ in range(min(batch_size, n_trials - done))]
            candidates = [_suggest(trial, space) for trial in batch]
            try:
                scores = _run_trials(factory, candidates, x, y, folds, scoring, n_jobs)
            except BaseException:
                for trial in batch:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            for trial, params, score in zip(batch, candidates, scores, strict=True):
                trial.set_user_attr("params", _jsonable(params))
                study.tell(trial, score)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [{"params": t.user_attrs["params"], "score": t.value} for t in complete if t.value is not None]
    finally:
        rdb.engine.dispose()


def _default_storage(cache_dir: Path) -> str:
    cache_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(cache_dir / 'optuna.db').as_posix()}"


# --- the entry point -----------------------------------------------------------------------------
def tune(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: Method = "random",
    factory: Factory | None = None,
    space: Space | None = None,
    n_trials: int = 20,
    folds: Sequence[Fold] | None = None,
    gap: int | None = None,
    n_folds: int = 4,
    scoring: Scoring = "log_loss",
    seed: int = 0,
    cache_dir: str | Path = "models/tuning_results",
    retune: bool = False,
    storage: str | None = None,
    n_jobs: int | None = None,
) -> TuningResult:
    """Search ``space`` (default :data:`SPACES[name]`) for the parameters of model ``name``
    whose purged cross-validated ``scoring`` on time-ordered rows ``x``, ``y`` is lowest.

    ``folds`` default to :func:`purged_folds` (``n_folds`` expanding windows, ``gap`` purged
    rows before each test block: give the label horizon). ``method`` "grid" tries every point
    (``n_trials`` is then ignored), "random" ``n_trials`` distinct points, "optuna" a TPE study
    of ``n_trials`` complete trials stored in ``storage`` (default: SQLite in ``cache_dir``).
    A result cached in ``cache_dir`` for the same search is returned without refitting unless
    ``retune``. ``n_jobs`` is joblib's (None: the active backend's default, 1 locally)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    space = _check_space(name, space)
    _check_options(method, scoring, n_trials, len(x), len(y))
    folds = _checked_folds(folds, len(y), n_folds, gap)
    cache = Path(cache_dir)
    data, fold_print = _fingerprint_data(x, y), _fingerprint_folds(folds)
    study_key = _study_key(name, method, space, data, fold_print, scoring, seed)
    budget = len(_grid_candidates(space)) if method == "grid" else n_trials
    key = f"{study_key}-{budget}"
    path = _cache_path(cache, name, method, key)
    if not retune and (hit := _read_cache(path, key)) is not None:
        return hit
    started = time.perf_counter()
    make = factory or model_factory(name, seed=seed)
    if method == "optuna":
        trials = _search_optuna(
            make, space, x, y, folds, scoring=scoring, n_trials=n_trials, seed=seed,
            storage=storage or _default_storage(cache), study_name=f"{name}-{study_key}", n_jobs=n_jobs,
        )  # fmt: skip
    else:
        listed = _grid_candidates(space) if method == "grid" else _random_candidates(space, n_trials, seed)
        trials = _search_listed(make, listed, x, y, folds, scoring, n_jobs)
    best = min(trials, key=lambda t: t["score"])
    result = TuningResult(
        name=name,
        method=method,
        scoring=scoring,
        best_params=best["params"],
        best_score=best["score"],
        base_rate_score=_base_rate_score(y, folds, scoring),
        n_trials=len(trials),
        seconds=time.perf_counter() - started,
        n_rows=len(y),
        n_folds=len(folds),
        gap=gap,
        key=key,
        trials=trials,
    )
    _write_cache(path, result)
    return result


def _check_options(method: str, scoring: str, n_trials: int, n_x: int, n_y: int) -> None:
    """A clear error for each option a caller can get wrong."""
    if method not in ("grid", "random", "optuna"):
        raise ValueError(f"method must be 'grid', 'random' or 'optuna', got {method!r}")
    if scoring not in _SCORERS:
        raise ValueError(f"scoring must be one of {sorted(_SCORERS)}, got {scoring!r}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_x != n_y:
        raise ValueError(f"need as many labels as rows (got {n_x} rows and {n_y} labels)")


def _checked_folds(folds: Sequence[Fold] | None, n_rows: int, n_folds: int, gap: int | None) -> list[Fold]:
    """The given folds, or purged expanding-window folds over ``n_rows`` with ``gap``."""
    if folds is not None:
        return list(folds)
    if gap is None:
        raise ValueError("give gap (the label horizon in rows) or folds: purged folds need the gap")
    return purged_folds(n_rows, n_folds=n_folds, gap=gap)


def _check_space(name: str, space: Space | None) -> dict[str, list[Any]]:
    """The search space as lists, or a clear error naming what is wrong."""
    if space is None:
        if name not in SPACES:
            raise ValueError(f"no default search space for {name!r}; give space= or one of {sorted(SPACES)}")
        space = SPACES[name]
    lists = {str(k): list(v) for k, v in space.items()}
    empty = sorted(k for k, v in lists.items() if not v)
    if not lists or empty:
        raise ValueError(f"the search space needs at least one value per parameter (empty: {empty})")
    return lists


@contextmanager
def parallel_backend(cluster: str | None = None) -> Iterator[Any]:
    """Run the joblib work inside on the Dask scheduler at ``cluster`` (``host:port`` or
    ``tcp://…``), or locally when None. Yields the Dask client (None locally).

    The same code then trains and tunes on one machine or on a cluster: joblib's Dask backend
    sends each ``delayed`` call to a worker. The models directory must be the same path on the
    workers as here (a shared filesystem) for tuning caches to be shared."""
    if cluster is None:
        yield None
        return
    from distributed import Client
    from joblib import parallel_config

    with Client(cluster) as client, parallel_config(backend="dask"):
        yield client
