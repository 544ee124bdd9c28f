"""The model tournament: every candidate is scored out of sample on purged walk-forward folds of
the training rows, and the one served is the one that wins there, ties going to the simpler.

An outside evaluation found a plain forest beating the served strategy on ETH beyond the
interval. A trader should never be served a model that a simpler one beats out of sample, so
training no longer assumes its own design is best; it proves it against:

==================  =========  ===============================================================
candidate           simplicity what it is
==================  =========  ===============================================================
``no_model``        0          the base rate of the rows before each fold (no edge claimed)
``baseline_forest`` 1          the plain forest on its own 16 columns (``ml_integration.baseline``)
``default_blend``   2          forest + logistic regression on the selected columns, blend
                               weights and Platt fit on earlier folds (``direction``)
``blend+htf`` …     3          the same with one context family added (``context``)
``soft`` …          4          the zoo's combiners over its models on every column
``stacking``        5          (``ensemble``); stacking's meta-learner fit on earlier folds
==================  =========  ===============================================================

Folds (``labels.purged_folds``): the rows after the first half are cut into ``n_folds``
time-ordered blocks; each block is predicted by learners fit on every row before it less a
purge gap of ``horizon`` rows. What a candidate learns from out-of-fold predictions (blend
weights, Platt, stacking) is fit on *earlier* blocks only, so the first block is not scored and
every candidate is scored on the same later blocks: the same rows, the same labels.

The winner: the lowest out-of-sample log loss is *best*; then the simplest candidate whose
paired log-loss difference to the best has a 95% block-bootstrap interval reaching 0 (not worse
beyond the noise) is *served*, and the report says which rule decided. A no-edge market ends
with ``no_model`` and the strategy says so instead of trading. Each context family's
contribution is the paired difference of ``blend+family`` against ``default_blend``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml_integration.calibration import ConfidenceCalibrator, PlattCalibrator
from ml_integration.context import CONTEXT_FAMILIES, FAMILY_COLUMNS
from ml_integration.direction import DirectionParams, blend_weights, fit_learners
from ml_integration.evaluation import (
    block_bootstrap_ci,
    brier_score,
    log_loss,
    paired_log_loss_difference,
    rank_auc,
)
from ml_integration.features import MODEL_FEATURES
from ml_integration.labels import purged_folds

__all__ = [
    "CANDIDATES",
    "COMBINER_CANDIDATES",
    "CandidateResult",
    "Tournament",
    "TournamentConfig",
    "choose_winner",
    "run_tournament",
    "score_candidates",
    "simplicity",
    "zoo_sizes",
]

COMBINER_CANDIDATES: tuple[str, ...] = ("soft", "weighted", "majority", "stacking")
CANDIDATES: tuple[str, ...] = (
    "no_model", "baseline_forest", "default_blend",
    *(f"blend+{family}" for family in CONTEXT_FAMILIES), *COMBINER_CANDIDATES,
)  # fmt: skip
_SIMPLICITY = {"no_model": 0, "baseline_forest": 1, "default_blend": 2, "stacking": 5}


def simplicity(name: str) -> int:
    """The tie-break rank: lower is simpler."""
    if name in _SIMPLICITY:
        return _SIMPLICITY[name]
    return 3 if name.startswith("blend+") else 4


@dataclass(frozen=True)
class TournamentConfig:
    """Which candidates, on how many folds, and the zoo models behind the combiners."""

    candidates: tuple[str, ...] = CANDIDATES
    n_folds: int = 4
    zoo: tuple[str, ...] = ("random_forest", "lightgbm", "logistic_regression")
    n_boot: int = 200

    def __post_init__(self) -> None:
        unknown = sorted(set(self.candidates) - set(CANDIDATES))
        if unknown:
            raise ValueError(f"unknown tournament candidates {unknown}; known: {', '.join(CANDIDATES)}")
        if "no_model" not in self.candidates:
            raise ValueError("the tournament needs its no_model candidate (the base rate to beat)")
        if self.n_folds < 2:
            raise ValueError(
                f"the tournament needs at least 2 folds (the first is not scored), got {self.n_folds}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's out-of-sample figures on the scored folds; ``delta_log_loss`` is its
    paired difference to the best (0 for the best), with the interval of that difference."""

    name: str
    simplicity: int
    features: str
    log_loss: float
    log_loss_ci: tuple[float, float]
    brier: float
    brier_ci: tuple[float, float]
    auc: float | None
    auc_ci: tuple[float, float]
    delta_log_loss: float
    delta_log_loss_ci: tuple[float, float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tournament:
    """The outcome, with the out-of-fold predictions the served model is calibrated on."""

    config: TournamentConfig
    horizon: int
    scored_rows: np.ndarray  # positions (into the rows given) of the scored blocks
    y_scored: np.ndarray
    predictions: dict[str, np.ndarray]  # candidate → P(up) on the scored rows
    results: list[CandidateResult]
    best: str
    winner: str
    reason: str
    families: dict[str, dict[str, Any]]
    blend_columns: tuple[int, ...]
    zoo_models: list[str]
    #: learner → P(up) (one column per learner output) on every out-of-fold row, NaN elsewhere
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    oof_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    #: the served candidate's paired log-loss difference to the plain baseline (negative: better)
    served_vs_baseline: dict[str, Any] = field(default_factory=dict)

    def result(self, name: str) -> CandidateResult:
        return next(r for r in self.results if r.name == name)

    def confidence(self) -> ConfidenceCalibrator:
        """P(side right | margin) of the winner, fit on its own scored out-of-sample predictions."""
        return ConfidenceCalibrator.fit(self.predictions[self.winner], self.y_scored)

    def report(self) -> dict[str, Any]:
        """What the model's metadata keeps (``model.tournament``) and ``tvgw train`` prints."""
        return {
            "winner": self.winner, "best": self.best, "reason": self.reason,
            "metric": "log_loss", "tie_rule": "simplest candidate whose paired log-loss difference to the "
            "best has a 95% block-bootstrap interval reaching 0",
            "folds": self.config.n_folds, "scored_folds": self.config.n_folds - 1,
            "scored_rows": len(self.scored_rows), "purge_gap_rows": self.horizon,
            "base_rate": float(np.mean(self.y_scored)),
            "candidates": [r.to_dict() for r in sorted(self.results, key=lambda r: r.log_loss)],
            "families": self.families, "zoo_models": self.zoo_models,
            "served_vs_baseline": self.served_vs_baseline,
        }  # fmt: skip


def _features_of(name: str, n_blend: int) -> str:
    if name == "no_model":
        return "none"
    if name == "baseline_forest":
        return f"baseline ({len(FAMILY_COLUMNS['baseline'])} columns)"
    if name == "default_blend":
        return f"selected ({n_blend} columns)"
    if name.startswith("blend+"):
        family = name.split("+", 1)[1]
        return f"selected + {family} ({n_blend + len(FAMILY_COLUMNS[family])} columns)"
    return f"all model columns ({len(MODEL_FEATURES)})"


def _learners(
    config: TournamentConfig, blend_columns: tuple[int, ...], params: DirectionParams, zoo: list[str]
) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """Fold-level learners: ``fit_predict(x_train, y_train, x_test)`` → P(up) column(s)."""
    from ml_integration.baseline import BaselineModel

    wanted = set(config.candidates)
    learners: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {}
    if "baseline_forest" in wanted:
        cols = list(FAMILY_COLUMNS["baseline"])

        def baseline(xt: np.ndarray, yt: np.ndarray, xs: np.ndarray) -> np.ndarray:
            model = BaselineModel(n_jobs=params.n_jobs, random_state=params.random_state)
            return model.fit(xt[:, cols], yt).predict_up(xs[:, cols])[:, None]

        learners["baseline_forest"] = baseline
    for name in ("default_blend", *(c for c in config.candidates if c.startswith("blend+"))):
        if name not in wanted:
            continue
        extra = FAMILY_COLUMNS[name.split("+", 1)[1]] if "+" in name else ()
        columns = (*blend_columns, *extra)

        def blend(
            xt: np.ndarray, yt: np.ndarray, xs: np.ndarray, columns: tuple[int, ...] = columns
        ) -> np.ndarray:
            return fit_learners(xt, yt, columns, params).learner_predictions(xs)

        learners[name] = blend
    if zoo and wanted & set(COMBINER_CANDIDATES):
        from ml_integration.zoo import make_model

        model_cols = list(range(len(MODEL_FEATURES)))

        sizes = zoo_sizes(params)

        def zoo_fit(xt: np.ndarray, yt: np.ndarray, xs: np.ndarray) -> np.ndarray:
            out = []
            for name in zoo:
                model = make_model(name, sizes.get(name), seed=params.random_state).fit(xt[:, model_cols], yt)
                out.append(_up(model, xs[:, model_cols]))
            return np.column_stack(out)

        learners["zoo"] = zoo_fit
    return learners


def zoo_sizes(params: DirectionParams) -> dict[str, dict[str, Any]]:
    """The zoo's tree models sized like the blend's forest (``ModelConfig``), so ``--quick``
    shrinks them too (OpenMP boosters on one thread); the rest keep the zoo's defaults."""
    forest = {"n_estimators": params.n_estimators, "n_jobs": params.n_jobs}
    # OpenMP boosters get one thread: see ``direction.one_openmp_thread`` for the measurement
    boosted = {"n_estimators": params.n_estimators, "n_jobs": 1}
    return {"random_forest": forest, "lightgbm": boosted, "xgboost": boosted}


def _up(model: Any, x: np.ndarray) -> np.ndarray:
    from ml_integration.ensemble import _up as ensemble_up

    return ensemble_up(model, x)


def _second_level(
    name: str, oof: dict[str, np.ndarray], y: np.ndarray, earlier: np.ndarray, test: np.ndarray,
    train_rows: np.ndarray, params: DirectionParams, horizon: int, zoo: list[str],
) -> np.ndarray:  # fmt: skip
    """Candidate ``name``'s P(up) on ``test`` rows, fit only on the out-of-fold rows ``earlier``."""
    if name == "no_model":
        return np.full(len(test), float(np.mean(y[train_rows])))
    if name == "baseline_forest":
        return oof[name][test, 0]
    if name == "default_blend" or name.startswith("blend+"):
        preds = oof[name]
        weights = np.asarray(blend_weights(preds[earlier], y[earlier], params.learners))
        platt = PlattCalibrator.fit(preds[earlier] @ weights, y[earlier], horizon=horizon)
        return np.asarray(platt(preds[test] @ weights))
    from ml_integration.ensemble import make_combiner

    combiner = make_combiner(name).fit(oof["zoo"][earlier], y[earlier], zoo)
    return np.asarray(combiner.predict(oof["zoo"][test]))


def run_tournament(
    x: np.ndarray, y: np.ndarray, *, blend_columns: tuple[int, ...], params: DirectionParams, horizon: int,
    config: TournamentConfig | None = None,
) -> Tournament:  # fmt: skip
    """Score every candidate of ``config`` on ``x`` (extended feature rows, ``context``'s
    ``EXTENDED_FEATURES`` order, time-ordered) and ``y`` (0/1), and choose the one to serve.

    ``blend_columns``: the default blend's columns, chosen on rows before the first fold (the
    caller's ``direction.select_columns`` reads the first half of the rows at most)."""
    cfg = config or TournamentConfig()
    y = np.asarray(y, dtype=np.int64)
    folds = purged_folds(len(y), n_folds=cfg.n_folds, gap=horizon, min_train=len(y) // 2)
    zoo = _zoo(cfg)
    families = [c.split("+", 1)[1] for c in cfg.candidates if c.startswith("blend+")]
    usable = [f for f in families if np.isfinite(x[:, list(FAMILY_COLUMNS[f])]).all()]
    candidates = [c for c in cfg.candidates if not c.startswith("blend+") or c.split("+", 1)[1] in usable]
    if not zoo:
        candidates = [c for c in candidates if c not in COMBINER_CANDIDATES]
    learners = _learners(TournamentConfig(tuple(candidates), cfg.n_folds, tuple(zoo), cfg.n_boot),
                         blend_columns, params, zoo)  # fmt: skip
    oof: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for key, fit_predict in learners.items():
        started = time.perf_counter()
        for train, test in folds:
            preds = fit_predict(x[train], y[train], x[test])
            oof.setdefault(key, np.full((len(y), preds.shape[1]), np.nan))[test] = preds
        seconds[key] = time.perf_counter() - started
    scored = np.concatenate([test for _, test in folds[1:]])
    predictions: dict[str, list[np.ndarray]] = {c: [] for c in candidates}
    for k in range(1, len(folds)):
        earlier = np.concatenate([test for _, test in folds[:k]])
        train, test = folds[k]
        for name in candidates:
            predictions[name].append(_second_level(name, oof, y, earlier, test, train, params, horizon, zoo))
    p = {name: np.concatenate(parts) for name, parts in predictions.items()}
    oof_rows = np.concatenate([test for _, test in folds])
    return _decide(cfg, horizon, scored, y[scored], p, seconds, blend_columns, zoo, oof, oof_rows)


def _zoo(cfg: TournamentConfig) -> list[str]:
    if not set(cfg.candidates) & set(COMBINER_CANDIDATES):
        return []
    from ml_integration.zoo import available_models

    return available_models(list(cfg.zoo))


def _decide(
    cfg: TournamentConfig, horizon: int, scored: np.ndarray, y: np.ndarray, p: dict[str, np.ndarray],
    seconds: dict[str, float], blend_columns: tuple[int, ...], zoo: list[str], oof: dict[str, np.ndarray],
    oof_rows: np.ndarray,
) -> Tournament:  # fmt: skip
    features = {name: _features_of(name, len(blend_columns)) for name in p}
    learner_seconds = {name: seconds.get("zoo" if name in COMBINER_CANDIDATES else name, 0.0) for name in p}
    results = score_candidates(
        y, p, horizon=horizon, n_boot=cfg.n_boot, features=features, seconds=learner_seconds
    )
    winner, reason = choose_winner(results)
    best = min(results, key=lambda r: (r.log_loss, r.simplicity)).name
    families = _families(p, y, max(24, horizon), cfg.n_boot, winner)
    out = Tournament(cfg, horizon, scored, y, p, results, best, winner, reason, families,
                     blend_columns, zoo, oof, oof_rows)  # fmt: skip
    if "baseline_forest" in p and winner != "baseline_forest":
        delta, ci = paired_log_loss_difference(y, p[winner], p["baseline_forest"], block=max(24, horizon),
                                               n_boot=cfg.n_boot)  # fmt: skip
        out.served_vs_baseline = {"delta_log_loss": delta, "delta_log_loss_ci": ci}
    return out


def score_candidates(
    y: np.ndarray, predictions: dict[str, np.ndarray], *, horizon: int, n_boot: int = 200,
    features: dict[str, str] | None = None, seconds: dict[str, float] | None = None,
) -> list[CandidateResult]:  # fmt: skip
    """Every candidate's log loss, Brier and AUC on the same rows ``y`` with 95% block-bootstrap
    intervals (blocks of ``max(24, horizon)`` rows: neighbouring labels overlap), and its paired
    log-loss difference to the best."""
    block = max(24, horizon)
    losses = {name: log_loss(y, q) for name, q in predictions.items()}
    best = min(losses, key=lambda n: (losses[n], simplicity(n)))
    results = []
    for name, q in predictions.items():
        delta, delta_ci = (
            (0.0, (0.0, 0.0)) if name == best
            else paired_log_loss_difference(y, q, predictions[best], block=block, n_boot=n_boot)
        )  # fmt: skip
        varies = bool(np.ptp(q) > 0)
        results.append(CandidateResult(
            name=name, simplicity=simplicity(name), features=(features or {}).get(name, ""),
            log_loss=losses[name],
            log_loss_ci=block_bootstrap_ci(y, q, "log_loss", block=block, n_boot=n_boot),
            brier=brier_score(y, q), brier_ci=block_bootstrap_ci(y, q, "brier", block=block, n_boot=n_boot),
            auc=rank_auc(y, q) if varies else 0.5,
            auc_ci=block_bootstrap_ci(y, q, "auc", block=block, n_boot=n_boot) if varies else (0.5, 0.5),
            delta_log_loss=delta, delta_log_loss_ci=delta_ci, seconds=(seconds or {}).get(name, 0.0),
        ))  # fmt: skip
    return results


def choose_winner(results: list[CandidateResult]) -> tuple[str, str]:
    """The candidate to serve and why: the simplest one whose paired log-loss difference to the
    best has an interval reaching 0 (the best itself qualifies), the lower log loss among
    equally simple ones."""
    best = min(results, key=lambda r: (r.log_loss, r.simplicity))
    tied = [r for r in results if r.delta_log_loss_ci[0] <= 0.0]
    winner = min(tied, key=lambda r: (r.simplicity, r.log_loss))
    return winner.name, _reason(winner, best, results)


def _reason(winner: CandidateResult, best: CandidateResult, results: list[CandidateResult]) -> str:
    if winner.name == best.name:
        simpler = [r for r in results if r.simplicity < best.simplicity]
        beaten = ", ".join(
            f"{r.name} {r.delta_log_loss:+.4f} [{r.delta_log_loss_ci[0]:+.4f}, {r.delta_log_loss_ci[1]:+.4f}]"
            for r in sorted(simpler, key=lambda r: r.simplicity)
        )
        tail = f"; every simpler candidate is worse beyond the interval: {beaten}" if beaten else ""
        return f"{best.name} has the lowest out-of-sample log loss ({best.log_loss:.5f}){tail}"
    lo, hi = winner.delta_log_loss_ci
    return (
        f"{best.name} has the lowest out-of-sample log loss ({best.log_loss:.5f}), but {winner.name} is "
        f"simpler and within the interval ({winner.delta_log_loss:+.5f} [{lo:+.5f}, {hi:+.5f}]): "
        f"ties go to the simpler"
    )


def _families(
    p: dict[str, np.ndarray], y: np.ndarray, block: int, n_boot: int, winner: str
) -> dict[str, Any]:
    """Each context family's out-of-sample contribution: ``blend+family`` minus ``default_blend``
    log loss (negative helps), with its paired interval, and whether it is served."""
    out: dict[str, Any] = {}
    if "default_blend" not in p:
        return out
    for name in p:
        if not name.startswith("blend+"):
            continue
        family = name.split("+", 1)[1]
        delta, (lo, hi) = paired_log_loss_difference(
            y, p[name], p["default_blend"], block=block, n_boot=n_boot
        )
        verdict = (
            "helps beyond the interval"
            if hi < 0
            else "hurts beyond the interval"
            if lo > 0
            else "within the noise"
        )
        out[family] = {"delta_log_loss": delta, "delta_log_loss_ci": (lo, hi), "verdict": verdict,
                       "served": winner == name}  # fmt: skip
    return out
