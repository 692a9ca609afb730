"""``wishbot lease list|drop --publisher cvmfs:REPO``: the gateway's leases on a repository.

With a CernVM-FS repository gateway, each publisher writes under a lease on a
subpath. A publisher that died keeps its lease until it expires
(max_lease_time, 2 hours by default) and nobody else can publish there.
``lease list`` shows the leases of REPO (path, host, time left);
``lease drop PATH`` cancels the ones under PATH (relative to the repository:
``.flat/ab/…``; ``REPO/…`` works too; ``/`` is the whole repository).

Without ``--yes``, ``drop`` only prints the leases it would cancel and exits 0:
it never asks, so a script never blocks or drops by accident. The gateway
compares string prefixes with ``_`` and ``%`` as wildcards and ASCII case
folded, so ``.flat/ab`` also cancels ``.flat/abc``: the preview lists exactly
what it cancels, and warns about leases that are not under PATH.

The gateway: the ``gateway_url`` setting (``WISHBOT_GATEWAY_URL``), else the
``CVMFS_UPSTREAM_STORAGE=gw,…,URL`` line of
``/etc/cvmfs/repositories.d/REPO/server.conf``. Cancelling needs a key declared
with ``"admin": true`` in the gateway's repo.json:
``WISHBOT_GATEWAY_ADMIN_KEY=KEYID:SECRET`` or ``WISHBOT_GATEWAY_ADMIN_KEY_FILE``
(``plain_text KEYID SECRET``). Exit status: 0 done (or previewed), 1 failure,
2 usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the gateway adapter (requests) is imported when a lease command runs
    from bot.publisher.gateway_api import GatewayAdmin, Lease


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lease",
        help="list the gateway's leases on a cvmfs: repository, drop those a dead publisher left",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="lease_command", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="the leases on the repository: path, host, time left",
        description="List the gateway's leases on the repository (no key needed).",
    )
    _common(listing)
    listing.set_defaults(func=run_list)
    drop = actions.add_parser(
        "drop",
        help="cancel the leases under PATH (a preview unless --yes)",
        description="Cancel every lease the gateway holds under PATH. Without --yes: print "
        "the leases it would cancel and exit 0, changing nothing (never a question: safe "
        "in scripts). Needs WISHBOT_GATEWAY_ADMIN_KEY or WISHBOT_GATEWAY_ADMIN_KEY_FILE.",
    )
    drop.add_argument(
        "path",
        metavar="PATH",
        help="relative to the repository (.flat/ab/…, or REPO/…); / is the whole repository",
    )
    drop.add_argument("--yes", action="store_true", help="cancel them (default: preview only)")
    _common(drop)
    drop.set_defaults(func=run_drop)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--publisher", metavar="cvmfs:REPO", help="the repository (default: the setting)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--now", metavar="ISO", help="pretend the time is ISO-8601 TIME (tests, replays)"
    )


def _open(args: argparse.Namespace) -> tuple[str, GatewayAdmin, datetime]:
    from bot.commands.options import parse_time
    from bot.commands.target import publisher_of
    from bot.config import Config
    from bot.errors import UsageError
    from bot.publisher.gateway_api import open_gateway

    config = Config.load()
    publisher = publisher_of(args.publisher, config)
    if not publisher.cvmfs_repo:
        raise UsageError(
            f"leases exist only on a CernVM-FS gateway, not for {publisher.target}",
            hint="pass --publisher cvmfs:REPO",
        )
    return publisher.cvmfs_repo, open_gateway(publisher.cvmfs_repo, config), parse_time(args.now)


def run_list(args: argparse.Namespace) -> int:
    repo, gateway, now = _open(args)
    leases = [lease for lease in gateway.leases() if lease.repository == repo]
    if args.format == "json":
        _print_json({"gateway": gateway.url, "repository": repo, "leases": leases}, now)
    elif leases:
        print(table(leases, now))
    else:
        print(f"no leases on {repo} (gateway {gateway.url})")
    return 0


def run_drop(args: argparse.Namespace) -> int:
    from bot.publisher.gateway_api import cancelled_by, is_inside, lease_path

    repo, gateway, now = _open(args)
    prefix = lease_path(repo, args.path)
    doomed = cancelled_by(prefix, gateway.leases())
    outside = [lease.path for lease in doomed if not is_inside(lease, prefix)]
    dropped = bool(doomed) and args.yes
    if dropped:
        gateway.drop(prefix)
    if args.format == "json":
        report = {"gateway": gateway.url, "path": prefix, "dropped": dropped, "leases": doomed}
        _print_json(report, now)
        return 0
    if outside:
        print(
            f"wishbot: warning: the gateway compares string prefixes ('_' and '%' match "
            f"anything): {prefix} also covers {', '.join(outside)}",
            file=sys.stderr,
        )
    print(
        drop_text(prefix, doomed, now, dropped=dropped, asked=args.yes, keyed=bool(gateway.key_id))
    )
    return 0


def drop_text(
    prefix: str, doomed: list[Lease], now: datetime, *, dropped: bool, asked: bool, keyed: bool
) -> str:
    """What ``drop`` did or would do, for people."""
    if not doomed:
        return f"no lease under {prefix}: nothing to drop"
    count = f"{len(doomed)} lease{'s' if len(doomed) != 1 else ''}"
    if dropped:
        return f"dropped {count} under {prefix}:\n{table(doomed, now)}"
    lines = [f"would drop {count} under {prefix}:", table(doomed, now)]
    if not asked:
        lines.append("nothing dropped: run again with --yes to cancel them")
    if not keyed:
        lines.append(
            "(--yes needs WISHBOT_GATEWAY_ADMIN_KEY=KEYID:SECRET or WISHBOT_GATEWAY_ADMIN_KEY_FILE)"
        )
    return "\n".join(lines)


def table(leases: list[Lease], now: datetime) -> str:
    """One row per lease: path, host, expires in (untrusted text made inert)."""
    from bot.core.text import escape_terminal

    rows = [("path", "host", "expires in")] + [
        (
            escape_terminal(lease.path),
            escape_terminal(lease.hostname or "-"),
            expires_in(lease, now),
        )
        for lease in leases
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return "\n".join(
        f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}".rstrip() for row in rows
    )


def expires_in(lease: Lease, now: datetime) -> str:
    """``1h 59m``, ``4m 10s``, ``12s``, ``expired``: how long ``lease`` still holds its path."""
    seconds = int((lease.expires - now).total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _print_json(report: dict[str, Any], now: datetime) -> None:
    report["leases"] = [
        {
            "path": lease.path,
            "key_id": lease.key_id,
            "hostname": lease.hostname,
            "expires": lease.expires.astimezone(UTC).isoformat(),
            "expires_in_seconds": max(0, int((lease.expires - now).total_seconds())),
        }
        for lease in report["leases"]
    ]
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
