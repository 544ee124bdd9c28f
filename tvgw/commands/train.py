"""`tvgw train`: train a strategy for one symbol and save it as a new model version.

``tvgw train --symbol BTC/USDT --timeframe 1h --days 365 [--data FILE] [--sentiment]
[--synthetic] [--symbols A,B] [--tune --tuning-method {grid,random,optuna} [--n-trials N]
[--retune]] [--cluster ADDRESS]``. Candles come from ``--data`` (freqtrade JSON or CSV), the seeded generator
(``--synthetic``; the model is marked synthetic), or the local candle store, topped up through
ccxt first unless ``--offline``. The run is recorded in ``ml_training_jobs`` and the version
in ``ml_models``; the hold-out metrics are printed next to their baselines.

``--symbols`` trains a batch through joblib, and ``--cluster`` (or ``TVGW_DASK_SCHEDULER``)
sends it to a Dask cluster. ``--tune`` first searches the forest's size by purged
time-series cross-validation on the training rows (``ml_integration.tuning``); the result is
kept under ``<model dir>/tuning_results`` and reused unless ``--retune``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage

if TYPE_CHECKING:
    from ml_integration.training import TrainingResult
    from settings import Settings
    from storage import Storage


#: ``--quick``: a fraction of the default sizes, for trying the pipeline out; its tournament
#: leaves out the zoo's combiners (three more models per fold).
QUICK_MODEL = {
    "n_estimators": 50,
    "gb_max_iter": 50,
    "lstm": {"units": (16, 8), "epochs": 3},
    "tournament": ("no_model", "baseline_forest", "default_blend", "blend+htf", "blend+week"),
}


def model_options(*, quick: bool, lstm: bool) -> dict[str, object]:
    """The ``model`` overrides of a training run: ``--quick`` sizes, with or without the LSTM."""
    return {**(QUICK_MODEL if quick else {}), "use_lstm": lstm}


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "train")
    parser.add_argument("--symbol", help="market symbol, e.g. BTC/USDT (required unless --job)")
    parser.add_argument("--timeframe", default="1h", help="bar size (default 1h)")
    parser.add_argument("--days", type=float, default=365.0, help="history to train on (default 365)")
    parser.add_argument("--data", metavar="FILE", help="train on this freqtrade JSON or CSV file")
    parser.add_argument("--synthetic", action="store_true", help="train on seeded synthetic candles")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    parser.add_argument(
        "--synthetic-price", type=float, metavar="PRICE",
        help="with --synthetic: the last close of the synthetic history stored for serving (default: the "
        "level a stored synthetic history already has)",
    )  # fmt: skip
    parser.add_argument("--sentiment", action="store_true", help="combine news/social sentiment when serving")
    parser.add_argument(
        "--exchange", default="binance", help="ccxt exchange id for fetching (default binance)"
    )
    parser.add_argument("--offline", action="store_true", help="use the candle store as it is, fetch nothing")
    parser.add_argument("--horizon", type=int, default=5, help="bars ahead to predict (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="small models (a smoke run in seconds, not for trading)"
    )
    parser.add_argument(
        "--no-lstm", action="store_true", help="forest and boosting only (no TensorFlow needed, faster)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--promote", metavar="REASON",
        help="make the new version champion at once (a human's promotion, no live test), kept with REASON",
    )  # fmt: skip
    _register_ensemble(parser)
    parser.add_argument(
        "--job", type=int, metavar="ID", help="run the queued training job ID (started by the operator API)"
    )
    _register_tuning(parser)
    parser.set_defaults(func=run)


def _register_tuning(parser: argparse.ArgumentParser) -> None:
    """Batch, tuning and scale-out options (issue 11), kept in one block."""
    group = parser.add_argument_group("batch, tuning and scale-out")
    group.add_argument("--symbols", metavar="LIST", help="train several markets: BTC/USDT,ETH/USDT")
    group.add_argument("--tune", action="store_true", help="tune the forest first (purged CV, training rows)")
    methods = ("grid", "random", "optuna")
    group.add_argument("--tuning-method", choices=methods, default="random", help="search (default random)")
    group.add_argument("--n-trials", type=int, default=20, help="random/optuna trials (default 20)")
    group.add_argument(
        "--retune", action="store_true", help="search again even if models/tuning_results has this search"
    )
    group.add_argument(
        "--cluster", metavar="ADDRESS", help="Dask scheduler (default TVGW_DASK_SCHEDULER, else local)"
    )


def tuning_options(args: argparse.Namespace) -> dict[str, object]:
    """The tuning overrides of a training run (none without ``--tune``)."""
    if not args.tune:
        return {}
    return {"tuning_method": args.tuning_method, "n_trials": args.n_trials, "retune": args.retune}


def _symbols(args: argparse.Namespace) -> list[str]:
    if args.symbols and args.symbol:
        raise ValueError("give --symbol or --symbols, not both")
    text = args.symbols or args.symbol or ""
    return [part.strip() for part in text.split(",") if part.strip()]


def _register_ensemble(parser: argparse.ArgumentParser) -> None:
    """The model zoo's options (issue 11): they need ``--ensemble``."""
    group = parser.add_argument_group("ensemble (model zoo)")
    group.add_argument(
        "--ensemble", action="store_true",
        help="train the model zoo and serve the best combiner's P(up) (chosen on validation by log loss)",
    )  # fmt: skip
    group.add_argument(
        "--models", help="comma-separated zoo models, e.g. rf,xgb,lgbm,lr,svm,lstm (default: all)"
    )
    group.add_argument(
        "--combiner", choices=("auto", "soft", "weighted", "majority", "stacking"), default="auto"
    )
    group.add_argument(
        "--label", choices=("binary", "three_class", "lookahead", "triple_barrier"), default="binary"
    )
    group.add_argument(
        "--label-threshold", type=float, default=0.005,
        help="sideways band / lookahead profit / barrier width as a fraction of the close (default 0.005)",
    )  # fmt: skip
    group.add_argument("--barrier-atr", type=float, help="triple-barrier width in ATR(14) multiples instead")
    group.add_argument(
        "--class-weight", choices=("balanced",), help="weight classes inversely to their frequency"
    )
    group.add_argument(
        "--smote", action="store_true", help="oversample the minority class (training rows only)"
    )


