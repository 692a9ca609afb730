"""Logging for the long-running runtimes (``serve``): one line per event, text or JSON.

A log call names what happened in its message and puts the facts in
``extra=fields(...)``: the text format appends them as ``key=value``, the
JSON format (``--log-format json``, or ``log_format = "json"``) writes one
object per line. Secrets (the webhook secret, forge tokens, registry
passwords, read from the environment) are replaced by ``***`` in every
record, whatever logged them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

FORMATS = ("text", "json")
_FIELDS = "wishbot_fields"
# WISHBOT_WEBHOOK_SECRET, GITLAB_TOKEN, WISHBOT_REGISTRY_<N>_PASSWORD, a GitHub App key, ...
_SECRET_VARIABLES = re.compile(r"^\w*(TOKEN|SECRET|PASSWORD|PRIVATE_KEY|APP_KEY)$")
_SAFE_VALUE = re.compile(r"^[\w.:/@+-]*$")


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra=`` of a log call carrying these facts."""
    return {_FIELDS: values}


def _facts(record: logging.LogRecord) -> Mapping[str, Any]:
    value = getattr(record, _FIELDS, None)
    return value if isinstance(value, Mapping) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO bot.runtime.server: job finished kind=review ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        for key, value in _facts(record).items():
            text = str(value)
            line += f" {key}={text if _SAFE_VALUE.match(text) else json.dumps(text)}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's facts."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _facts(record).items():
            entry.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RedactSecrets(logging.Filter):
    """Replace each secret by ``***`` in the message, its arguments and its facts."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self._clean(record.getMessage())
        record.args = None
        facts = _facts(record)
        if facts:
            clean = {k: self._clean(v) if isinstance(v, str) else v for k, v in facts.items()}
            setattr(record, _FIELDS, clean)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.msg += "\n" + record.exc_text
            record.exc_text = None
        return True


class Throttle:
    """At most ``burst`` lines per ``window`` seconds (for what clients can cause at
    will, e.g. refused deliveries); :meth:`allow` also says how many were held back
    since the last line let through."""

    def __init__(self, burst: int = 20, window: float = 10.0):
        self._burst = burst
        self._window = window
        self._start = -window
        self._count = 0
        self._held = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self._window:
                self._start, self._count = now, 0
            if self._count >= self._burst:
                self._held += 1
                return False, 0
            self._count += 1
            held, self._held = self._held, 0
            return True, held


def secrets_from(environ: Mapping[str, str]) -> list[str]:
    """The values of the environment variables that hold secrets."""
    return [value for name, value in environ.items() if _SECRET_VARIABLES.match(name) and value]


def configure(
    log_format: str = "text",
    *,
    level: int = logging.INFO,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send wishbot's records (``bot.*``) at ``level`` and everyone's warnings to
    stderr in ``log_format``, secrets redacted; returns the handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactSecrets(secrets_from(os.environ if environ is None else environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("bot").setLevel(min(level, logging.INFO))
    # its retry warnings repeat what the job's own line says once
    logging.getLogger("urllib3.connectionpool").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.ERROR
    )
    return handler
