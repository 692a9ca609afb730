"""``wishbot schema``: print the wishlist's JSON Schema (2020-12).

Editors that speak the YAML language server can use it: save the output as
``wishlist.schema.json`` and start the wishlist with
``# yaml-language-server: $schema=wishlist.schema.json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.core.recipe import wishlist_schema_text


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the wishlist JSON Schema",
        description="Print the JSON Schema (draft 2020-12) that wishlists are checked against.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    text = wishlist_schema_text()
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
