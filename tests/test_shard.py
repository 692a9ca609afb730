"""Splitting a plan across N publisher hosts (bot.core.shard): parsing I/N, the
assignment's properties, and that it survives the other hosts' progress."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from apply_util import write_wishlist
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_samples import GZIP, NOW, REPO, digest, published, resolution, resolved, state, wish

from bot.commands.options import parse_shard
from bot.core.layout import image_path
from bot.core.model import (
    DEFAULT_PLATFORM,
    CurrentState,
    Layer,
    Platform,
    PublishedImage,
    Resolution,
    ResolvedImage,
    ScheduledRemoval,
    Wish,
)
from bot.core.plan import ImageChange, Plan, make_plan
from bot.core.schemas import schema_errors
from bot.core.shard import MAX_SHARDS, Shard, assignment, select, shards_text, units
from bot.errors import UsageError
from bot.sandbox.image_builder import push_image
from bot.sandbox.layers import build_layer, file, with_parents
from bot.sandbox.registry_server import LocalRegistry

ARM = Platform("linux", "arm64", "v8")

# --- parsing I/N ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "index", "count"),
    [("1/1", 1, 1), ("2/3", 2, 3), (" 3 / 3 ", 3, 3), ("7/1024", 7, 1024)],
)
def test_parse_a_shard(text: str, index: int, count: int) -> None:
    shard = Shard.parse(text)
    assert (shard.index, shard.count) == (index, count)
    assert str(shard) == f"{index}/{count}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0/2", "shard 0/2 does not exist"),
        ("3/2", "shard 3/2 does not exist"),
        ("1/0", "shard count 0 is out of range"),
        ("1/1025", "shard count 1025 is out of range"),
        ("a/b", "is not I/N"),
        ("2", "is not I/N"),
        ("", "is not I/N"),
        ("-1/2", "is not I/N"),
        ("1/2/3", "is not I/N"),
        ("½/2", "is not I/N"),
        ("٢/٣", "is not I/N"),
    ],
)
def test_a_wrong_shard_is_a_usage_error_that_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        Shard.parse(text)
    assert caught.value.exit_code == 2
    assert says in str(caught.value) and f"--shard '{text}'" in str(caught.value)
    assert caught.value.hint  # what to write instead


def test_shard_auto_reads_gitlabs_parallel_variables() -> None:
    assert parse_shard(None) is None
    assert parse_shard("auto", {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}) == Shard(2, 3)
    # a job without parallel: GitLab sets CI_NODE_TOTAL=1 and no index: all of it
    assert parse_shard("auto", {"CI_NODE_TOTAL": "1"}) == Shard(1, 1)
    with pytest.raises(UsageError, match="CI_NODE_INDEX and CI_NODE_TOTAL are not set"):
        parse_shard("auto", {})
    with pytest.raises(UsageError, match=r"CI_NODE_INDEX/CI_NODE_TOTAL.*'4/3'.*does not exist"):
        parse_shard("auto", {"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "3"})


# --- small random worlds ---------------------------------------------------------------


def image(
    w: Wish, name: str, layers: list[str], sizes: dict[str, int], **kw: object
) -> ResolvedImage:
    base = resolved(w, None, name, [], **kw)  # type: ignore[arg-type]
    return replace(base, layers=tuple(Layer(digest(f"layer:{x}"), sizes[x], GZIP) for x in layers))


@dataclass(frozen=True)
class World:
    wishes: list[Wish]
    resolutions: list[Resolution]
    current: CurrentState
    sizes: dict[str, int]

    def plan(self, current: CurrentState | None = None) -> Plan:
        return make_plan(
            self.wishes, self.resolutions, current or self.current, NOW, cvmfs_repo=REPO
        )


LAYER_NAMES = [f"l{i}" for i in range(10)]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    sizes = {name: draw(st.integers(min_value=0, max_value=2_000_000_000)) for name in LAYER_NAMES}
    bases = st.sampled_from(LAYER_NAMES[:4])  # few bases: groups form
    tops = st.lists(st.sampled_from(LAYER_NAMES[4:]), max_size=3, unique=True)
    wishes: list[Wish] = []
    resolutions: list[Resolution] = []
    published_now: list[PublishedImage] = []
    for number in range(draw(st.integers(min_value=0, max_value=12))):
        platforms = draw(st.sampled_from([(DEFAULT_PLATFORM,), (DEFAULT_PLATFORM, ARM)]))
        w = wish(f"org/p{number}:1", number + 1, platforms)
        images = [
            image(w, f"p{number}-{p.architecture}", [draw(bases), *draw(tops)], sizes, platform=p)
            for p in platforms
        ]
        wishes.append(w)
        resolutions.append(resolution(w, *images))
        fate = draw(st.sampled_from(("new", "same", "moved")))
        for new in images:
            if fate == "same":
                published_now.append(published(new))
            elif fate == "moved":
                old = image(w, f"p{number}-old", [draw(bases)], sizes, platform=new.platform)
                published_now.append(published(old))
    for number in range(draw(st.integers(min_value=0, max_value=4))):  # removed wishes
        gone = wish(f"org/gone{number}:1", 100 + number)
        published_now.append(published(image(gone, f"gone{number}", [draw(bases)], sizes)))
    current = state(published_now, sizes={digest(f"layer:{x}"): s for x, s in sizes.items()})
    return World(wishes, resolutions, current, sizes)


counts = st.integers(min_value=1, max_value=6)


def strip(change: ImageChange) -> ImageChange:
    """A row without what a shard counts anew (the layers it brings)."""
    return replace(change, new_layers=(), download_bytes=0)


def paths(plan: Plan) -> set[str]:
    return {change.path for change in plan.images}


# --- the assignment's properties --------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(worlds(), counts)
def test_every_change_in_exactly_one_shard_and_the_shards_make_the_plan(
    world: World, count: int
) -> None:
    plan = world.plan()
    placed = assignment(plan, count)
    assert set(placed) == paths(plan)
    assert all(1 <= index <= count for index in placed.values())
    shares = [select(plan, Shard(index, count)) for index in range(1, count + 1)]
    assert sum(len(share.images) for share in shares) == len(plan.images)
    for index, share in enumerate(shares, start=1):
        # its rows are the plan's rows of its paths, every platform, in plan order
        assert [strip(c) for c in share.images] == [
            strip(c) for c in plan.images if placed[c.path] == index
        ]
    for share in shares:
        brought = [d for c in share.images for d in c.new_layers]
        assert len(brought) == len(set(brought))
        assert set(brought) == {x.digest for x in share.layers if x.action == "ingest"}
        assert sum(c.download_bytes for c in share.images) == share.download_bytes


@settings(max_examples=150, deadline=None)
@given(worlds(), counts)
def test_groups_under_the_fair_share_stay_together(world: World, count: int) -> None:
    plan = world.plan()
    placed = assignment(plan, count)
    sizes = {layer.digest: layer.size for c in plan.images if c.new for layer in c.new.layers}
    total = max(1, sum(sizes.values()))
    groups: dict[str, set[str]] = {}
    for change in plan.images:  # the base layer of a path's first wished image
        if change.new is not None and change.path not in {p for g in groups.values() for p in g}:
            groups.setdefault(change.new.layers[0].digest, set()).add(change.path)
    for group in groups.values():
        layers = {
            x.digest: x.size for c in plan.images if c.path in group and c.new for x in c.new.layers
        }
        if max(1, sum(layers.values())) <= total / count:
            assert len({placed[path] for path in group}) == 1, group


@settings(max_examples=150, deadline=None)
@given(worlds(), counts)
def test_loads_are_balanced_within_the_heaviest_unit(world: World, count: int) -> None:
    plan = world.plan()
    dealt, _loose = units(plan, count)
    placed = assignment(plan, count)
    loads = [0] * count
    for unit in dealt:
        assert len({placed[path] for path in unit.paths}) == 1
        loads[placed[unit.key] - 1] += unit.weight
    if dealt:
        assert max(loads) - min(loads) <= max(unit.weight for unit in dealt)


@settings(max_examples=100, deadline=None)
@given(worlds(), counts, st.randoms(use_true_random=False))
def test_the_assignment_ignores_the_order_of_the_plans_rows(
    world: World, count: int, rng: random.Random
) -> None:
    plan = world.plan()
    rows = list(plan.images)
    rng.shuffle(rows)
    assert assignment(replace(plan, images=tuple(rows)), count) == assignment(plan, count)


def after(world: World, plan: Plan, done: set[str]) -> CurrentState:
    """The publisher once the paths ``done`` were executed (by another host)."""
    gone = {id(c.old) for c in plan.images if c.path in done and c.action == "update"}
    images = [i for i in world.current.images if id(i) not in gone]
    images += [
        published(c.new)
        for c in plan.images
        if c.path in done and c.action in ("add", "update") and c.new is not None
    ]
    schedule = [
        ScheduledRemoval("image", c.old.image_id, NOW, c.old.path)
        for c in plan.images
        if c.path in done and c.action == "remove" and c.old is not None
    ]
    return replace(
        state(images, sizes={digest(f"layer:{x}"): s for x, s in world.sizes.items()}),
        schedule=tuple(schedule),
    )


@settings(max_examples=150, deadline=None)
@given(worlds(), st.integers(min_value=2, max_value=5), st.data())
def test_a_host_that_plans_after_another_finished_makes_the_same_split(
    world: World, count: int, data: st.DataObject
) -> None:
    """Hosts plan at different moments: one may already have published its share.
    The others must still find their own paths where the first plan put them, or a
    path would fall between two shards."""
    before = world.plan()
    placed = assignment(before, count)
    first = data.draw(st.integers(min_value=1, max_value=count))
    done = {path for path, index in placed.items() if index == first}
    later = world.plan(after(world, before, done))
    assert not select(later, Shard(first, count)).has_changes  # its share is done
    for change in later.images:
        if change.action in ("add", "update", "remove"):
            assert change.path not in done
            assert assignment(later, count)[change.path] == placed[change.path]


def test_longest_first_to_the_least_loaded_shard_ties_to_the_lowest() -> None:
    sizes = {"a": 500, "b": 400, "c": 300, "d": 300}
    wishes = [wish(f"org/{name}:1", n) for n, name in enumerate(sizes, start=1)]
    resolutions = [
        resolution(w, image(w, name, [name], sizes)) for w, name in zip(wishes, sizes, strict=True)
    ]
    plan = make_plan(wishes, resolutions, CurrentState(REPO), NOW, cvmfs_repo=REPO)
    by_name = {
        name: assignment(plan, 2)[image_path(w.reference)]
        for w, name in zip(wishes, sizes, strict=True)
    }
    # a (500) -> 1; b (400) -> 2; c (300) -> 2 (400 < 500); d (300) -> 1 (500 < 700)
    assert by_name == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert set(assignment(plan, 1).values()) == {1}
    assert "  1/2: 2 paths" in shards_text(plan, 2) and "org/a:1" in shards_text(plan, 2)


def test_a_heavy_group_is_split_a_light_one_is_kept() -> None:
    sizes = {"base": 10, "x": 1000, "y": 1000, "z": 10, "other": 10, "small": 10}
    shared = [wish(f"org/s{n}:1", n) for n in range(3)]
    light = [wish(f"org/t{n}:1", 10 + n) for n in range(2)]
    resolutions = [
        resolution(shared[0], image(shared[0], "s0", ["base", "x"], sizes)),
        resolution(shared[1], image(shared[1], "s1", ["base", "y"], sizes)),
        resolution(shared[2], image(shared[2], "s2", ["base", "z"], sizes)),
        resolution(light[0], image(light[0], "t0", ["other"], sizes)),
        resolution(light[1], image(light[1], "t1", ["other", "small"], sizes)),
    ]
    plan = make_plan([*shared, *light], resolutions, CurrentState(REPO), NOW, cvmfs_repo=REPO)
    placed = assignment(plan, 2)
    # the "base" group weighs 2030 > 2050 / 2: split; the "other" group (20) stays together
    assert placed["registry.hub.docker.com/org/s0:1"] != placed["registry.hub.docker.com/org/s1:1"]
    assert placed["registry.hub.docker.com/org/t0:1"] == placed["registry.hub.docker.com/org/t1:1"]


def test_a_multi_platform_wish_goes_whole_to_one_shard() -> None:
    sizes = {"amd": 100, "arm": 100, **{f"o{n}": 90 for n in range(6)}}
    multi = wish("org/multi:1", 1, (DEFAULT_PLATFORM, ARM))
    others = [wish(f"org/o{n}:1", 2 + n) for n in range(6)]
    resolutions = [
        resolution(
            multi,
            image(multi, "m-amd", ["amd"], sizes, platform=DEFAULT_PLATFORM),
            image(multi, "m-arm", ["arm"], sizes, platform=ARM),
        ),
        *(resolution(w, image(w, f"o{n}", [f"o{n}"], sizes)) for n, w in enumerate(others)),
    ]
    plan = make_plan([multi, *others], resolutions, CurrentState(REPO), NOW, cvmfs_repo=REPO)
    for count in range(1, 5):
        for index in range(1, count + 1):
            share = select(plan, Shard(index, count))
            rows = [c for c in share.images if c.path == "registry.hub.docker.com/org/multi:1"]
            assert len(rows) in (0, 2)  # both platforms (the thin index goes with the last)


SCRIPT = """
import json, sys
sys.path.insert(0, "tests")
from plan_samples import NOW, REPO, realistic_plan_inputs, resolution, resolved, wish
from bot.core.plan import make_plan
from bot.core.shard import assignment
wishes, resolutions, current, problems = realistic_plan_inputs()
for n in range(40):
    w = wish(f"org/extra{n}:1", 100 + n)
    wishes.append(w)
    layers = [f"base{n % 5}", *(f"top{n}-{k}" for k in range(n % 3))]
    resolutions.append(resolution(w, resolved(w, None, f"extra{n}", layers, size=1000 + n)))
