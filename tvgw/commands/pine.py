"""`tvgw pine render`: print a bundled Pine script ready to paste into TradingView.

The script goes to stdout (so ``tvgw pine render > strategy.pine`` works); what to paste into the
alert dialog, the webhook URL and any warnings go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

from pine.render import DEFAULT_STRATEGY_ID, KINDS, RenderedScript, RenderError, render
from tvgw.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "pine")
    actions = parser.add_subparsers(dest="pine_command", required=True, metavar="ACTION")
    rendered = actions.add_parser(
        "render",
        help="print a Pine script with the gateway's alert message built in",
        description="Print the bundled Pine script (stdout) and the alert message to paste (stderr).",
    )
    rendered.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY_ID,
        metavar="ID",
        help=f"strategy id baked into the script (default: {DEFAULT_STRATEGY_ID})",
    )
    rendered.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="bake the passphrase held in environment variable VAR into the script "
        "(default: leave it empty for the user to type into TradingView)",
    )
    rendered.add_argument("--kind", choices=sorted(KINDS), default="strategy", help="script kind")
    rendered.add_argument(
        "--url", help="the gateway's public webhook URL, e.g. https://gw.example.com/webhook"
    )
    rendered.set_defaults(func=run_render)


def _passphrase(variable: str | None) -> str:
    """The passphrase from the variable the user named on the command line.

    This is a direct read of one variable the user chose explicitly for this command, not
    gateway configuration (which only :mod:`settings` reads).
    """
    if variable is None:
        return ""
    value = os.environ.get(variable)
    if not value:
        raise RenderError(
            f"--passphrase-env {variable}: the environment variable {variable} is not set or empty"
        )
    return value


def _instructions(script: RenderedScript) -> str:
    lines = ["", "=" * 72]
    if script.kind == "strategy":
        lines.append(
            "Create ONE alert on this strategy (condition: Order fills and alert() function calls, so the "
            "optional heartbeat is sent too). Message to paste (exactly this):"
        )
    else:
        lines.append(
            "Create one alert per condition you want. Condition → message (pre-filled by the script):"
        )
    for title, message in script.alert_messages.items():
        lines += ["", f"[{title}]", message] if script.kind == "indicator" else ["", message]
    lines += ["", f"Webhook URL: {script.webhook_url}"]
    if script.webhook_url.startswith("https://<"):
        lines.append("(put the gateway behind HTTPS on port 443: docs/tradingview.md)")
    lines.append("=" * 72)
    return "\n".join(lines)


def run_render(args: argparse.Namespace) -> int:
    try:
        script = render(
            args.kind,
            strategy_id=args.strategy,
            passphrase=_passphrase(args.passphrase_env),
            webhook_url=args.url,
        )
    except RenderError as exc:
        print(f"tvgw pine render: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(script.source)
    sys.stdout.flush()
    for warning in script.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(_instructions(script), file=sys.stderr)
    return 0
