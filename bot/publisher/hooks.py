"""Crash points for the crash tests.

``WISHBOT_TEST_CRASH_AT=<step>[:<n>]`` makes the process kill itself with
SIGKILL the ``n``-th time (default: first) it reaches ``crash_point(step)``.
Unset (always, outside tests) this costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def crash_point(step: str) -> None:
    spec = os.environ.get("WISHBOT_TEST_CRASH_AT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != step:
        return
    _hits[step] = _hits.get(step, 0) + 1
    if _hits[step] >= int(count or "1"):
        os.kill(os.getpid(), signal.SIGKILL)
