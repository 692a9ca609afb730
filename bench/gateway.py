"""Benchmark: publishing through a CernVM-FS gateway with 1, 2 and 3 publishers.

Needs root and CernVM-FS with its gateway installed (CERN's packages; see
``tests/gateway_fixture.py`` for what is started); without them it says so
in one line and exits 0.

Twelve images that share no layer (each a synthetic tree of ``--files``
files as ``bench/convert.py`` makes them, as the base layer, and a small top
layer of its own) are pushed to a loopback registry and published with
``wishbot apply``:

- **peer**: one release manager without a gateway (``cvmfs:`` on a local
  stratum 0): what a single publisher host does today;
- **cvmfs_server alone, N = 1, 2, 3 publishers**: no wishbot; each publisher
  publishes one small file per transaction, 16 times, on a directory of its
  own: the speed-up this machine and CernVM-FS allow at all;
- **gateway, N = 1, 2, 3 publishers**: N ``wishbot apply --shard I/N``
  processes at once, each a publisher host in a mount namespace of its own,
  into a fresh repository behind one gateway (``--repeat`` runs of each, the
  counts taking turns; the fastest counts).

Printed per run: wall time until every process is done and a client mount
sees all twelve images, the speed-up over one gateway publisher and over the
peer, the publishes per image (revisions of the repository / images), and
wishbot's speed-up as a share of ``cvmfs_server``'s own.
From the gateway's own log (each commit's time in its single receiver) and
the one-publisher run, a model of a 1,000-image conversion on 1, 4 and 16
publisher hosts: ``max(images × per-image time / hosts, images × publishes
per image × commit time)`` (the hosts work in parallel; the receiver applies
one commit at a time).

Run: ``.venv/bin/python bench/gateway.py [--files N] [--images 12] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: small publishes per publisher in the ceiling run
CEILING_ROUNDS = 16
#: the publisher counts measured
COUNTS = (1, 2, 3)
#: how a gateway run publishes (``WISHBOT_GATEWAY_LEASES``) and with how many publishers
Setting = tuple[str, int]
SETTINGS: tuple[Setting, ...] = (("auto", 1), *(("paths", count) for count in COUNTS))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from convert import synthetic_tree, tar_of, tar_of_text, write_bench_wishlist  # noqa: E402
from cvmfs_fixture import RealRepo  # noqa: E402
from gateway_fixture import Gateway, Publisher, gateway_missing, open_gateway  # noqa: E402

from bot.sandbox.image_builder import push_image  # noqa: E402
from bot.sandbox.registry_server import LocalRegistry  # noqa: E402


def build_images(registry: LocalRegistry, work: Path, count: int, files: int) -> list[str]:
    """``count`` images that share no layer: a tree each (the base layer) and a
    top layer of its own."""
    tags = []
    for n in range(count):
        tree = work / f"tree{n}"
        tree.mkdir()
        synthetic_tree(tree, files, seed=100 + n)
        base = tar_of(tree)
        # a small top layer of the image's own: no two images share a layer,
        # so no two publishers wait for one origin.json
        top = tar_of_text("app/hello.txt", f"hi from image {n}\n")
        push_image(registry.url, "bench/gw", f"i{n}", [base, top])
        tags.append(f"{registry.host}/bench/gw:i{n}")
    return tags


def run_apply(env: dict[str, str], plan: Path, repo: str, shard: str | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "bot", "apply", str(plan), "--publisher", f"cvmfs:{repo}"]
    command += ["--no-thin", "--format", "json"] + (["--shard", shard] if shard else [])
    return subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(runs: list[subprocess.Popen]) -> None:
    for proc in runs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0 or not json.loads(out)["ok"]:
            raise SystemExit(f"apply failed: {err[-2000:]}\n{out[-2000:]}")


def sees_all(client_of: Callable[[], Path], tags: list[str]) -> None:
    client = client_of()
    missing = [t for t in tags if not (client / t / "app" / "hello.txt").is_file()]
    for _ in range(10):  # a client may need a moment for the newest revision
        if not missing:
            return
        time.sleep(1)
        client = client_of()
        missing = [t for t in missing if not (client / t / "app" / "hello.txt").is_file()]
    if missing:
        parent = client / os.path.dirname(missing[0])
        listing = sorted(os.listdir(parent)) if parent.is_dir() else "no directory"
        raise SystemExit(f"the client does not see {missing} (in {parent}: {listing})")


def peer(work: Path, registry: LocalRegistry, tags: list[str]) -> tuple[float, int]:
    """One release manager, no gateway: seconds and revisions."""
    repo = RealRepo(work / "peer")
    (work / "peer").mkdir()
    try:
        repo.create()
        before = repo.revision()
        env = {**repo.env, "WISHBOT_INSECURE_REGISTRIES": registry.host}
        Path(env["WISHBOT_LOCK_DIR"]).mkdir(exist_ok=True)
        plan = write_bench_wishlist(work / "peer.yaml", registry.host, repo.name, tags)
        start = time.perf_counter()
        finish([run_apply(env, plan, repo.name, None)])
        sees_all(repo.client, tags)
        return time.perf_counter() - start, repo.revision() - before
    finally:
        repo.close()


def through_gateway(
    work: Path, registry: LocalRegistry, tags: list[str], setting: Setting
) -> tuple[float, int, list[float]]:
    """A run of ``setting`` (leases, publishers at once): seconds, revisions,
    the receiver's commit times."""
    leases, count = setting
    gateway = open_gateway(work / f"gw-{leases}{count}", count)
    try:
        before = gateway.revision()
        plan = write_bench_wishlist(
            work / f"gw-{leases}{count}.yaml", registry.host, gateway.name, tags
        )
        envs = [
            {
                **p.env,
                "WISHBOT_INSECURE_REGISTRIES": registry.host,
                "WISHBOT_GATEWAY_LEASES": leases,
            }
            for p in gateway.publishers
        ]
        start = time.perf_counter()
        finish(
            [run_apply(env, plan, gateway.name, f"{n + 1}/{count}") for n, env in enumerate(envs)]
        )
        sees_all(gateway.client, tags)
        return time.perf_counter() - start, gateway.revision() - before, commit_times(gateway)
    finally:
        gateway.stop()


