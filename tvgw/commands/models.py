"""`tvgw models`: which trained version of each market is acted on, and a human's say in it.

* ``tvgw models list [--symbol S] [--timeframe TF] [--json]``: every version with its role
  (champion, challenger, retired, inactive), and per market why the champion is champion, the
  challenger's paired test as it stands, and whether ML-driven sizing is on.
* ``tvgw models promote VERSION --reason TEXT [--symbol S] [--timeframe TF] [--by NAME]``:
  make VERSION champion now (every worker acts on it from its next alert).
* ``tvgw models rollback --reason TEXT [--symbol S] [--timeframe TF] [--by NAME]``: back to the
  version that was champion before the current one.

Who (``--by``, default the login name) and why (``--reason``) are kept with the change in
``ml_model_events``, which the API (``/api/ml/champions``), the dashboard and the notifications
read. Without ``--symbol`` the command acts on the one market that has a champion.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
from typing import Any

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage

__all__ = ["login_name", "register"]

VERSION_COLUMNS = ("market", "version", "role", "created_at", "retired_at")


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "models")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every version with its role, and why")
    _market_options(listing)
    listing.add_argument("--json", action="store_true", help="print JSON (the API's /api/ml/champions)")
    listing.set_defaults(func=run_list)
    promote = actions.add_parser("promote", help="make VERSION the champion now")
    promote.add_argument("version", metavar="VERSION")
    _change_options(promote)
    promote.set_defaults(func=run_promote)
    rollback = actions.add_parser("rollback", help="back to the champion before the current one")
    _change_options(rollback)
    rollback.set_defaults(func=run_rollback)


def _market_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", help="market symbol, e.g. BTC/USDT (default: the only market)")
    parser.add_argument("--timeframe", help="bar size, e.g. 1h (default: the only one of the symbol)")


def _change_options(parser: argparse.ArgumentParser) -> None:
    _market_options(parser)
    parser.add_argument("--reason", required=True, help="why (kept with the change)")
    parser.add_argument("--by", default=login_name(), help="who (default: your login name)")


def login_name() -> str:
    """The login name of the user running the command (from the password database: no
    environment variable can claim to be someone else here)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def _market(storage: Any, args: argparse.Namespace) -> tuple[str, str] | None:
    """The market the command acts on, or None (the reason printed)."""
    from storage.champions import list_roles

    known = [(r.symbol, r.timeframe) for r in list_roles(storage)]
    if args.symbol and args.timeframe:
        return str(args.symbol), str(args.timeframe)
    matching = [m for m in known if args.symbol in (None, m[0]) and args.timeframe in (None, m[1])]
    if len(matching) == 1:
        return matching[0]
    if args.symbol and not matching:
        return str(args.symbol), str(args.timeframe or "1h")
    names = ", ".join(f"{s} {tf}" for s, tf in known) or "none yet"
    print(f"tvgw models: name the market with --symbol and --timeframe (markets with a champion: {names})",
          file=sys.stderr)  # fmt: skip
    return None


def run_list(args: argparse.Namespace) -> int:
    from ml_integration.champions import ChampionRules, market_report, version_roles
    from storage.champions import list_roles
    from webhook.api_json import to_api

    settings = cli_settings()
    storage = open_storage(settings)
    rules = ChampionRules.from_settings(settings)

    def wanted(symbol: str, timeframe: str) -> bool:
        return args.symbol in (None, symbol) and args.timeframe in (None, timeframe)

    versions = [v for v in version_roles(storage, settings.model_dir) if wanted(v["symbol"], v["timeframe"])]
    markets = [market_report(storage, r, rules) for r in list_roles(storage) if wanted(r.symbol, r.timeframe)]
    if args.json:
        print(json.dumps(to_api({"versions": versions, "markets": markets}), indent=2))
        return 0
    if not versions:
        print(f"no model versions in {settings.model_dir} (train one: tvgw train --symbol BTC/USDT)")
        return 0
    from tvgw.commands.records import format_table

    rows = [{**v, "market": f"{v['symbol']} {v['timeframe']}"} for v in to_api(versions)]
    print(format_table(rows, VERSION_COLUMNS))
    for market in markets:
        print()
        print("\n".join(_market_lines(market)))
    return 0


def _market_lines(report: dict[str, Any]) -> list[str]:
    """A market's roles and why, in a few lines of text."""
    from webhook.api_json import iso

    champion = report["champion"]
    why = champion["why"]
    lines = [
        f"{report['symbol']} {report['timeframe']}: champion {champion['version']} since "
        f"{iso(champion['since'])}" + (f" ({why['kind']} by {why['actor']}: {why['reason']})" if why else "")
    ]
    challenger = report["challenger"]
    if challenger is None:
        lines.append("  no challenger")
    else:
        test = challenger["test"]
        figures = "no resolved alerts both versions predicted yet"
        if test["n"]:
            low, high = test["ci95"]
            figures = (
                f"log loss {test['candidate_log_loss']:.4f} vs champion {test['reference_log_loss']:.4f}, "
                f"difference {test['difference']:+.4f} [{low:+.4f}, {high:+.4f}], n={test['n']}"
            )
        lines.append(f"  challenger {challenger['version']}: {figures}: {challenger['verdict']}")
    sizing = report["ml_sizing"]
    if sizing["on"]:
        base = sizing["base_rate_test"]
        detail = (
            ""
            if base is None
            else (
                f" (log loss {base['candidate_log_loss']:.4f} vs base rate "
                f"{base['reference_log_loss']:.4f}, n={base['n']})"
            )
        )
        lines.append(f"  ML-driven sizing: on{detail}")
    else:
        lines.append(f"  ML-driven sizing: OFF since {iso(sizing['off_since'])}: {sizing['reason']}")
    return lines


def run_promote(args: argparse.Namespace) -> int:
    from ml_integration.champions import ChampionRules, promote

    return _change(args, lambda storage, settings, symbol, timeframe: promote(
        storage, settings.model_dir, symbol, timeframe, args.version, actor=args.by, reason=args.reason,
        rules=ChampionRules.from_settings(settings),
    ))  # fmt: skip


def run_rollback(args: argparse.Namespace) -> int:
    from ml_integration.champions import rollback

    return _change(args, lambda storage, settings, symbol, timeframe: rollback(
        storage, settings.model_dir, symbol, timeframe, actor=args.by, reason=args.reason,
    ))  # fmt: skip


def _change(args: argparse.Namespace, change: Any) -> int:
    from ml_integration.champions import ChampionError

    settings = cli_settings()
    storage = open_storage(settings)
    market = _market(storage, args)
    if market is None:
        return 2
    try:
        event = change(storage, settings, *market)
    except ChampionError as exc:
        print(f"tvgw models {args.action}: {exc}", file=sys.stderr)
        return 1
    was = event.previous or "none"
    print(f"{event.symbol} {event.timeframe}: {event.version} is champion now (was {was}); {event.kind} by "
          f"{event.actor}: {event.reason}")  # fmt: skip
    print("every gateway worker acts on it from its next alert")
    return 0
