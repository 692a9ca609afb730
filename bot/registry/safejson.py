"""JSON from registries, read defensively: one loader for every answer.

A registry (or anything in between) may send bytes that are not UTF-8,
nest arrays thousands of levels deep (``json`` then raises
:class:`RecursionError`), or write integers of 5,000 digits (``json``
raises :class:`ValueError` past Python's int-string limit). :func:`loads`
turns all of these into one :class:`BadJson` whose message says which,
in plain words, without echoing the body.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

#: deeper than this is refused before parsing (real manifests nest 4 levels)
MAX_DEPTH = 64

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BadJson(ValueError):
    """The body is not usable JSON; the message completes "the answer …"."""


def depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (strings skipped); about
    0.2 s per MB of brackets, so bounded by the body's size cap."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(body: bytes) -> Any:
    """Parse ``body`` as UTF-8 JSON; :class:`BadJson` with a plain reason if it is not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("is not UTF-8 text") from None
    if depth(text) > MAX_DEPTH:
        raise BadJson(f"nests JSON deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise BadJson("is not valid JSON") from None
    except RecursionError:
        raise BadJson(f"nests JSON deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise BadJson("holds a number too large to read") from None