def ceiling(work: Path, count: int, rounds: int = CEILING_ROUNDS) -> float:
    """``cvmfs_server`` alone, no wishbot: ``count`` publishers at once, each
    ``rounds`` times a transaction on a directory of its own, one small file
    written, published. Seconds until all are done (what this machine and
    CernVM-FS allow, whatever the tool above them does)."""
    gateway = open_gateway(work / f"ceiling{count}", count)
    name = gateway.name
    try:
        first = gateway.publishers[0]
        first.server("transaction", name)
        for n in range(count):
            (gateway.root / f"d{n}").mkdir()
        first.server("publish", name)
        for publisher in gateway.publishers[1:]:  # bring each view up to date
            publisher.server("transaction", f"{name}/d{publisher.number - 1}")
            publisher.server("abort", "-f", name)
        start = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda p: _small_publishes(p, name, rounds), gateway.publishers))
        return time.perf_counter() - start
    finally:
        gateway.stop()


def _small_publishes(publisher: Publisher, name: str, rounds: int) -> None:
    mine = Path(publisher.env["WISHBOT_CVMFS_ROOT"]) / name / f"d{publisher.number - 1}"
    for n in range(rounds):
        publisher.server("transaction", f"{name}/d{publisher.number - 1}")
        (mine / f"f{n}").write_text(f"{n}\n")
        # the other publishers' open files under /cvmfs/REPO make it refuse on
        # one machine (not on separate hosts): asked again
        while publisher.server("publish", name, check=False).returncode:
            time.sleep(0.05)


def commit_times(gateway: Gateway) -> list[float]:
    """Seconds each ``commit_lease`` took in the gateway (its log, ``action_dt`` in ms)."""
    times = []
    for line in (gateway.tmp / "gateway" / "gateway.log").read_text().splitlines():
        if '"commit_lease"' in line:
            try:
                times.append(float(json.loads(line)["action_dt"]) / 1000)
            except (ValueError, KeyError):
                continue
    return times


