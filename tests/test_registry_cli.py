"""``wishbot resolve`` end to end against a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.sandbox.image_builder import push_image, push_index
from bot.sandbox.layers import build_layer, file
from bot.sandbox.registry_server import LocalRegistry


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: LocalRegistry) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("WISHBOT_CONFIG", raising=False)
    monkeypatch.setenv("WISHBOT_INSECURE_REGISTRIES", registry.host)
    monkeypatch.setenv("WISHBOT_RETRIES", "0")


def test_resolve_json_expands_wildcards_and_platforms(
    env: None, registry: LocalRegistry, unique_repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = build_layer([file("x", "y")])
    a = push_image(registry.url, unique_repo, "2.1", [layer])
    b = push_image(
        registry.url, unique_repo, "2.2", [layer, layer], compression="zstd", media="oci"
    )
    index = push_index(
        registry.url, unique_repo, "multi", {"linux/amd64": [layer], "linux/arm64/v8": [layer]}
    )
    code = main(["resolve", "--format", "json", f"{registry.host}/{unique_repo}:2.*"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    images = out[0]["images"]
    assert [i["manifest_digest"] for i in images] == [a.manifest_digest, b.manifest_digest]
    assert images[1]["layers"][0]["media_type"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert images[1]["layers"][0]["size"] == b.layer_sizes[0]
    assert images[1]["image_id"] == b.config_digest
    code = main(
        [
            "resolve",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            f"{registry.host}/{unique_repo}:multi",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert index.image_for("linux/arm64/v8").manifest_digest in text
    assert index.image_for("linux/amd64").config_digest in text
    assert "(linux/arm64)" in text and "(linux/amd64)" in text


def test_resolve_reports_problems_with_exit_status(
    env: None, registry: LocalRegistry, unique_repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["resolve", f"{registry.host}/{unique_repo}:nope"])
    captured = capsys.readouterr()
    assert code == 1
    assert "error [not-found]" in captured.out
    assert main(["resolve", "Not A Reference"]) == 2
    assert "not an image reference" in capsys.readouterr().err
    assert main(["resolve", "--platform", "linux", "x.io/a:b"]) == 2
