"""Shared wiring for the runtimes: the pipeline, the forges, the state directory."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from bot.config import Config
from bot.errors import ConfigError
from bot.forge.base import Forge
from bot.forge.factory import make_forge
from bot.runtime.pipeline_api import Pipeline


def load_pipeline(config: Config) -> Pipeline:
    """The real pipeline (``bot.runtime.pipeline.make_pipeline``), imported lazily."""
    try:
        module = importlib.import_module("bot.runtime.pipeline")
    except ModuleNotFoundError as exc:
        if exc.name == "bot.runtime.pipeline":
            raise ConfigError(
                "this wishbot has no pipeline (bot.runtime.pipeline is missing)",
                hint="install a complete wishbot",
            ) from None
        raise
    pipeline: Pipeline = module.make_pipeline(config)
    return pipeline


class Forges:
    """Forge adapters per (kind, repository), built on first use, one set per thread
    (the vendor libraries' HTTP clients are not meant to be shared across threads)."""

    def __init__(self, config: Config):
        self._config = config
        self._local = threading.local()

    def __call__(self, kind: str, repository: str) -> Forge:
        forges: dict[tuple[str, str], Forge] | None = getattr(self._local, "forges", None)
        if forges is None:
            forges = self._local.forges = {}
        key = (kind, repository)
        if key not in forges:
            forges[key] = make_forge(self._config, repository, kind=kind)
        return forges[key]


def state_dir(config: Config, override: str | None = None) -> Path:
    """The bot's state directory (created), from --state-dir or ``state_dir``."""
    path = override or config.state_dir
    if not path:
        raise ConfigError(
            "no state directory",
            hint="set state_dir (WISHBOT_STATE_DIR) or pass --state-dir; the queue and the run "
            "journal live there",
        )
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory
