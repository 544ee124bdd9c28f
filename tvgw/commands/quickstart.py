"""`tvgw quickstart`: from a fresh clone to a gateway that enriches alerts, in one command.

1. Make sure a model exists for the default market (BTC/USDT 1h) in TVGW_MODEL_DIR. If none,
   train a *small* one first (forest and boosting at reduced size, the boosting on one OpenMP
   thread as every fit is, no LSTM: seconds), so the gateway serves within a minute of the
   install: on a year of candles fetched through ccxt,
   or, when the network is not there, on the seeded synthetic generator (the candle store gets
   a synthetic history up to now, its last close at ``--price``, so that an alert carrying the
   price of the user's chart passes the price check; every ``ml_analysis``, every refusal and
   every figure drawn from it says synthetic; such a model is refused for a live exchange).
2. Start the *full* model's training (LSTM included when TensorFlow is installed) as a child
   process; it saves a new version and moves the store's ``latest`` pointer, which the workers
   already hot-reload, so it replaces the small model when ready without a restart.
3. Print the next steps (the first alert's curl, the API and dashboard, how to stop), then
   serve under gunicorn (paper broker, embedded SQLite).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from storage.database import is_url, redacted
from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage
from tvgw.commands.serve import dashboard_hint, exec_gunicorn

if TYPE_CHECKING:
    from ml_integration.training import TrainingConfig
    from settings import Settings
    from storage.database import Storage

SYMBOL, TIMEFRAME, DAYS, EXCHANGE, SEED = "BTC/USDT", "1h", 365, "binance", 7
DEFAULT_BIND = "127.0.0.1:8000"
#: Extra ``tvgw train`` options for the full model trained in the background (shell words, e.g.
#: ``--no-lstm`` on a small machine; the wheel test passes ``--quick``: it checks the swap, not the
#: model's size). Unset, the full model is trained at full size.
FULL_TRAIN_OPTIONS_ENV = "TVGW_QUICKSTART_FULL_TRAIN_OPTIONS"
#: Where the offline quickstart's synthetic BTC/USDT history ends when ``--price`` is not given
#: (the README's first alert carries this price).
SYNTHETIC_PRICE = 100_000.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "quickstart")
    parser.add_argument("--offline", action="store_true", help="do not try the network: synthetic data")
    parser.add_argument("--no-serve", action="store_true", help="prepare the model, do not start gunicorn")
    parser.add_argument(
        "--quick", action="store_true", help="the small model only (no full model trained in the background)"
    )
    parser.add_argument("--bind", default=None, help=f"address:port for gunicorn (default {DEFAULT_BIND})")
    parser.add_argument(
        "--price", type=float, default=None, metavar="PRICE",
        help=f"offline: the last close of the synthetic {SYMBOL} history, e.g. the price your chart shows "
        f"(default {SYNTHETIC_PRICE:.0f} on the first run; later runs keep the level unless given)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml_integration import latest_version

    settings = cli_settings()
    default = settings.strategy(None)
    if default is None or default.passphrase == "unused-by-cli":
        print(
            "tvgw quickstart: set TVGW_PASSPHRASE (the secret your TradingView alerts will carry)",
            file=sys.stderr,
        )
        return 2
    if args.price is not None and not (args.price > 0 and math.isfinite(args.price)):
        print(f"tvgw quickstart: --price must be a positive number, got {args.price}", file=sys.stderr)
        return 2
    storage = open_storage(settings)
    if latest_version(settings.model_dir, SYMBOL, TIMEFRAME) is None:
        real = (not args.offline) and _train_small_on_real_data(settings, storage)
        price: float | None = None
        if not real:
            price = float(args.price or _stored_level(storage) or SYNTHETIC_PRICE)
            _train_small_on_synthetic_data(settings, storage, price)
        if not args.quick:
            _start_full_training(settings, synthetic=not real, price=price)
    else:
        print(f"quickstart: using the existing {SYMBOL} {TIMEFRAME} model in {settings.model_dir}")
        if _latest_is_synthetic(settings):
            _extend_synthetic_history(storage, args.price)
    if args.no_serve:
        return 0
    if not args.offline and settings.market_data is None and not _latest_is_synthetic(settings):
        # A model of real Binance candles: keep its candle store current from the same source.
        os.environ["TVGW_MARKET_DATA"] = EXCHANGE
        print(f"quickstart: candles kept current from {EXCHANGE} (TVGW_MARKET_DATA)")
    bind = args.bind or DEFAULT_BIND
    print(next_steps(bind, default.passphrase, settings), flush=True)
    return exec_gunicorn(bind)


def _latest_is_synthetic(settings: Settings) -> bool:
    from ml_integration import latest_version
    from ml_integration.store import model_key

    version = latest_version(settings.model_dir, SYMBOL, TIMEFRAME)
    if version is None:
        return True
    folder = Path(settings.model_dir) / model_key(SYMBOL, TIMEFRAME) / version
    return bool(json.loads((folder / "strategy.json").read_text()).get("synthetic", True))


#: The small model's tournament: the default blend against no opinion at all, so the stand-in
#: still serves no call when it finds no edge; the context families and the baseline forest
#: (three more cross-fitted candidates, two thirds of ``--quick``'s tournament time) are left to
#: the full model, which runs the whole tournament minutes later and replaces it.
SMALL_TOURNAMENT = ("no_model", "default_blend")


def _small_config(**extra: object) -> TrainingConfig:
    """The first model: reduced forest and boosting, a two-candidate tournament, no LSTM
    (seconds, and no TensorFlow)."""
    from ml_integration.training import create_training_config
    from tvgw.commands.train import model_options

    model = {**model_options(quick=True, lstm=False), "tournament": SMALL_TOURNAMENT}
    return create_training_config(SYMBOL, {"timeframe": TIMEFRAME, "days": DAYS, "model": model, **extra})


def _train_small_on_real_data(settings: Settings, storage: Storage) -> bool:
    from ml_integration.exceptions import MLError
    from ml_integration.market_data import create_exchange
    from ml_integration.training import create_ml_training_pipeline

    print(f"quickstart: fetching a year of {SYMBOL} {TIMEFRAME} candles through ccxt ...")
    pipeline = create_ml_training_pipeline(
        storage=storage, model_dir=settings.model_dir,
        exchange_factory=lambda ex: create_exchange(ex, timeout_ms=5000), progress=True,
    )  # fmt: skip
    try:
        result = pipeline.run(_small_config())
    except (MLError, ValueError, OSError) as exc:
        print(f"quickstart: real candles unavailable: {exc}")
        return False
    print(f"quickstart: small model {result.version} trained on {result.n_candles} real candles")
    return True


def _train_small_on_synthetic_data(settings: Settings, storage: Storage, price: float) -> None:
    from ml_integration.training import create_ml_training_pipeline

    print(
        "quickstart: OFFLINE - training on SYNTHETIC candles (seeded generator). Its predictions are not a "
        "market view and every ml_analysis says synthetic: true."
    )
    print(_synthetic_notice(price))
    pipeline = create_ml_training_pipeline(storage=storage, model_dir=settings.model_dir, progress=True)
    result = pipeline.run(_small_config(synthetic=True, seed=SEED, synthetic_price=price))
    print(f"quickstart: small model {result.version} (synthetic) trained in {result.wall_time_s:.0f} s")


def _synthetic_notice(price: float) -> str:
    return (
        f"quickstart: the gateway's {SYMBOL} prices are SYNTHETIC, a generated history ending at "
        f"{price:,.2f} (--price sets it: use the price your chart shows, so your alerts pass the "
        f"price check). Refusals say so; no real bar is mixed into it."
    )


def _stored_level(storage: Storage) -> float | None:
    """The last close of the synthetic history already in the store (a re-run keeps its level)."""
    from storage.candles import newest_synthetic_close

    return newest_synthetic_close(storage, SYMBOL, TIMEFRAME)


def _extend_synthetic_history(storage: Storage, price: float | None) -> None:
    """A synthetic model served again: bring its synthetic history up to now (at ``price``, else
    at the level it had), so that the gateway has a current price to check alerts against."""
    from ml_integration.candles import timeframe_seconds
    from ml_integration.training import store_synthetic_history

    bars = int(DAYS * 86_400 / timeframe_seconds(TIMEFRAME))
    if store_synthetic_history(storage, SYMBOL, TIMEFRAME, bars=bars, seed=SEED, price=price):
        print(_synthetic_notice(_stored_level(storage) or SYNTHETIC_PRICE))


def full_training_argv(*, synthetic: bool, lstm: bool, price: float | None = None) -> list[str]:
    """``tvgw train`` for the full model on the same candles the small one used (a synthetic
    history kept at the same ``price``)."""
    argv = [sys.executable, "-m", "tvgw.cli", "train", "--symbol", SYMBOL, "--timeframe", TIMEFRAME]
    argv += ["--days", str(DAYS), "--no-progress"]
    if synthetic:
        argv += ["--synthetic", "--seed", str(SEED)]
        argv += ["--synthetic-price", repr(price)] if price is not None else []
    else:
        argv += ["--offline"]
    # The small model was a stand-in for the minutes this one trains: it takes over at once
    # rather than shadowing the stand-in until it wins on live alerts.
    argv += ["--promote", "quickstart: the full model replaces the small stand-in trained before it"]
    return argv if lstm else [*argv, "--no-lstm"]


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _start_full_training(settings: Settings, *, synthetic: bool, price: float | None) -> None:
    """Train the full model in a child process that outlives the exec into gunicorn; it stays
    in this process group, so Ctrl-C stops it together with the gateway."""
    lstm = _tensorflow_installed()
    shared = is_url(settings.database)  # a PostgreSQL URL is absolute already; a file path may not be
    database = settings.database if shared else str(Path(settings.database).resolve())
    log_dir = Path(settings.model_dir).resolve() if shared else Path(database).parent
    log_path = log_dir / "quickstart-full-model.log"
    env = {
        **os.environ,
        "TVGW_DATABASE": database,
        "TVGW_MODEL_DIR": str(Path(settings.model_dir).resolve()),
    }
    with open(log_path, "ab") as log:
        argv = full_training_argv(synthetic=synthetic, lstm=lstm, price=price)
        argv += shlex.split(os.environ.get(FULL_TRAIN_OPTIONS_ENV, ""))
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    what = "forest + boosting + LSTM" if lstm else "forest + boosting; no LSTM, TensorFlow is not installed"
    print(
        f"quickstart: the full model ({what}) is training in the background (pid {child.pid}, "
        f"log {log_path}); the gateway swaps it in when it is saved, without a restart"
    )
    if not lstm:
        from ml_integration.lstm import TRAIN_EXTRA_HINT

        print(f"quickstart: {TRAIN_EXTRA_HINT}")


def next_steps(bind: str, passphrase: str, settings: Settings) -> str:
    """What to do once the gateway runs: the first alert, the API and the dashboard, how to
    stop. The curl carries the passphrase in use, ready to paste."""
    url = f"http://{bind}"
    alert = json.dumps(
        {"passphrase": passphrase, "ticker": "BTCUSDT", "exchange": "BINANCE", "interval": "60",
         "action": "buy", "contracts": 0.001},  # no price: filled at the gateway's market price
        separators=(",", ":"),
    )  # fmt: skip
    api = (
        f'curl -s -H "Authorization: Bearer $TVGW_API_TOKEN" {url}/api/alerts'
        if settings.api_token
        else "off: start with TVGW_API_TOKEN=<a long random token> to turn it on"
    )
    quoted = alert.replace("'", "'\\''")
    return "\n".join(
        [
            f"quickstart: serving on {url} (paper broker, {redacted(settings.database)})",
            "",
            "Next steps (from another shell):",
            "  first alert:",
            f"    curl -s {url}/webhook -H 'Content-Type: text/plain' -d '{quoted}'",
            f"  health and loaded model:  curl -s {url}/healthz",
            f"  API ({url}/api/alerts, /api/orders, /api/positions, /api/accuracy): {api}",
            f"  {dashboard_hint(settings, bind)}",
            "  stop: Ctrl-C here (stops the gateway and any background training)",
            "  production: HTTPS on 443 behind deploy/nginx/tvgw.conf (docs/deployment.md)",
            "",
        ]
    )
