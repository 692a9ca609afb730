"""The sandbox itself: real registries in every flavour, pushed images, tar layers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
import requests

from bot.sandbox.image_builder import OCI_INDEX, PushError, push_image, push_index
from bot.sandbox.layers import (
    build_layer,
    compress,
    file,
    gzip_bomb,
    hardlink,
    opaque,
    symlink,
    whiteout,
    with_parents,
)
from bot.sandbox.registry_server import LocalRegistry

MANIFEST_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def test_layer_spec_round_trips_through_tarfile() -> None:
    tar = build_layer(
        with_parents(
            [
                file("etc/hostname", "box\n", mode=0o600, uid=7),
                symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
                file("bin/bash", b"\x7fELF"),
                hardlink("bin/sh", "bin/bash"),
                whiteout("etc/motd"),
                opaque("var/cache"),
                file("../escape", "x"),
            ]
        )
    )
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert archive.extractfile("etc/hostname").read() == b"box\n"  # type: ignore[union-attr]
    assert members["etc"].isdir() and members["var/cache"].isdir()
    assert members["etc/hostname"].mode == 0o600 and members["etc/hostname"].uid == 7
    assert members["etc/localtime"].issym()
    assert members["bin/sh"].islnk() and members["bin/sh"].linkname == "bin/bash"
    assert "etc/.wh.motd" in members and "var/cache/.wh..wh..opq" in members
    assert "../escape" in members  # hostile names are kept verbatim


def test_bomb_is_small_compressed_and_large_unpacked() -> None:
    blob = gzip_bomb("zeros", 50 * 2**20)
    assert len(blob) < 200_000
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        assert archive.getmember("zeros").size == 50 * 2**20


def test_compression_is_reproducible() -> None:
    tar = build_layer([file("a", "b")])
    assert compress(tar, "gzip") == compress(tar, "gzip")
    assert compress(tar, "none") == tar
    assert compress(tar, "zstd")[:4] == b"\x28\xb5\x2f\xfd"


def _get_manifest(server: LocalRegistry, repo: str, ref: str, **kw: object) -> requests.Response:
    return requests.get(
        f"{server.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": MANIFEST_ACCEPT},
        verify=server.verify,
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


def test_open_registry_serves_pushed_image(registry: LocalRegistry, unique_repo: str) -> None:
    layer = build_layer([file("hello.txt", "hi")])
    pushed = push_image(registry.url, unique_repo, "1.0", [layer], media="oci", cmd=["/bin/sh"])
    response = _get_manifest(registry, unique_repo, "1.0")
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == pushed.manifest_digest
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == pushed.manifest_digest
    config = json.loads(pushed.config)
    assert config["config"]["Cmd"] == ["/bin/sh"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_index_with_attestation(registry: LocalRegistry, unique_repo: str) -> None:
    index = push_index(
        registry.url,
        unique_repo,
        "multi",
        {"linux/amd64": [build_layer([file("a", "1")])], "linux/arm64/v8": [build_layer([])]},
        media="oci",
        attestation=True,
    )
    body = _get_manifest(registry, unique_repo, "multi").json()
    assert body["mediaType"] == OCI_INDEX
    platforms = [
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in body["manifests"]
    ]
    assert platforms == [("amd64", None), ("arm64", "v8"), ("unknown", None)]
    assert index.attestation_digest == body["manifests"][2]["digest"]


@pytest.mark.parametrize("flavour", ["basic_registry", "token_registry"])
def test_auth_flavours_refuse_anonymous_and_accept_credentials(
    flavour: str, request: pytest.FixtureRequest, unique_repo: str
) -> None:
    server: LocalRegistry = request.getfixturevalue(flavour)
    assert requests.get(f"{server.url}/v2/", timeout=10).status_code == 401
    pushed = push_image(server.url, unique_repo, "v1", [build_layer([])], auth=server.credentials)
    assert pushed.manifest_digest.startswith("sha256:")
    with pytest.raises(PushError, match=r"HTTP 401"):
        push_image(server.url, unique_repo, "v2", [build_layer([])], auth=("wishbot", "wrong"))


def test_tls_registry_needs_the_test_ca(tls_registry: LocalRegistry, unique_repo: str) -> None:
    push_image(tls_registry.url, unique_repo, "1", [build_layer([])], verify=tls_registry.verify)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_registry.url}/v2/", timeout=10)


def test_registry_stops_by_pid(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = LocalRegistry(directory=tmp_path_factory.mktemp("r")).start()
    url = server.url
    assert requests.get(f"{url}/v2/", timeout=5).status_code == 200
    server.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/v2/", timeout=5)
    assert "password=***" in repr(server)
