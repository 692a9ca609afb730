"""Pushing blobs and manifests with the client (what the publisher does for thin images)."""

from __future__ import annotations

import json

import pytest
import requests
from registry_util import client_for, wish

from bot.core.reference import parse
from bot.errors import RegistryError, Unauthorized
from bot.registry.manifest import sha256_digest
from bot.sandbox.image_builder import DOCKER_CONFIG, DOCKER_MANIFEST
from bot.sandbox.layers import build_layer, compress, file
from bot.sandbox.registry_server import LocalRegistry


def test_push_blob_and_manifest_round_trip(registry: LocalRegistry, unique_repo: str) -> None:
    tar = build_layer([file("thin.json", "{}")])
    layer = compress(tar, "gzip")
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
        }
    ).encode()
    ref = parse(f"{registry.host}/{unique_repo}:thin")
    with client_for(registry.host) as client:
        layer_digest = client.push_blob(ref, layer)
        assert client.push_blob(ref, layer) == layer_digest  # already there: HEAD only
        config_digest = client.push_blob(ref, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        digest = client.push_manifest(ref, manifest, DOCKER_MANIFEST)
        (image,) = client.resolve(wish(str(ref))).images
    assert digest == sha256_digest(manifest)
    assert image.manifest_digest == digest and image.image_id == config_digest
    served = requests.get(f"{registry.url}/v2/{unique_repo}/blobs/{layer_digest}", timeout=10)
    assert served.content == layer


def test_push_needs_credentials_and_reports_bad_manifests(
    basic_registry: LocalRegistry, unique_repo: str
) -> None:
    ref = parse(f"{basic_registry.host}/{unique_repo}:x")
    with client_for(basic_registry.host) as client, pytest.raises(Unauthorized):
        client.push_blob(ref, b"data")
    assert basic_registry.credentials is not None
    with client_for(
        basic_registry.host, credentials={basic_registry.host: basic_registry.credentials}
    ) as client:
        assert client.push_blob(ref, b"data") == sha256_digest(b"data")
        with pytest.raises(RegistryError, match="HTTP 400"):
            client.push_manifest(ref, b'{"schemaVersion": 2, "layers": []}', DOCKER_MANIFEST)