#: ``--quick`` sizes of the zoo's models.
QUICK_ENSEMBLE = {
    "random_forest": {"n_estimators": 50},
    "hist_gradient_boosting": {"max_iter": 50},
    "xgboost": {"n_estimators": 50},
    "lightgbm": {"n_estimators": 50},
    "catboost": {"iterations": 50},
    "lstm": {"units": (16, 8), "epochs": 3},
}


def ensemble_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The ``ensemble`` overrides of a run, None without ``--ensemble``; raises ``ValueError``
    when an ensemble option is given without it."""
    given = [name for name in ("models", "class_weight", "barrier_atr") if getattr(args, name) is not None]
    given += [flag for flag, on in (("smote", args.smote), ("combiner", args.combiner != "auto"),
                                    ("label", args.label != "binary")) if on]  # fmt: skip
    if not args.ensemble:
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --ensemble")
        return None
    options: dict[str, object] = {
        "combiner": args.combiner, "label": args.label, "label_threshold": args.label_threshold,
        "barrier_atr": args.barrier_atr, "class_weight": args.class_weight, "smote": args.smote,
        "seed": args.seed, "params": QUICK_ENSEMBLE if args.quick else {},
    }  # fmt: skip
    if args.models:
        options["models"] = args.models
    return options


def _print_ensemble(report: dict[str, object]) -> None:
    from ml_integration.ensemble import format_table

    ensemble = report.get("ensemble")
    if not isinstance(ensemble, dict):
        return
    skipped = ensemble["skipped_models"]
    print(
        f"  ensemble of {', '.join(ensemble['models'])}"
        + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    )
    print(
        f"  served combiner: {ensemble['chosen_combiner']} (lowest validation log loss); test-slice table"
        f" (label {ensemble['label']}):"
    )
    print("  " + format_table(ensemble["table"]).replace("\n", "\n  "))


def format_tournament(tournament: dict[str, object]) -> str:
    """The tournament's table and verdict as text (``tvgw train`` prints it)."""
    rows = tournament["candidates"]
    assert isinstance(rows, list)
    lines = [
        f"tournament ({tournament['scored_rows']} out-of-sample rows, "
        f"{tournament['scored_folds']} scored folds, "
        f"purge {tournament['purge_gap_rows']} rows; lower log loss is better):",
        f"  {'candidate':<16} {'log loss':>9} {'[95% CI]':>19} {'vs best':>9} {'[95% CI]':>19} {'AUC':>6} "
        f"{'Brier':>7}  features",
    ]
    for r in rows:
        lo, hi = r["log_loss_ci"]
        dlo, dhi = r["delta_log_loss_ci"]
        mark = " <- served" if r["name"] == tournament["winner"] else ""
        lines.append(
            f"  {r['name']:<16} {r['log_loss']:9.5f} [{lo:.5f}, {hi:.5f}] {r['delta_log_loss']:+9.5f} "
            f"[{dlo:+.5f}, {dhi:+.5f}] {r['auc']:6.3f} {r['brier']:7.4f}  {r['features']}{mark}"
        )
    lines.append(f"  served {tournament['winner']}: {tournament['reason']}")
    versus = tournament.get("served_vs_baseline") or {}
    assert isinstance(versus, dict)
    if versus:
        lo, hi = versus["delta_log_loss_ci"]
        lines.append(
            f"  served against the plain baseline forest: {versus['delta_log_loss']:+.5f} "
            f"[{lo:+.5f}, {hi:+.5f}] "
            "log loss (negative: the served model is better)"
        )
    families = tournament.get("families") or {}
    assert isinstance(families, dict)
    for family, f in families.items():
        lo, hi = f["delta_log_loss_ci"]
        lines.append(
            f"  context family {family}: {f['delta_log_loss']:+.5f} [{lo:+.5f}, {hi:+.5f}] "
            f"log loss on the default "
            f"blend, {f['verdict']}{' (served)' if f['served'] else ''}"
        )
    return "\n".join(lines)


