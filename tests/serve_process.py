"""A webhook server process for crash tests: ``python serve_process.py CONFIG.json``.

It is ``wishbot serve`` with the pipeline and the forge chosen by the test:
the GitHub fake's URL and token, and a pipeline that hangs in review while
the file named ``hang`` exists (so the test can kill it mid-job). Optional
settings: ``config`` (more :class:`Config` fields, e.g. the webhook limits),
``workers`` (false: intake only) and ``log_format``; it logs like ``serve``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from bot.config import Config
from bot.forge.base import Forge
from bot.forge.github import GitHubForge
from bot.runtime.logs import configure
from bot.runtime.pipeline_api import PLAN_MARKER, Publication, Review
from bot.runtime.server import open_server


class HangingPipeline:
    def __init__(self, hang: Path):
        self.hang = hang

    def review(
        self,
        base: bytes | None,
        head: bytes,
        path: str,
        *,
        trusted: bool,
        catalog: bytes | None = None,
    ) -> Review:
        while self.hang.exists():
            time.sleep(0.05)
        return Review(True, "valid", True, "1 image to add", f"{PLAN_MARKER}\nplan\n")

    def publish(self, wishlist: bytes, path: str, commit: str) -> Publication:
        return Publication(ok=True, description="nothing to publish")

    def collect(self) -> str:
        return "gc: nothing to delete"


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    configure(settings.get("log_format", "text"))
    config = Config(
        forge="github",
        listen="127.0.0.1:0",
        repositories=(settings["repository"],),
        **settings.get("config", {}),
    )

    def forge_for(kind: str, repository: str) -> Forge:
        return GitHubForge(settings["api_url"], repository, settings["token"], write_interval=None)

    server = open_server(
        config,
        secret=settings["secret"],
        state_dir=Path(settings["state_dir"]),
        pipeline=HangingPipeline(Path(settings["hang"])),
        forge_for=forge_for,
        visibility=settings.get("visibility"),
    )
    server.start(workers=settings.get("workers", True))

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    host, port = server.address
    Path(settings["address"]).write_text(f"{host}:{port}")
    server.wait()


if __name__ == "__main__":
    main()
