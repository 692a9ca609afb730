"""Benchmark: publishing through a CernVM-FS gateway with 1, 2 and 3 publishers.

Needs root and CernVM-FS with its gateway installed (CERN's packages; see
``tests/gateway_fixture.py`` for what is started); without them it says so
in one line and exits 0.

Twelve images that share nothing (each a synthetic tree of ``--files`` files
cut into a base and a small top layer, as ``bench/convert.py`` makes them)
are pushed to a loopback registry and published with ``wishbot apply``:

- **peer**: one release manager without a gateway (``cvmfs:`` on a local
  stratum 0): what a single publisher host does today;
- **gateway, N = 1, 2, 3 publishers**: N ``wishbot apply --shard I/N``
  processes at once, each a publisher host in a mount namespace of its own,
  into a fresh repository behind one gateway.

Printed per run: wall time until every process is done and a client mount
sees all twelve images, the speed-up over one gateway publisher and over the
peer, and the publishes per image (revisions of the repository / images).
From the gateway's own log (each commit's time in its single receiver) and
the one-publisher run, a model of a 1,000-image conversion on 1, 4 and 16
publisher hosts: ``max(images × per-image time / hosts, images × publishes
per image × commit time)`` (the hosts work in parallel; the receiver applies
one commit at a time).

Run: ``.venv/bin/python bench/gateway.py [--files N] [--images 12]``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from convert import make_layers, synthetic_tree  # noqa: E402
from cvmfs_fixture import RealRepo  # noqa: E402
from gateway_fixture import Gateway, gateway_missing, open_gateway  # noqa: E402

from bot.sandbox.image_builder import push_image  # noqa: E402
from bot.sandbox.registry_server import LocalRegistry  # noqa: E402


def build_images(registry: LocalRegistry, work: Path, count: int, files: int) -> list[str]:
    """``count`` images that share no layer: a tree each, cut into base + top."""
    tags = []
    for n in range(count):
        tree = work / f"tree{n}"
        tree.mkdir()
        synthetic_tree(tree, files, seed=100 + n)
        (work / f"cut{n}").mkdir()
        layers = make_layers(tree, work / f"cut{n}")
        push_image(registry.url, "bench/gw", f"i{n}", [layers[0], layers[2]])
        tags.append(f"{registry.host}/bench/gw:i{n}")
    return tags


def wishlist(path: Path, repo: str, host: str, tags: list[str]) -> Path:
    lines = [
        "version: 1",
        "user: bench",
        f"cvmfs_repo: '{repo}'",
        f"output_format: '{host}/thin/$(image)'",
        "input:",
        *(f"  - '{tag}'" for tag in tags),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


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
        plan = wishlist(work / "peer.yaml", repo.name, registry.host, tags)
        start = time.perf_counter()
        finish([run_apply(env, plan, repo.name, None)])
        sees_all(repo.client, tags)
        return time.perf_counter() - start, repo.revision() - before
    finally:
        repo.close()


def through_gateway(
    work: Path, registry: LocalRegistry, tags: list[str], count: int
) -> tuple[float, int, list[float]]:
    """``count`` publishers at once: seconds, revisions, the receiver's commit times."""
    gateway = open_gateway(work / f"gw{count}", count)
    try:
        before = gateway.revision()
        plan = wishlist(work / f"gw{count}.yaml", gateway.name, registry.host, tags)
        envs = [{**p.env, "WISHBOT_INSECURE_REGISTRIES": registry.host} for p in gateway.publishers]
        start = time.perf_counter()
        finish(
            [run_apply(env, plan, gateway.name, f"{n + 1}/{count}") for n, env in enumerate(envs)]
        )
        sees_all(gateway.client, tags)
        return time.perf_counter() - start, gateway.revision() - before, commit_times(gateway)
    finally:
        gateway.stop()


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


def model(per_image: float, publishes: float, commit: float, images: int = 1000) -> list[str]:
    lines = []
    for hosts in (1, 4, 16):
        parallel = images * per_image / hosts
        serial = images * publishes * commit
        bound = "hosts" if parallel >= serial else "the gateway's receiver"
        lines.append(
            f"  {images} images on {hosts:>2} publisher host(s): "
            f"{max(parallel, serial) / 60:6.1f} min (bound by {bound})"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600, help="files per image (default 600)")
    parser.add_argument("--images", type=int, default=12, help="images (default 12)")
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
        results = {}
        for count in (1, 2, 3):
            seconds, revisions, commits = through_gateway(work, registry, tags, count)
            results[count] = (seconds, revisions, commits)
            base = results[1][0]
            print(
                f"gateway, {count} publisher(s): {seconds:6.1f} s, "
                f"{base / seconds:4.2f}x one gateway publisher, {peer_time / seconds:4.2f}x the peer, "
                f"{revisions / len(tags):.1f} publishes per image"
            )
        seconds, revisions, commits = results[1]
        commit = sorted(commits)[len(commits) // 2] if commits else 0.0
        print(
            f"model (per image {seconds / len(tags):.2f} s on one host, "
            f"{revisions / len(tags):.1f} publishes of median {commit * 1000:.0f} ms in the receiver):"
        )
        print("\n".join(model(seconds / len(tags), revisions / len(tags), commit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