def _print_report(result: TrainingResult) -> None:
    report = result.report
    holdout = report["holdout"]["direction"]
    synthetic = " (SYNTHETIC)" if result.synthetic else ""
    print(f"saved {result.symbol} {result.timeframe} version {result.version} -> {result.path}")
    print(
        f"  candles {result.n_candles} from {result.data_source}{synthetic}, wall {result.wall_time_s:.1f} s"
    )
    tournament = report.get("tournament")
    if tournament:
        print("  " + format_tournament(tournament).replace("\n", "\n  "))
    source = report["holdout"].get("direction_model", "default_blend")
    print(
        f"  test window {report['test_window'][0]} .. {report['test_window'][1]} "
        f"({holdout['n']} rows, {source})"
    )
    acc, (lo, hi) = holdout["accuracy"], holdout["accuracy_ci"]
    maj, (mlo, mhi) = holdout["majority_accuracy"], holdout["majority_accuracy_ci"]
    print(f"  accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}] vs majority class {maj:.3f} [{mlo:.3f}, {mhi:.3f}]")
    auc, (alo, ahi) = holdout["auc"], holdout["auc_ci"]
    print(f"  AUC {auc:.3f} [{alo:.3f}, {ahi:.3f}] (0.5 = no skill)")
    print(f"  Brier {holdout['brier']:.4f} vs base rate {holdout['base_rate_brier']:.4f}")
    if "tuning" in report:
        from ml_integration.tuning import TuningResult

        print(f"  tuned {TuningResult(**report['tuning'], trials=[]).summary()}")
    volatility = report.get("volatility") or {}
    if "test" in volatility:
        ours, mean = volatility["test"]["combined"], volatility["test"]["long_run_mean"]
        lo, hi = ours["qlike_ci"]
        print(
            f"  volatility QLIKE {ours['qlike']:.3f} [{lo:.3f}, {hi:.3f}] vs long-run mean "
            f"{mean['qlike']:.3f} (lower is better); {volatility['method']}"
        )
    elif volatility:
        print(f"  {volatility['skipped']}")
    _print_ensemble(report)


