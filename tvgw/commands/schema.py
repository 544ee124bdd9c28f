"""`tvgw schema`: print the alert schema (JSON Schema, or with ``--markdown`` the manual's field
table in docs/alerts.md)."""

from __future__ import annotations

import argparse
import json

from engine.alert import Alert
from pine.field_table import markdown_table
from tvgw.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "schema")
    parser.add_argument(
        "--markdown", action="store_true", help="the fields as a Markdown table (docs/alerts.md)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
    else:
        print(json.dumps(Alert.model_json_schema(), indent=2))
    return 0
