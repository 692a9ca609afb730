"""The OCI and Docker media types, defined once (manifests, configs, layers).

The registry client accepts and checks them, the publisher writes them into
the image metadata and the thin images it pushes, the sandbox builds images
with them. See the OCI image spec (``media-types.md``) and Docker's image
manifest v2, schema 2.
"""

from __future__ import annotations

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
#: an attestation (in an index next to the platform images; never a platform)
IN_TOTO = "application/vnd.in-toto+json"

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDISTRIBUTABLE_LAYER_GZIP = f"{OCI_NONDISTRIBUTABLE_LAYER}+gzip"
OCI_NONDISTRIBUTABLE_LAYER_ZSTD = f"{OCI_NONDISTRIBUTABLE_LAYER}+zstd"

#: every manifest type we accept, most specific first (always sent in Accept)
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, "application/json"})
CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})

LAYER_TYPES = frozenset(
    {
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER,
        DOCKER_LAYER_ZSTD,
        DOCKER_FOREIGN_LAYER_GZIP,
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_NONDISTRIBUTABLE_LAYER,
        OCI_NONDISTRIBUTABLE_LAYER_GZIP,
        OCI_NONDISTRIBUTABLE_LAYER_ZSTD,
    }
)


def compression_of(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``none`` for a layer media type."""
    if media_type.endswith(("gzip", "+gzip")):
        return "gzip"
    if media_type.endswith(("zstd", "+zstd")):
        return "zstd"
    return "none"