def run(args: argparse.Namespace) -> int:
    if args.job is not None:
        return run_job(args.job)
    from ml_integration.exceptions import MLError
    from ml_integration.market_data import create_exchange
    from ml_integration.training import create_ml_training_pipeline, create_training_config

    settings = cli_settings()
    try:
        symbols = _symbols(args)
        if not symbols:
            raise ValueError("--symbol (or --symbols) is required, or --job ID")
        overrides = {
            "timeframe": args.timeframe,
            "days": args.days,
            "exchange": args.exchange,
            "data_file": args.data,
            "synthetic": args.synthetic,
            "seed": args.seed,
            "synthetic_price": args.synthetic_price,
            "strategy": {"use_sentiment": args.sentiment, "target_periods": args.horizon},
            "model": model_options(quick=args.quick, lstm=not args.no_lstm),
            **tuning_options(args),
            "ensemble": ensemble_options(args),
        }
        configs = [create_training_config(symbol, overrides) for symbol in symbols]
    except ValueError as exc:
        print(f"tvgw train: {exc}", file=sys.stderr)
        return 2
    storage = open_storage(settings)
    fetch = not (args.offline or args.data or args.synthetic)
    pipeline = create_ml_training_pipeline(
        storage=storage,
        model_dir=settings.model_dir,
        exchange_factory=(lambda ex: create_exchange(ex, api_url=settings.exchange_api_url))
        if fetch
        else None,
        progress=not args.no_progress,
    )
    cluster = args.cluster or settings.dask_scheduler
    try:
        if len(configs) == 1 and cluster is None:
            results = [pipeline.run(configs[0])]
        else:
            results = pipeline.run_many(configs, cluster=cluster)
    except OSError as exc:
        print(f"tvgw train: {exc}", file=sys.stderr)  # includes an unreachable Dask scheduler
        return 1
    except (MLError, ValueError) as exc:
        print(f"tvgw train: {exc}", file=sys.stderr)
        return 1
    from ml_integration.champions import ChampionError

    for result in results:
        _print_report(result)
        try:
            _enroll(storage, settings, result, promote=args.promote)
        except ChampionError as exc:
            print(f"tvgw train: {result.version} saved, not promoted: {exc}", file=sys.stderr)
            return 1
    return 0


def _enroll(
    storage: Storage, settings: Settings, result: TrainingResult, *, promote: str | None = None
) -> None:
    """Give the new version its role now (champion of a new market, else challenger serving in
    shadow until it wins on live alerts) rather than at a gateway's next look at the store; with
    ``promote`` (a reason), make it champion at once, as ``tvgw models promote`` would."""
    from ml_integration.champions import ChampionRules, enroll_latest
    from ml_integration.champions import promote as crown
    from storage.champions import get_roles
    from tvgw.commands.models import login_name

    events = enroll_latest(storage, settings.model_dir, result.symbol, result.timeframe)
    roles = get_roles(storage, result.symbol, result.timeframe)
    if promote and (roles is None or roles.champion != result.version):
        events.append(crown(
            storage, settings.model_dir, result.symbol, result.timeframe, result.version,
            actor=f"{login_name()} (tvgw train --promote)", reason=promote,
            rules=ChampionRules.from_settings(settings),
        ))  # fmt: skip
    for event in events:
        print(f"  {event.kind} {event.version}: {event.reason}")


def run_job(job_id: int) -> int:
    """Run a job the operator API queued: its options come from its row, its stage and
    progress go back to it, and a cancel request stops it at the next stage."""
    from ml_integration.exceptions import MLError, TrainingCancelled
    from ml_integration.training import create_ml_training_pipeline, create_training_config
    from storage.models import claim_training_job, finish_training_job, get_training_job, training_progress

    settings = cli_settings()
    storage = open_storage(settings)
    job = get_training_job(storage, job_id)
    if job is None or not claim_training_job(storage, job_id):
        print(f"tvgw train: job {job_id} is not queued (already taken, cancelled or absent)", file=sys.stderr)
        return 1
    params = dict(job["params"])
    quick, lstm = bool(params.pop("quick", False)), bool(params.pop("lstm", True))
    model = {**(QUICK_MODEL if quick else {}), "use_lstm": lstm}

    def on_stage(stage: str, done: float) -> None:
        if training_progress(storage, job_id, stage=stage, progress=done) == "cancelling":
            raise TrainingCancelled(f"job {job_id} cancelled by the operator")

    try:
        config = create_training_config(
            job["symbol"], {**params, "timeframe": job["timeframe"], "model": model}
        )
        pipeline = create_ml_training_pipeline(storage=storage, model_dir=settings.model_dir)
        result = pipeline.run(
            config, job_id=job_id, on_stage=on_stage, on_saved=lambda saved: _enroll(storage, settings, saved)
        )
    except TrainingCancelled:
        print(f"tvgw train: job {job_id} cancelled", file=sys.stderr)
        return 1
    except (MLError, ValueError, FileNotFoundError) as exc:
        finish_training_job(storage, job_id, error=str(exc))  # a bad option fails before the pipeline
        print(f"tvgw train: job {job_id} failed: {exc}", file=sys.stderr)
        return 1
    _print_report(result)  # enrolled before its job row said done (on_saved)
    return 0
