"""Several publishers of one repository through a gateway, at the same time.

Runs against the fake gateway (``tests/fake_cvmfs_server`` in gateway mode)
and, where CernVM-FS's gateway is installed, a real one with each publisher
in a mount namespace of its own (marker ``cvmfs``; ``gateway_fixture``).
Each publisher is a ``wishbot apply --shard I/N`` process of its own, as N
publisher hosts would run it; what is checked is what a client sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cvmfs_fixture import FakeGatewayRepo
from gateway_fixture import ADMIN_KEY, Gateway, gateway_missing, open_gateway
from tarspec import E, build_tar

from bot.core import layout
from bot.publisher.metadata import ORIGIN, read_origin, read_schedule
from bot.sandbox.image_builder import push_image
from bot.sandbox.registry_server import LocalRegistry

ROOT = Path(__file__).resolve().parent.parent


class Under:
    """A gateway under test: its publishers' environments, a client, its leases."""

    def __init__(self, kind: str, name: str, envs: list[dict[str, str]], client: object) -> None:
        self.kind, self.name, self.envs = kind, name, envs
        self._client = client
        self.real: Gateway | None = None
        self.fake: FakeGatewayRepo | None = None

    def client(self) -> Path:
        return self._client()  # type: ignore[operator]

    def leases(self) -> list[str]:
        if self.real is not None:
            # a loaded machine can keep the gateway from answering for seconds
            # (seen in CI: a 5 s read timeout): a missed look is no answer
            try:
                data = requests.get(f"{self.real.url}/leases", timeout=30).json()["data"]
            except (requests.RequestException, ValueError, KeyError):
                return []
            return sorted(data or {})
        assert self.fake is not None
        path = self.fake.gateway / "leases.json"
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return sorted(k for k, v in table.items() if v["expires"] > time.time())


@pytest.fixture(scope="module", params=["fake", pytest.param("real", marks=pytest.mark.cvmfs)])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Under]:
    tmp = tmp_path_factory.mktemp(f"gateway-{request.param}")
    if request.param == "fake":
        fake = FakeGatewayRepo(tmp, f"g{uuid.uuid4().hex[:8]}.example.org", publishers=3)
        under = Under("fake", fake.name, fake.envs, fake.client)
        under.fake = fake
        try:
            yield under
        finally:
            fake.close()
        return
    missing = gateway_missing()
    if missing:
        pytest.skip(f"cvmfs gateway: {missing}")
    real = open_gateway(tmp, 3)
    under = Under("real", real.name, [p.env for p in real.publishers], real.client)
    under.real = real
    try:
        yield under
    finally:
        real.stop()


@pytest.fixture(autouse=True)
def in_use(gateway: Under) -> Iterator[None]:
    """A real gateway's tests publish while no repository is made or removed
    (another worker's ``mkfs`` reloads Apache)."""
    if gateway.real is None:
        yield
        return
    with gateway.real.in_use():
        yield


