"""`tvgw quickstart`: not built yet (see the open issues)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("quickstart", help="(not built yet)")
    parser.set_defaults(func=lambda args: print("tvgw quickstart: not built yet") or 1)
