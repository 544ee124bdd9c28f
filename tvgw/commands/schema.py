"""`tvgw schema`: print the alert schema (the manual's table in docs/alerts.md is made from this)."""

from __future__ import annotations

import argparse
import json

from engine.alert import Alert, alert_field_table
from tvgw.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "schema")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (docs/alerts.md)")
    parser.set_defaults(func=run)


def markdown_table() -> str:
    lines = ["| field | type | required | TradingView placeholder | meaning |", "|---|---|---|---|---|"]
    for row in alert_field_table():
        placeholder = f"`{row['placeholder']}`" if row["placeholder"] else ""
        lines.append(
            f"| `{row['field']}` | {row['type']} | {row['required']} | {placeholder} | {row['description']} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
    else:
        print(json.dumps(Alert.model_json_schema(), indent=2))
    return 0
