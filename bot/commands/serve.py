"""``wishbot serve``: the webhook server with its durable queue and workers."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from dataclasses import replace
from types import FrameType

from bot.config import Config
from bot.errors import ConfigError
from bot.runtime.logs import FORMATS, configure
from bot.runtime.server import open_server
from bot.runtime.wiring import Forges, load_pipeline, state_dir

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="receive forge webhooks and registry events; run reviews and publications",
        description="Serve webhooks on --listen. The secret comes from WISHBOT_WEBHOOK_SECRET; "
        "only the configured repositories are accepted. Registry events (push -> publish "
        "in seconds) on POST /hooks/registry/{distribution,harbor,github,dockerhub} when "
        "registry_events is set. GET /healthz and /metrics. "
        "Logs one line per delivery and job at INFO; limits in docs/operating.md.",
    )
    parser.add_argument("--listen", help="HOST:PORT (default: the listen setting)")
    parser.add_argument("--state-dir", help="queue and journal directory (default: state_dir)")
    parser.add_argument("--plan-workers", type=int, default=4, help="parallel reviews")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="one line per delivery and job on stderr, as text or JSON (default: log_format)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = Config.load()
    if args.listen:
        config = replace(config, listen=args.listen)
    log_format = args.log_format or config.log_format
    if log_format not in FORMATS:
        raise ConfigError(
            f"log_format {log_format!r} is not one of {', '.join(FORMATS)}",
            hint="set WISHBOT_LOG_FORMAT=text or json",
        )
    configure(log_format, level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO)
    secret = os.environ.get("WISHBOT_WEBHOOK_SECRET", "")
    if not secret.strip():
        raise ConfigError(
            "refusing to serve webhooks without a secret",
            hint="set WISHBOT_WEBHOOK_SECRET to the secret configured in the forge's webhook",
        )
    server = open_server(
        config,
        secret=secret,
        state_dir=state_dir(config, args.state_dir),
        pipeline=load_pipeline(config),
        forge_for=Forges(config),
        plan_workers=args.plan_workers,
    )
    server.start()
    host, port = server.address
    print(f"wishbot: serving webhooks on http://{host}:{port}/webhook", flush=True)

    def _stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.wait()
    return 0
