"""The JSON Schemas wishbot ships (``bot/schemas/*.json``) and validation against them.

The schema files are package data: read once, never written, so using them
keeps the core free of I/O in every sense that matters (no state, no clock).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, cast

from jsonschema import Draft202012Validator


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A shipped schema by file name, e.g. ``plan.schema.json``."""
    text = (resources.files("bot") / "schemas" / name).read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(instance: object, name: str, *, limit: int = 10) -> list[str]:
    """Readable messages (``at images/3/path: ...``) for what in ``instance`` breaks schema ``name``."""
    errors = sorted(
        _validator(name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]
    )
    messages = []
    for error in errors[:limit]:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        messages.append(f"at {where}: {error.message}")
    return messages
