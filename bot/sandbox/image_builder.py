"""Build and push real images with the registry API, no container engine.

::

    pushed = push_image(registry.url, "demo/hello", "1.0",
                        [build_layer([file("hello.txt", "hi")])],
                        compression="gzip", media="oci", cmd=["/bin/sh"])
    index = push_index(registry.url, "demo/multi", "1.0", {
        "linux/amd64": [layer_a], "linux/arm64/v8": [layer_b],
    }, attestation=True)

Blobs go up with ``POST /v2/<name>/blobs/uploads/`` + ``PUT ?digest=``;
manifests with ``PUT /v2/<name>/manifests/<tag or digest>``. ``auth`` is a
(user, password) pair used for basic auth or for the bearer token flow,
whichever the registry asks for; ``verify`` is passed to ``requests`` (the
test CA file for TLS registries).

This is deliberately independent of :mod:`bot.registry`, so the client is
tested against images it did not make itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from bot.core.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    IN_TOTO,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from bot.errors import WishbotError
from bot.registry.policy import is_loopback
from bot.sandbox.layers import Compression, compress

Media = Literal["docker", "oci"]

LAYER_TYPES: dict[tuple[Media, Compression], str] = {
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
    ("docker", "none"): DOCKER_LAYER,
    ("docker", "zstd"): OCI_LAYER_ZSTD,
    ("oci", "gzip"): OCI_LAYER_GZIP,
    ("oci", "none"): OCI_LAYER,
    ("oci", "zstd"): OCI_LAYER_ZSTD,
}


class PushError(WishbotError):
    """The sandbox could not push to the test registry."""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PushedImage:
    """What was pushed for one image (one platform)."""

    repository: str
    tag: str | None
    manifest_digest: str
    manifest_media_type: str
    manifest: bytes
    config_digest: str  # the image id
    config: bytes
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    layer_media_types: tuple[str, ...]
    diff_ids: tuple[str, ...]
    platform: str = "linux/amd64"


@dataclass(frozen=True)
class PushedIndex:
    """A pushed manifest list / OCI index and the images it points to."""

    repository: str
    tag: str | None
    digest: str
    media_type: str
    body: bytes
    images: tuple[PushedImage, ...]
    attestation_digest: str | None = None

    def image_for(self, platform: str) -> PushedImage:
        for image in self.images:
            if image.platform == platform:
                return image
        raise KeyError(platform)


@dataclass
class Pusher:
    """A session to one registry, handling basic and bearer auth challenges."""

    registry_url: str
    auth: tuple[str, str] | None = None
    verify: str | bool = True
    session: requests.Session = field(default_factory=requests.Session)
    _tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # like the registry client: a loopback registry is never reached through a proxy
        self.session.trust_env = not is_loopback(
            urllib.parse.urlsplit(self.registry_url).hostname or ""
        )

    def __repr__(self) -> str:
        return f"Pusher({self.registry_url!r}, auth={'***' if self.auth else None})"

    def _token(self, challenge: str, repository: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        scope = f"repository:{repository}:pull,push"
        if scope in self._tokens:
            return self._tokens[scope]
        query = {"service": params.get("service", ""), "scope": scope}
        response = self.session.get(
            params["realm"], params=query, auth=self.auth, verify=self.verify, timeout=30
        )
        if response.status_code != 200:
            raise PushError(f"token server refused us: HTTP {response.status_code}")
        body = response.json()
        token = str(body.get("token") or body.get("access_token"))
        self._tokens[scope] = token
        return token

    def request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = urllib.parse.urljoin(self.registry_url + "/", url.lstrip("/"))
        base_headers = dict(headers or {})
        response: requests.Response | None = None
        for _ in range(2):
            response = self.session.request(
                method,
                url,
                data=data,
                headers=base_headers,
                params=params,
                verify=self.verify,
                timeout=60,
                allow_redirects=False,
            )
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code != 401 or "Authorization" in base_headers:
                return response
            if challenge.lower().startswith("bearer"):
                base_headers["Authorization"] = f"Bearer {self._token(challenge, repository)}"
            elif self.auth is not None:
                user, password = self.auth
                base_headers["Authorization"] = requests.auth._basic_auth_str(user, password)
            else:
                return response
        assert response is not None
        return response

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        head = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository)
        if head.status_code == 200:
            return digest
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository)
        if start.status_code != 202:
            raise PushError(f"cannot start a blob upload to {repository}: {_why(start)}")
        location = start.headers["Location"]
        location = urllib.parse.urljoin(start.url, location)
        done = self.request(
            "PUT",
            location,
            repository,
            data=data,
            params={"digest": digest},
            headers={"Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise PushError(f"cannot upload blob {digest} to {repository}: {_why(done)}")
        return digest

    def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository,
            data=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise PushError(
                f"cannot push manifest {repository}:{reference}: {_why(response)}",
            )
        return sha256(body)

    def delete_manifest(self, repository: str, digest: str) -> None:
        response = self.request("DELETE", f"/v2/{repository}/manifests/{digest}", repository)
        if response.status_code not in (202, 404):
            raise PushError(f"cannot delete {repository}@{digest}: {_why(response)}")


def _why(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.text[:300]}"


def _platform_dict(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        out["variant"] = parts[2]
    return out


def image_config(
    diff_ids: Sequence[str],
    *,
    platform: str = "linux/amd64",
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    working_dir: str = "",
    user: str = "",
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The config blob (OCI image config / Docker image JSON)."""
    inner: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        inner["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        inner["Cmd"] = list(cmd)
    if working_dir:
        inner["WorkingDir"] = working_dir
    if user:
        inner["User"] = user
    if labels:
        inner["Labels"] = dict(labels)
    body: dict[str, Any] = {
        **_platform_dict(platform),
        "created": "2023-11-14T22:13:20Z",
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": "wishbot sandbox"} for _ in diff_ids],
    }
    if extra:
        body.update(extra)
    return json.dumps(body, sort_keys=True).encode()


def manifest_body(
    config_digest: str,
    config_size: int,
    layers: Sequence[tuple[str, int, str]],
    *,
    media: Media = "docker",
    omit_media_type: bool = False,
    annotations: Mapping[str, str] | None = None,
) -> tuple[bytes, str]:
    """(manifest bytes, media type) for a config and ``(digest, size, media type)`` layers."""
    manifest_type = DOCKER_MANIFEST if media == "docker" else OCI_MANIFEST
    config_type = DOCKER_CONFIG if media == "docker" else OCI_CONFIG
    body: dict[str, Any] = {"schemaVersion": 2}
    if not omit_media_type:
        body["mediaType"] = manifest_type
    body["config"] = {"mediaType": config_type, "digest": config_digest, "size": config_size}
    body["layers"] = [{"mediaType": t, "digest": d, "size": s} for d, s, t in layers]
    if annotations:
        body["annotations"] = dict(annotations)
    return json.dumps(body, indent=3).encode(), manifest_type


def push_image(
    registry_url: str,
    repository: str,
    tag: str | None,
    layers: Sequence[bytes],
    *,
    compression: Compression = "gzip",
    media: Media = "docker",
    platform: str = "linux/amd64",
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    working_dir: str = "",
    user: str = "",
    labels: Mapping[str, str] | None = None,
    omit_media_type: bool = False,
    auth: tuple[str, str] | None = None,
    verify: str | bool = True,
    pusher: Pusher | None = None,
) -> PushedImage:
    """Push an image made of uncompressed tar ``layers`` (bottom first).

    With ``tag=None`` the manifest is pushed by digest only (for indexes).
    ``omit_media_type`` leaves ``mediaType`` out of an OCI manifest, as umoci does.
    """
    pusher = pusher or Pusher(registry_url, auth, verify)
    diff_ids = [sha256(tar) for tar in layers]
    blobs = [compress(tar, compression) for tar in layers]
    layer_type = LAYER_TYPES[(media, compression)]
    layer_rows = []
    for blob in blobs:
        digest = pusher.push_blob(repository, blob)
        layer_rows.append((digest, len(blob), layer_type))
    config = image_config(
        diff_ids,
        platform=platform,
        env=env,
        entrypoint=entrypoint,
        cmd=cmd,
        working_dir=working_dir,
        user=user,
        labels=labels,
    )
    config_digest = pusher.push_blob(repository, config)
    body, media_type = manifest_body(
        config_digest, len(config), layer_rows, media=media, omit_media_type=omit_media_type
    )
    digest = pusher.push_manifest(repository, tag or sha256(body), body, media_type)
    return PushedImage(
        repository=repository,
        tag=tag,
        manifest_digest=digest,
        manifest_media_type=media_type,
        manifest=body,
        config_digest=config_digest,
        config=config,
        layer_digests=tuple(d for d, _, _ in layer_rows),
        layer_sizes=tuple(s for _, s, _ in layer_rows),
        layer_media_types=tuple(t for _, _, t in layer_rows),
        diff_ids=tuple(diff_ids),
        platform=platform,
    )


def _push_attestation(pusher: Pusher, repository: str, subject: PushedImage) -> tuple[str, int]:
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": [{"name": repository, "digest": {"sha256": subject.manifest_digest[7:]}}],
            "predicate": {},
        }
    ).encode()
    statement_digest = pusher.push_blob(repository, statement)
    config = json.dumps({"architecture": "unknown", "os": "unknown"}).encode()
    config_digest = pusher.push_blob(repository, config)
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [
            {
                "mediaType": IN_TOTO,
                "digest": statement_digest,
                "size": len(statement),
                "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            }
        ],
    }
    raw = json.dumps(body).encode()
    digest = pusher.push_manifest(repository, sha256(raw), raw, OCI_MANIFEST)
    return digest, len(raw)


