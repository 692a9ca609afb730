"""Benchmark: from a push to the registry to the image published, through registry events.

    .venv/bin/python bench/latency.py [--runs 5] [--debounce 2.0]

A real ``docker-registry`` whose ``notifications:`` point at a running
``wishbot serve`` (in this process: the real pipeline, a local wishlist
repository that wishes ``events/app:1``). Each run pushes a new build of that
tag (a small image: a shared base layer and a new application layer) and
measures the time from the end of the push (the manifest ``PUT`` answered)
until the new image is published:

- ``local:``: until the publisher's tree serves it;
- ``cvmfs:`` (when a real CernVM-FS is installed, see tests/cvmfs_fixture.py;
  else skipped with one line): a throwaway repository made with
  ``cvmfs_server``, until an independent client mount of it (over HTTP from
  the local Apache, ``cvmfs_talk remount sync`` before each look) sees it.

Printed beside the 15-minute reference of the services wishbot replaces and
what an hourly re-publication gives (30 minutes on average, 60 at worst).
Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cvmfs_fixture import RealRepo, _machine_lock, real_cvmfs_missing  # the tests' repository
from merge_site import merge_site  # the tests' GitLab fake, registry and server
from registry_events_site import Site, event_site, wait_for  # the tests' site

REFERENCE = 15 * 60.0  # seconds: merge to availability, the reference services' own documentation
HOURLY = 60 * 60.0  # the periodic re-publication's interval (reapply_interval)


def push_runs(site: Site, runs: int, seen: str = "published") -> list[float]:
    """Seconds from each push of a new build of ``events/app:1`` until published."""
    site.wish("app:1")
    first = site.push("app", "1", "0")
    wait_for(lambda: site.published("app", "1") == first.manifest_digest, timeout=120)
    times = []
    for run in range(1, runs + 1):
        wait_for(site.idle, timeout=120)
        pushed = site.push("app", "1", str(run))
        started = time.monotonic()
        digest = pushed.manifest_digest
        wait_for(lambda d=digest: site.published("app", "1") == d, timeout=120)  # type: ignore[misc]
        times.append(time.monotonic() - started)
        print(f"  run {run}: {seen} {times[-1]:.2f} s after the push")
    return times


def summary(what: str, times: list[float]) -> str:
    return (
        f"{what}, {len(times)} runs: "
        f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s"
    )


def bench_local(runs: int, debounce: float) -> str:
    with tempfile.TemporaryDirectory() as work, event_site(Path(work), debounce=debounce) as site:
        return summary(
            f"push -> published (local:, debounce {debounce:g} s)", push_runs(site, runs)
        )


def bench_cvmfs(runs: int, debounce: float) -> str:
    missing = real_cvmfs_missing()
    if missing:
        return f"push -> client mount sees it (cvmfs:): skipped, {missing}"
    with tempfile.TemporaryDirectory() as work:
        repo = RealRepo(Path(work) / "cvmfs")
        repo.tmp.mkdir()
        try:
            repo.create()
            Path(repo.env["WISHBOT_LOCK_DIR"]).mkdir()
            os.environ.update(repo.env)
            with (
                _machine_lock(shared=True),
                event_site(
                    Path(work),
                    debounce=debounce,
                    publisher=f"cvmfs:{repo.name}",
                    cvmfs_repo=repo.name,
                    view=repo.client,
                ) as site,
            ):
                times = push_runs(site, runs, "seen by the client")
        finally:
            repo.close()
    what = f"push -> client mount sees it (cvmfs:, debounce {debounce:g} s)"
    return summary(what, times)


def bench_merge(runs: int) -> str:
    """Merge -> published: each run merges a merge request wishing a new image
    on the GitLab fake and delivers GitLab's push webhook to the server."""
    times = []
    with tempfile.TemporaryDirectory() as work, merge_site(Path(work)) as site:
        wished = []
        for run in range(1, runs + 1):
            digest = site.push(f"app{run}", "1", str(run)).manifest_digest
            wished.append(f"app{run}:1")
            _, sha = site.merge(f"add-app{run}", *wished)
            started = time.monotonic()
            if site.deliver_push(sha) != 202:
                raise SystemExit("the server did not accept the push webhook")
            wait_for(lambda n=run, d=digest: site.published(f"app{n}", "1") == d, timeout=120)  # type: ignore[misc]
            times.append(time.monotonic() - started)
            print(f"  run {run}: published {times[-1]:.2f} s after the merge")
    return summary("merge -> published (GitLab push webhook, local:)", times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--debounce", type=float, default=2.0, help="registry_event_debounce (default: 2 s)"
    )
    args = parser.parse_args()
    print("local:")
    lines = [bench_local(args.runs, args.debounce)]
    print("cvmfs:")
    lines.append(bench_cvmfs(args.runs, args.debounce))
    print("merge:")
    lines.append(bench_merge(args.runs))
    for line in lines:
        print(line)
    print(f"reference services: about {REFERENCE / 60:.0f} min from merge to availability")
    print(
        f"hourly re-publication alone: {HOURLY / 2 / 60:.0f} min on average, "
        f"{HOURLY / 60:.0f} min at worst"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