plan = make_plan(wishes, resolutions, current, NOW, cvmfs_repo=REPO, problems=problems)
print(json.dumps({n: assignment(plan, n) for n in (2, 3, 7)}))
"""


def test_the_same_plan_gives_the_same_split_whatever_the_hash_seed() -> None:
    root = Path(__file__).resolve().parents[1]
    outputs = set()
    for seed in ("0", "1", "4242", "random"):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    split = json.loads(outputs.pop())
    assert len(set(split["3"].values())) == 3  # all three shards get work


def test_the_range_is_checked() -> None:
    plan = make_plan([], [], CurrentState(REPO), NOW, cvmfs_repo=REPO)
    assert assignment(plan, MAX_SHARDS) == {}
    with pytest.raises(UsageError):
        assignment(plan, 0)


# --- wishbot apply --shard, on a local: publisher and the loopback registry ---------------


def wishbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**os.environ, "WISHBOT_BACKOFF": "0.01", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_two_shards_one_after_the_other_publish_everything_once(
    registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    env = {"WISHBOT_INSECURE_REGISTRIES": registry.host}
    base = build_layer(with_parents([file("etc/os", "base\n")]))
    for name in ("a", "b", "c", "d", "e"):
        top = build_layer(with_parents([file(f"opt/{name}", name * 4000 + "\n")]))
        layers = [base, top] if name in ("a", "b") else [top]  # a and b share their base
        push_image(registry.url, unique_repo, name, layers)
    wishlist = tmp_path / "wishlist.yaml"
    write_wishlist(wishlist, registry, *(f"{unique_repo}:{name}" for name in "abcde"))
    tree = tmp_path / "tree"
    target = f"local:{tree}"

    # what the operator sees before: which shard gets each path
    shown = wishbot("plan", str(wishlist), "--shards", "2", "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert schema_errors(data, "plan.schema.json") == []
    split: dict[str, int] = data["shards"]["assignment"]
    assert data["shards"]["count"] == 2 and len(split) == 5
    assert set(split.values()) == {1, 2}
    a, b = (f"{registry.host}/{unique_repo}:{name}" for name in "ab")
    assert split[a] == split[b]  # they share a layer: one host converts it
    text = wishbot("plan", str(wishlist), "--shards", "2", env=env)
    assert "Shards (wishbot apply --shard I/2):" in text.stdout and f"    {a}" in text.stdout

    # shard 2 first, then shard 1 (in GitLab's parallel: 2, from CI_NODE_INDEX/CI_NODE_TOTAL)
    second = wishbot(
        "apply", str(wishlist), "--publisher", target, "--shard", "2/2", "--format", "json", env=env
    )
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["shard"] == "2/2" and report["ok"]
    assert {image["path"] for image in report["images"]} == {p for p, i in split.items() if i == 2}
    assert "shard 2/2: " in second.stderr  # the progress says which share it runs
    auto = {**env, "CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}
    first = wishbot("apply", str(wishlist), "--publisher", target, "--shard", "auto", env=auto)
    assert first.returncode == 0, first.stderr
    mine = {p for p, i in split.items() if i == 1}
    assert {line.split()[2] for line in first.stdout.splitlines()[:-1]} == mine
    assert first.stdout.splitlines()[-1].startswith(f"apply: shard 1/2: {len(mine)} image(s)")
    for name in "abcde":
        assert (tree / f"{registry.host}/{unique_repo}:{name}/opt/{name}").is_file()

    # together they published everything: nothing left, for either shard or the whole
    for shard in ("1/2", "2/2"):
        again = wishbot("apply", str(wishlist), "--publisher", target, "--shard", shard, env=env)
        assert again.returncode == 0, again.stderr
        assert again.stdout == (
            f"apply: shard {shard}: nothing to do, the publisher already serves this shard's paths\n"
        )
    whole = wishbot("apply", str(wishlist), "--publisher", target, env=env)
    assert "nothing to do, the publisher already serves the wishlist" in whole.stdout

    # a removed wish is retired by exactly one shard
    write_wishlist(wishlist, registry, *(f"{unique_repo}:{name}" for name in "abcd"))
    results = [
        wishbot(
            "apply",
            str(wishlist),
            "--publisher",
            target,
            "--shard",
            shard,
            "--format",
            "json",
            env=env,
        )
        for shard in ("1/2", "2/2")
    ]
    assert all(done.returncode == 0 for done in results)
    rows = [row for done in results for row in json.loads(done.stdout)["images"]]
    assert [(row["action"], row["path"]) for row in rows] == [
        ("remove", f"{registry.host}/{unique_repo}:e")
    ]


def test_apply_refuses_a_wrong_shard_before_doing_anything(tmp_path: Path) -> None:
    for shard, says in (("0/2", "does not exist"), ("a/b", "is not I/N"), ("2", "is not I/N")):
        done = wishbot(
            "apply", "nope.yaml", "--publisher", f"local:{tmp_path / 't'}", "--shard", shard, env={}
        )
        assert done.returncode == 2, done.stderr
        assert f"wishbot: error: --shard '{shard}'" in done.stderr and says in done.stderr
        assert "Traceback" not in done.stderr
    unset = {"CI_NODE_TOTAL": "", "CI_NODE_INDEX": ""}
    done = wishbot(
        "apply", "nope.yaml", "--publisher", f"local:{tmp_path / 't'}", "--shard", "auto", env=unset
    )
    assert done.returncode == 2 and "CI_NODE_INDEX and CI_NODE_TOTAL" in done.stderr
    assert not (tmp_path / "t").exists()
    done = wishbot("plan", "nope.yaml", "--shards", "0", env={})
    assert done.returncode == 2 and "shard count 0 is out of range" in done.stderr
    done = wishbot("plan", "nope.yaml", "--base", "old.yaml", "--shards", "2", env={})
    assert done.returncode == 2 and "leave out --base" in done.stderr
    done = wishbot("plan", "nope.yaml", "--format", "markdown", "--shards", "2", env={})
    assert done.returncode == 2 and "--format text or json" in done.stderr