def push_index(
    registry_url: str,
    repository: str,
    tag: str | None,
    platforms: Mapping[str, Sequence[bytes]],
    *,
    media: Media = "docker",
    compression: Compression = "gzip",
    attestation: bool = False,
    auth: tuple[str, str] | None = None,
    verify: str | bool = True,
    **image_options: Any,
) -> PushedIndex:
    """Push one image per platform (``"os/arch[/variant]" -> layers``) and a
    Docker manifest list (``media="docker"``) or OCI index (``"oci"``) over them.

    ``attestation`` adds a BuildKit-style attestation manifest for the first
    image, listed with platform ``unknown/unknown``.
    """
    pusher = Pusher(registry_url, auth, verify)
    images = [
        push_image(
            registry_url,
            repository,
            None,
            layers,
            compression=compression,
            media=media,
            platform=platform,
            pusher=pusher,
            **image_options,
        )
        for platform, layers in platforms.items()
    ]
    entries: list[dict[str, Any]] = [
        {
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": len(image.manifest),
            "platform": _platform_dict(image.platform),
        }
        for image in images
    ]
    attestation_digest = None
    if attestation and images:
        attestation_digest, size = _push_attestation(pusher, repository, images[0])
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": attestation_digest,
                "size": size,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    "vnd.docker.reference.digest": images[0].manifest_digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            }
        )
    media_type = DOCKER_LIST if media == "docker" else OCI_INDEX
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=2
    ).encode()
    digest = pusher.push_manifest(repository, tag or sha256(body), body, media_type)
    return PushedIndex(
        repository=repository,
        tag=tag,
        digest=digest,
        media_type=media_type,
        body=body,
        images=tuple(images),
        attestation_digest=attestation_digest,
    )


def tag_image(
    registry_url: str,
    image: PushedImage,
    tags: Sequence[str],
    *,
    auth: tuple[str, str] | None = None,
    verify: str | bool = True,
) -> None:
    """Put more tags on an already pushed image (same manifest bytes)."""
    pusher = Pusher(registry_url, auth, verify)
    for tag in tags:
        pusher.push_manifest(image.repository, tag, image.manifest, image.manifest_media_type)
