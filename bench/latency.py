"""Benchmark: from a push to the registry to the image published, through registry events.

    .venv/bin/python bench/latency.py [--runs 5] [--debounce 2.0]

A real ``docker-registry`` whose ``notifications:`` point at a running
``wishbot serve`` (in this process: the real pipeline, a ``local:``
publisher, a local wishlist repository that wishes ``events/app:1``). Each
run pushes a new build of that tag (a small image: a shared base layer and a
new application layer) and measures the time from the end of the push (the
manifest ``PUT`` answered) until the publisher serves the new image. Printed
beside the 15-minute reference of the services wishbot replaces and what an
hourly re-publication gives (30 minutes on average, 60 at worst). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from registry_events_site import event_site, wait_for  # the tests' site

REFERENCE = 15 * 60.0  # seconds: merge to availability, the reference services' own documentation
HOURLY = 60 * 60.0  # the periodic re-publication's interval (reapply_interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--debounce", type=float, default=2.0, help="registry_event_debounce (default: 2 s)"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as work,
        event_site(Path(work), debounce=args.debounce) as site,
    ):
        site.wish("app:1")
        first = site.push("app", "1", "0")
        wait_for(lambda: site.published("app", "1") == first.manifest_digest, timeout=120)
        times = []
        for run in range(1, args.runs + 1):
            wait_for(site.idle, timeout=120)
            pushed = site.push("app", "1", str(run))
            started = time.monotonic()
            digest = pushed.manifest_digest
            wait_for(lambda d=digest: site.published("app", "1") == d, timeout=120)  # type: ignore[misc]
            times.append(time.monotonic() - started)
            print(f"run {run}: published {times[-1]:.2f} s after the push")
    print(
        f"push -> published (local:, debounce {args.debounce:g} s), {args.runs} runs: "
        f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s"
    )
    print(f"reference services: about {REFERENCE / 60:.0f} min from merge to availability")
    print(
        f"hourly re-publication alone: {HOURLY / 2 / 60:.0f} min on average, "
        f"{HOURLY / 60:.0f} min at worst"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
