"""``wishbot validate --check-registry [--base OLD]`` against a real registry on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy, Rule
from registry_util import client_for

from bot.cli import main
from bot.commands.validate import validate_file
from bot.core.model import Wishlist
from bot.registry.check import check_wishlist, wishes_to_check
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry

LAYER = build_layer([file("etc/os-release", "ID=validate-registry\n")])
HEADER = """version: 1
user: bot
cvmfs_repo: unpacked.example.org
output_format: 'x.io/sync/$(image)'
"""


def wishlist(path: Path, inputs: list[str], ignore: list[str] | None = None) -> str:
    """A wishlist file; ``inputs`` are written as YAML list items (line 6 onwards
    without ``ignore``)."""
    lines = [HEADER.rstrip("\n")]
    if ignore:
        lines += ["ignoreErrors:", *(f"  - '{glob}'" for glob in ignore)]
    lines += ["input:", *inputs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def configure(monkeypatch: pytest.MonkeyPatch, *hosts: str) -> None:
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", ",".join(hosts))
    monkeypatch.setenv("WISHBOT_RETRIES", "1")
    monkeypatch.setenv("WISHBOT_BACKOFF", "0.01")
    monkeypatch.setenv("WISHBOT_TIMEOUT", "10")
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent-wishbot-test")


@pytest.fixture
def images(
    registry: LocalRegistry, unique_repo: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    configure(monkeypatch, registry.host)
    push_image(registry.url, unique_repo, "1.0", [LAYER])
    push_image(registry.url, unique_repo, "2.0", [LAYER])
    push_index(registry.url, f"{unique_repo}-multi", "1", {"linux/amd64": [LAYER]})
    return {"name": f"{registry.host}/{unique_repo}", "host": registry.host, "url": registry.url}


def loaded(path: str) -> Wishlist:
    result, problems = validate_file(path)
    assert result is not None, problems
    return result


def test_broken_images_are_errors_at_their_line_and_column(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    path = wishlist(
        tmp_path / "w.yaml",
        [
            f"  - '{name}:1.0'",  # line 6: fine
            f"  - '{name}:9.9'",  # line 7: no such tag
            f"  - '{name}:7.*'",  # line 8: a wildcard that matches nothing
            f"  - image: '{name}-multi:1'",  # line 9: no arm64 variant
            "    platforms: [linux/arm64]",
        ],
    )
    assert main(["validate", path]) == 0  # offline: nothing is wrong with the file itself
    capsys.readouterr()
    assert main(["validate", "--check-registry", path]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith(f"{path}:7:5: error: {name}:9.9: no such image")
    assert lines[1].startswith(f"{path}:8:5: error: {name}:7.*: the wildcard matches none")
    assert "of the repository's 2 tags" in lines[1]
    assert lines[2].startswith(f"{path}:9:12: error: {name}-multi:1: the image has no linux/arm64")
    assert "(it offers linux/amd64)" in lines[2]
    assert not any(":6:" in line for line in lines)
    assert "1 of 1 invalid file, 3 error(s), 0 warning(s)" in err
    assert "4 wish(es) checked in their registries, 1 image(s) found" in err
    assert "right now" not in err


def test_json_output_has_codes_positions_and_images(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    path = wishlist(tmp_path / "w.yaml", [f"  - '{name}:1.0'", f"  - '{name}:nope'"])
    assert main(["validate", "--check-registry", "--format", "json", path]) == 1
    out, err = capsys.readouterr()
    assert err == ""  # the summary line is for text output only
    data = json.loads(out)
    assert data == [
        {
            "path": path,
            "line": 7,
            "column": 5,
            "severity": "error",
            "code": "not-found",
            "message": f"{name}:nope: no such image (the registry has no manifest for it)",
            "hint": "check the repository name and the tag or digest",
            "image": f"{name}:nope",
        }
    ]


def test_a_good_wishlist_passes_and_says_what_was_checked(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    path = wishlist(tmp_path / "w.yaml", [f"  - '{name}:*'", f"  - '{name}-multi:1'"])
    assert main(["validate", "--check-registry", path]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "1 valid file, 0 error(s), 0 warning(s), 2 image(s)" in err
    assert "2 wish(es) checked in their registries, 3 image(s) found" in err


def test_ignore_errors_turns_registry_errors_into_warnings(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    inputs = [f"  - '{name}:1.0'", f"  - '{name}:9.9'", f"  - '{name}-gone:1'"]
    path = wishlist(tmp_path / "w.yaml", inputs, ignore=[f"{name}:9.*"])
    assert main(["validate", "--check-registry", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}:9:5: warning: {name}:9.9: no such image")
    assert lines[0].endswith(f"ignored because it matches ignoreErrors '{name}:9.*'")
    assert lines[1].startswith(f"{path}:10:5: error: {name}-gone:1: no such image")
    assert len(lines) == 2
    # ignoring the other one as well makes the file pass
    path = wishlist(tmp_path / "w.yaml", inputs, ignore=[f"{name}:9.*", f"{name}-gone"])
    assert main(["validate", "--check-registry", path]) == 0
    out, err = capsys.readouterr()
    assert [line.split(": ")[1] for line in out.splitlines()] == ["warning", "warning"]
    assert "1 valid file, 0 error(s), 2 warning(s)" in err


def test_base_checks_only_new_and_changed_wishes(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    old = wishlist(tmp_path / "old.yaml", [f"  - '{name}:1.0'", f"  - '{name}:9.9'"])
    new = wishlist(
        tmp_path / "new.yaml",
        [f"  - '{name}:1.0'", f"  - '{name}:9.9'", f"  - '{name}:2.0'"],
    )
    # someone else's broken image (9.9) does not fail this change
    assert main(["validate", "--check-registry", "--base", old, new]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "1 wish(es) checked in their registries, 1 image(s) found" in err
    # the same file without a base fails on it
    assert main(["validate", "--check-registry", new]) == 1
    assert ":7:5: error:" in capsys.readouterr().out

    # the API: only the changed wish costs requests
    base, head = loaded(old), loaded(new)
    assert [w.text for w in wishes_to_check(head, base)] == [f"{name}:2.0"]
    with client_for(images["host"]) as one:
        result = check_wishlist(one, head, base)
        changed_only = one.requests_made
    with client_for(images["host"]) as every:
        full = check_wishlist(every, head)
        all_wishes = every.requests_made
    assert [w.text for w in result.checked] == [f"{name}:2.0"]
    assert result.errors == () and result.images == 1
    assert len(full.checked) == 3 and len(full.errors) == 1
    assert changed_only == 2  # the manifest and the config of 2.0, nothing else
    assert all_wishes >= 4  # and 1.0 and 9.9 as well (configs are cached by digest)


def test_a_changed_setting_checks_every_wish(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    old = wishlist(tmp_path / "old.yaml", [f"  - '{name}:1.0'", f"  - '{name}:9.9'"])
    new_text = Path(old).read_text().replace("x.io/sync/", "x.io/other/")
    new = tmp_path / "new.yaml"
    new.write_text(new_text)
    assert main(["validate", "--check-registry", "--base", old, str(new)]) == 1
    out, err = capsys.readouterr()
    assert f"{new}:7:5: error: {name}:9.9: no such image" in out
    assert "2 wish(es) checked" in err


def test_an_invalid_base_means_every_wish_is_checked(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    old = tmp_path / "old.yaml"
    old.write_text("version: [\n")
    new = wishlist(tmp_path / "new.yaml", [f"  - '{name}:1.0'", f"  - '{name}:9.9'"])
    assert main(["validate", "--check-registry", "--base", str(old), new]) == 1
    out, err = capsys.readouterr()
    assert f"the base {old} is not a valid wishlist: checking every wish" in err
    assert f"{new}:7:5: error:" in out
    assert "2 wish(es) checked" in err


def test_the_untouched_image_is_never_requested_with_a_base(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Through a proxy that fails every request for the untouched image: none reaches it."""
    repo = images["name"].split("/", 1)[1]
    with FaultProxy(images["url"]) as proxy:
        configure(monkeypatch, proxy.host)
        broken = proxy.add(Rule(path=f"/v2/{repo}/manifests/1.0", status=500, times=-1))
        name = f"{proxy.host}/{repo}"
        old = wishlist(tmp_path / "old.yaml", [f"  - '{name}:1.0'"])
        new = wishlist(tmp_path / "new.yaml", [f"  - '{name}:1.0'", f"  - '{name}:2.0'"])
        assert main(["validate", "--check-registry", "--base", old, new]) == 0
        capsys.readouterr()
        assert broken.hits == 0
        assert proxy.requests_to(f"/v2/{repo}/manifests/2.0")
        assert not proxy.requests_to(f"/v2/{repo}/manifests/1.0")
        # without the base the failing image is checked, and reported as unavailable
        assert main(["validate", "--check-registry", new]) == 1
        out, err = capsys.readouterr()
        assert broken.hits == 2  # first attempt and one retry
    assert out.startswith(f"{new}:6:5: error: {name}:1.0: could not check: the registry ")
    assert "no such image" not in out and "not found" not in out
    assert "could not check 1 right now: re-run later" in err