def _wishlist(tmp: Path, gateway: Under, registry: LocalRegistry, tags: list[str]) -> Path:
    path = tmp / f"wishlist-{uuid.uuid4().hex[:6]}.yaml"
    lines = [
        "version: 1",
        "user: tester",
        f"cvmfs_repo: '{gateway.name}'",
        f"output_format: '{registry.host}/thin/$(image)'",
        "input:",
        *(f"  - '{registry.host}/{tag}'" for tag in tags),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _apply(
    gateway: Under,
    registry: LocalRegistry,
    wishlist: Path,
    publisher: int,
    shard: str | None,
    **extra: str,
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **gateway.envs[publisher],
        "WISHBOT_INSECURE_REGISTRIES": registry.host,
        **extra,
    }
    command = [sys.executable, "-m", "bot", "apply", str(wishlist), "--publisher"]
    command += [f"cvmfs:{gateway.name}", "--format", "json", "--no-thin"]
    if shard:
        command += ["--shard", shard]
    return subprocess.Popen(
        command,
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _together(gateway: Under, runs: list[subprocess.Popen[str]]) -> tuple[list[dict], int]:
    """Wait for ``runs`` while watching the gateway: their reports and the most
    leases held at once."""
    most = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, len(gateway.leases()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        reports.append(json.loads(out))
    done.set()
    watcher.join()
    return reports, most


def _layer(name: str, size: int = 200_000) -> bytes:
    return build_tar([E(f"{name}/", "dir"), E(f"{name}/data", data=os.urandom(size))])


def test_disjoint_shards_publish_at_the_same_time(
    gateway: Under, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    tags = []
    for n in range(4):  # nothing shared: four base layers of their own
        push_image(registry.url, unique_repo, f"i{n}", [_layer(f"base{n}"), _layer(f"top{n}")])
        tags.append(f"{unique_repo}:i{n}")
    wishlist = _wishlist(tmp_path, gateway, registry, tags)
    runs = [_apply(gateway, registry, wishlist, n, f"{n + 1}/2") for n in (0, 1)]
    reports, most = _together(gateway, runs)
    assert most >= 2, "the two publishers never held leases at the same time"
    published = [r["path"] for report in reports for r in report["images"] if r["ok"]]
    assert sorted(published) == sorted(f"{registry.host}/{tag}" for tag in tags)
    assert all(report["shard"] for report in reports)
    client = gateway.client()
    for n, tag in enumerate(tags):
        assert (client / f"{registry.host}/{tag}" / f"top{n}" / "data").stat().st_size == 200_000
    again = [_apply(gateway, registry, wishlist, n, f"{n + 1}/2") for n in (0, 1)]
    reports, _ = _together(gateway, again)
    assert [r["transactions"] for r in reports] == [0, 0]


def test_a_publisher_alone_publishes_each_image_in_one_transaction(
    gateway: Under, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """Without --shard an image goes as through a release manager: its layers
    ingested, then one transaction on the whole repository (not five leases)."""
    tags = []
    for n in range(2):
        push_image(registry.url, unique_repo, f"s{n}", [_layer(f"sb{n}"), _layer(f"st{n}")])
        tags.append(f"{unique_repo}:s{n}")
    # the first (it also schedules the other tests' paths for removal), then both
    first = _wishlist(tmp_path, gateway, registry, tags[:1])
    _together(gateway, [_apply(gateway, registry, first, 0, None)])
    both = _wishlist(tmp_path, gateway, registry, tags)
    (report,), _ = _together(gateway, [_apply(gateway, registry, both, 0, None)])
    assert [r["path"] for r in report["images"]] == [f"{registry.host}/{tags[1]}"]
    assert report["transactions"] == 1
    client = gateway.client()
    for n, tag in enumerate(tags):
        assert (client / f"{registry.host}/{tag}" / f"st{n}" / "data").stat().st_size == 200_000
    (again,), _ = _together(gateway, [_apply(gateway, registry, both, 0, None)])
    assert again["transactions"] == 0


def test_a_run_alone_and_a_run_on_leases_at_once_both_converge(
    gateway: Under, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    """Either mode is safe beside the other: two unsharded runs of one wishlist at
    once, one on the whole repository, one on leases per path, wait for each
    other where they meet and leave every image and backlink published."""
    base = _layer("mixed-base")
    tags, images = [], []
    for n in range(2):
        images.append(push_image(registry.url, unique_repo, f"m{n}", [base, _layer(f"mt{n}")]))
        tags.append(f"{unique_repo}:m{n}")
    wishlist = _wishlist(tmp_path, gateway, registry, tags)
    runs = [
        _apply(gateway, registry, wishlist, 0, None),
        _apply(gateway, registry, wishlist, 1, None, WISHBOT_GATEWAY_LEASES="paths"),
    ]
    reports, _ = _together(gateway, runs)
    assert all(r["ok"] for report in reports for r in report["images"])
    client = gateway.client()
    for n, tag in enumerate(tags):
        assert (client / f"{registry.host}/{tag}" / f"mt{n}" / "data").is_file()
    users = read_origin(client / layout.layer_metadata_dir(images[0].layer_digests[0]) / ORIGIN)
    assert users == {image.config_digest for image in images}
    again = [_apply(gateway, registry, wishlist, n, None) for n in (0, 1)]
    reports, _ = _together(gateway, again)
    assert [r["transactions"] for r in reports] == [0, 0]


def test_two_publishers_share_a_layer_and_the_schedule(
    gateway: Under, registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    tags = [f"{unique_repo}:p", f"{unique_repo}:q"]
    base = _layer("shared")
    first = [push_image(registry.url, unique_repo, t[-1], [base, _layer(t[-1])]) for t in tags]
    wishlist = _wishlist(tmp_path, gateway, registry, tags)
    # two images on one base weigh more than a shard's fair share: one each
    _together(gateway, [_apply(gateway, registry, wishlist, n, f"{n + 1}/2") for n in (0, 1)])
    client = gateway.client()
    shared = first[0].layer_digests[0]
    users = read_origin(client / layout.layer_metadata_dir(shared) / ORIGIN)
    assert users == {image.config_digest for image in first}

    # both tags move at once: both old images go to the one schedule file
    base = _layer("shared-again")
    for tag in tags:
        push_image(registry.url, unique_repo, tag[-1], [base, _layer(tag[-1] + "2")])
    _together(gateway, [_apply(gateway, registry, wishlist, n, f"{n + 1}/2") for n in (0, 1)])
    client = gateway.client()
    schedule = read_schedule(client / layout.REMOVE_SCHEDULE)
    scheduled = {entry.removal.id for entry in schedule if entry.removal.kind == "image"}
    assert {image.config_digest for image in first} <= scheduled
    for tag in tags:
        assert (client / f"{registry.host}/{tag}" / f"{tag[-1]}2" / "data").is_file()


def test_a_killed_publisher_leaves_nothing_visible_and_the_next_run_converges(
    gateway: Under,
    registry: LocalRegistry,
    unique_repo: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as one of several hosts would (leases on paths): what it leaves is one lease
    monkeypatch.setenv("WISHBOT_GATEWAY_LEASES", "paths")
    push_image(registry.url, unique_repo, "k", [_layer("kbase"), _layer("ktop")])
    wishlist = _wishlist(tmp_path, gateway, registry, [f"{unique_repo}:k"])
    path = f"{registry.host}/{unique_repo}:k"
    # killed while it builds the flat image, inside its transaction, holding the lease
    killed = _apply(gateway, registry, wishlist, 0, None, WISHBOT_TEST_CRASH_AT="flat-layer")
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    assert not os.path.lexists(gateway.client() / path)
    held = [lease for lease in gateway.leases() if ".flat/" in lease]
    assert held, "the dead publisher's lease is gone already"

    # another publisher waits for the lease (bounded), then says what to do
    blocked = _apply(gateway, registry, wishlist, 1, None, WISHBOT_GATEWAY_WAIT="2")
    out, _err = blocked.communicate(timeout=300)
    assert blocked.returncode == 1
    assert "stayed busy" in out and "wishbot lease drop" in out
    assert not os.path.lexists(gateway.client() / path)

    if gateway.real is not None:  # the operator drops it through the gateway's API
        drop = subprocess.run(
            [
                *(sys.executable, "-m", "bot", "lease", "drop", held[0].split("/", 1)[1]),
                *("--publisher", f"cvmfs:{gateway.name}", "--yes"),
            ],
            env={
                **os.environ,
                **gateway.envs[1],
                "WISHBOT_GATEWAY_URL": gateway.real.url,
                "WISHBOT_GATEWAY_ADMIN_KEY": f"{ADMIN_KEY}:{gateway.real.admin_secret}",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert drop.returncode == 0, drop.stderr
        assert not [lease for lease in gateway.leases() if ".flat/" in lease]
        report, _ = _together(gateway, [_apply(gateway, registry, wishlist, 1, None)])
        assert report[0]["ok"]
    # the dead publisher's host runs again: it aborts what it left open and converges
    report, _ = _together(gateway, [_apply(gateway, registry, wishlist, 0, None)])
    assert report[0]["ok"]
    assert (gateway.client() / path / "ktop" / "data").is_file()
    assert not gateway.leases()
