"""`tvgw data`: fill the local candle store.

* ``tvgw data fetch --symbol BTC/USDT --timeframe 1h --days 365 [--exchange binance]``
  downloads history through ccxt's public endpoints (no API key), paging forward and
  resuming after the newest stored bar;
* ``tvgw data import FILE --symbol BTC/USDT --timeframe 1h`` loads a freqtrade JSON
  (``[[ms, o, h, l, c, v], ...]``) or CSV file, validating every row first.

Both print how many candles were written and the gaps in what the store now holds.
"""

from __future__ import annotations

import argparse
import os
import sys

from settings import Settings, load_settings
from storage.database import Storage
from tvgw.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "data")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download OHLCV history through ccxt (public endpoints)")
    fetch.add_argument("--symbol", required=True, help="market symbol, e.g. BTC/USDT")
    fetch.add_argument("--timeframe", default="1h", help="bar size, e.g. 15m, 1h, 4h, 1d (default 1h)")
    fetch.add_argument("--days", type=float, default=365.0, help="how far back (default 365)")
    fetch.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    fetch.set_defaults(func=run_fetch)
    imp = actions.add_parser("import", help="import a freqtrade JSON or CSV candle file")
    imp.add_argument("file", help="path to the .json or .csv file")
    imp.add_argument("--symbol", required=True, help="market symbol the file holds, e.g. BTC/USDT")
    imp.add_argument("--timeframe", required=True, help="bar size of the file, e.g. 1h")
    imp.set_defaults(func=run_import)


def cli_settings() -> Settings:
    """Settings for offline commands, which need no webhook passphrase (placeholder if unset)."""
    environ = {**os.environ, "TVGW_PASSPHRASE": os.environ.get("TVGW_PASSPHRASE", "unused-by-cli")}
    return load_settings(environ=environ)


def open_storage(settings: Settings) -> Storage:
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    return storage


def _report_gaps(storage: Storage, symbol: str, timeframe: str) -> None:
    from ml_integration.candles import find_gaps, timeframe_seconds
    from storage.candles import load_candles

    frame = load_candles(storage, symbol, timeframe)
    if frame.empty:
        print(f"{symbol} {timeframe}: the store holds no candles")
        return
    gaps = find_gaps(frame.index, timeframe_seconds(timeframe))
    print(
        f"{symbol} {timeframe}: {len(frame)} candles stored, {frame.index[0]} .. {frame.index[-1]}, "
        f"{len(gaps)} gap(s), {sum(g.missing_bars for g in gaps)} missing bar(s)"
    )
    for gap in sorted(gaps, key=lambda g: -g.missing_bars)[:5]:
        print(f"  gap of {gap.missing_bars} bar(s) after {gap.after}")


def run_fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ml_integration.market_data import MarketDataError, create_exchange, fill_candle_store

    settings = cli_settings()
    storage = open_storage(settings)
    exchange = create_exchange(args.exchange, api_url=settings.exchange_api_url)
    with tqdm(desc=f"fetch {args.symbol} {args.timeframe}", unit=" candles") as bar:

        def progress(rows: int, last_ms: int) -> None:
            bar.update(rows - bar.n)

        try:
            written = fill_candle_store(
                storage, exchange, args.symbol, args.timeframe, days=args.days, on_batch=progress
            )
        except MarketDataError as exc:
            print(f"tvgw data fetch: {exc}", file=sys.stderr)
            return 1
    print(f"wrote {written} candles from {args.exchange}")
    _report_gaps(storage, args.symbol, args.timeframe)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ml_integration.candles import frame_to_rows, read_candle_file, timeframe_seconds
    from ml_integration.exceptions import CandleDataError
    from storage.candles import delete_synthetic, is_synthetic_market, upsert_candles

    try:
        timeframe_seconds(args.timeframe)
        frame = read_candle_file(args.file)
    except (CandleDataError, ValueError, FileNotFoundError) as exc:
        print(f"tvgw data import: {exc}", file=sys.stderr)
        return 1
    storage = open_storage(cli_settings())
    if is_synthetic_market(storage, args.symbol):
        removed = delete_synthetic(storage, args.symbol)
        print(
            f"removed {removed} SYNTHETIC {args.symbol} candles first (a history is never half generated); "
            "paper positions opened at synthetic prices are now marked at real ones"
        )
    written = upsert_candles(
        storage,
        args.symbol,
        args.timeframe,
        frame_to_rows(frame),
        source=f"file:{os.path.basename(args.file)}",
    )
    print(f"imported {written} candles from {args.file}")
    _report_gaps(storage, args.symbol, args.timeframe)
    return 0