def test_unavailable_registry_is_reported_as_such_in_json(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    repo = images["name"].split("/", 1)[1]
    with FaultProxy(images["url"]) as proxy:
        configure(monkeypatch, proxy.host)
        proxy.add(Rule(path="/tags/list", status=503, times=-1))
        proxy.add(
            Rule(path="/manifests/2.0", status=429, headers={"Retry-After": "3600"}, times=-1)
        )
        name = f"{proxy.host}/{repo}"
        path = wishlist(
            tmp_path / "w.yaml",
            [f"  - '{name}:1.*'", f"  - '{name}:2.0'", f"  - '{name}:1.0'"],
        )
        assert main(["validate", "--check-registry", "--format", "json", path]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert [(p["line"], p["code"], p["severity"]) for p in problems] == [
        (6, "unavailable", "error"),
        (7, "unavailable", "error"),
    ]
    assert "rate-limits us and asks to wait 3600 s" in problems[1]["message"]
    assert all("try again later" in p["hint"] for p in problems)


def test_unavailable_errors_can_be_ignored_too(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    repo = images["name"].split("/", 1)[1]
    with FaultProxy(images["url"]) as proxy:
        configure(monkeypatch, proxy.host)
        proxy.add(Rule(path="/manifests/", status=502, times=-1))
        name = f"{proxy.host}/{repo}"
        path = wishlist(tmp_path / "w.yaml", [f"  - '{name}:1.0'"], ignore=[f"{name}:*"])
        assert main(["validate", "--check-registry", path]) == 0
    out, err = capsys.readouterr()
    assert ": warning: " in out and "ignored because it matches ignoreErrors" in out
    assert "right now" not in err  # nothing blocking is left


def test_bad_command_lines_exit_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = wishlist(tmp_path / "w.yaml", ["  - 'quay.io/a/b:1'"])
    assert main(["validate", "--base", path, path]) == 2
    assert "--base only makes sense with --check-registry" in capsys.readouterr().err
    assert main(["validate", "--check-registry", "--base", path, path, path]) == 2
    assert "validate one FILE at a time with --base" in capsys.readouterr().err


def test_an_invalid_file_is_not_sent_to_the_registry(
    tmp_path: Path, images: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name = images["name"]
    good = wishlist(tmp_path / "good.yaml", [f"  - '{name}:1.0'"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(good).read_text().replace("cvmfs_repo", "cvmfs_rep"))
    assert main(["validate", "--check-registry", good, str(bad)]) == 1
    out, err = capsys.readouterr()
    assert all(line.startswith(str(bad)) for line in out.splitlines())
    assert "1 of 2 invalid files" in err
    assert "1 wish(es) checked in their registries" in err