def model(
    per_image: float, publishes: float, commit: float, alone: float, images: int = 1000
) -> list[str]:
    lines = [f"  {images} images on  1 publisher host alone: {images * alone / 60:6.1f} min"]
    for hosts in (1, 4, 16):
        parallel = images * per_image / hosts
        serial = images * publishes * commit
        bound = "hosts" if parallel >= serial else "the gateway's receiver"
        lines.append(
            f"  {images} images on {hosts:>2} publisher host(s), leases on paths: "
            f"{max(parallel, serial) / 60:6.1f} min (bound by {bound})"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600, help="files per image (default 600)")
    parser.add_argument("--images", type=int, default=12, help="images (default 12)")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each gateway setting; the fastest counts"
    )
    args = parser.parse_args()
    missing = gateway_missing()
    if missing:
        print(f"bench/gateway.py: skipped: {missing}")
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="wishbot-gw-bench-") as tmp,
        LocalRegistry() as registry,
    ):
        work = Path(tmp)
        tags = build_images(registry, work, args.images, args.files)
        peer_time, peer_revisions = peer(work, registry, tags)
        print(
            f"peer (one release manager, no gateway): {peer_time:6.1f} s, "
            f"{peer_revisions / len(tags):.1f} publishes per image"
        )
        bare = {count: ceiling(work, count) for count in COUNTS}
        for count, seconds in bare.items():
            print(
                f"cvmfs_server alone, {count} publisher(s): {count * CEILING_ROUNDS / seconds:4.2f} "
                f"small publishes/s, {bare[1] * count / seconds:4.2f}x one publisher"
            )
        results = gateway_runs(work, registry, tags, args.repeat)
        report(results, bare, peer_time, len(tags))
    return 0


def gateway_runs(
    work: Path, registry: LocalRegistry, tags: list[str], repeat: int
) -> dict[Setting, tuple[float, int, list[float]]]:
    """Each setting ``repeat`` times, the settings taking turns (the machine's
    noise spread over all of them); the fastest run of each."""
    best: dict[Setting, tuple[float, int, list[float]]] = {}
    for attempt in range(repeat):
        (work / f"run{attempt}").mkdir()
        for setting in SETTINGS:
            run = through_gateway(work / f"run{attempt}", registry, tags, setting)
            if setting not in best or run[0] < best[setting][0]:
                best[setting] = run
    return best


def report(
    results: dict[Setting, tuple[float, int, list[float]]],
    bare: dict[int, float],
    peer_time: float,
    images: int,
) -> None:
    alone, one = results[("auto", 1)][0], results[("paths", 1)][0]
    for (leases, count), (seconds, revisions, _) in results.items():
        how = "alone, one transaction per image" if leases == "auto" else "leases on paths"
        versus = f"{one / seconds:4.2f}x one such publisher, " if leases == "paths" else ""
        print(
            f"gateway, {count} publisher(s), {how}: {seconds:6.1f} s, {versus}"
            f"{alone / seconds:4.2f}x one alone, {peer_time / seconds:4.2f}x the peer, "
            f"{revisions / images:.1f} publishes per image"
        )
    for count in COUNTS[1:]:
        mine, theirs = one / results[("paths", count)][0], bare[1] * count / bare[count]
        print(
            f"{count} publishers on paths: wishbot {mine:4.2f}x, cvmfs_server alone {theirs:4.2f}x "
            f"({mine / theirs:.0%} of what the machine allows)"
        )
    seconds, revisions, commits = results[("paths", 1)]
    commit = sorted(commits)[len(commits) // 2] if commits else 0.0
    print(
        f"model (leases on paths: per image {seconds / images:.2f} s on one host, "
        f"{revisions / images:.1f} publishes of median {commit * 1000:.0f} ms in the receiver; "
        f"one host alone: {alone / images:.2f} s per image):"
    )
    print("\n".join(model(seconds / images, revisions / images, commit, alone / images)))


if __name__ == "__main__":
    sys.exit(main())
