"""Small but real example images for ``wishbot demo`` and the end-to-end tests.

Every image is built from tar layers (:mod:`bot.sandbox.layers`) and pushed
with the registry API (:mod:`bot.sandbox.image_builder`). They share one base
layer, so layer sharing shows in a plan:

- the base layer is a tiny root file system in the merged-``/usr`` style:
  ``/etc/os-release``, empty ``/usr``, ``/proc``, ``/dev``, ``/tmp``, and
  ``/bin/sh``, ``/lib``, ``/lib64`` as symlinks into ``/usr`` (so a sandbox
  that binds the host's ``/usr`` can run the image's scripts);
- each application layer adds an executable ``/bin/hello`` script and a
  ``/srv/<name>/message.txt`` file, in a given *version* (pushing a new
  version under the same tag moves the tag).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.sandbox.image_builder import PushedImage, push_image
from bot.sandbox.layers import build_layer, directory, file, symlink, with_parents

OS_RELEASE = 'ID=wishbot-demo\nNAME="wishbot demo"\nPRETTY_NAME="wishbot demo base"\n'


def base_layer() -> bytes:
    """The shared base layer: a tiny merged-``/usr`` root file system."""
    return build_layer(
        with_parents(
            [
                directory("etc"),
                file("etc/os-release", OS_RELEASE),
                directory("usr"),
                directory("bin"),
                symlink("bin/sh", "/usr/bin/sh"),
                symlink("lib", "usr/lib"),
                symlink("lib64", "usr/lib64"),
                directory("proc"),
                directory("dev"),
                directory("tmp", mode=0o1777),
            ]
        )
    )


def message(name: str, version: str) -> str:
    """The text of ``/srv/<name>/message.txt`` (also what ``/bin/hello`` prints)."""
    return f"hello from {name} {version}\n"


def app_layer(name: str, version: str) -> bytes:
    """``/bin/hello`` and ``/srv/<name>/message.txt`` for one version of one app."""
    script = (
        "#!/bin/sh\n"
        ". /etc/os-release\n"
        f"read -r line < /srv/{name}/message.txt\n"
        'echo "$line, running on $PRETTY_NAME"\n'
    )
    return build_layer(
        with_parents(
            [
                file("bin/hello", script, mode=0o755),
                file(f"srv/{name}/message.txt", message(name, version)),
            ]
        )
    )


@dataclass(frozen=True)
class DemoImage:
    """One pushed example image: ``repository:tag`` on the registry, and its parts."""

    registry: str  # host:port
    repository: str
    tag: str
    version: str
    pushed: PushedImage

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def image_id(self) -> str:
        return self.pushed.config_digest


def push_demo_image(
    registry_url: str, repository: str, tag: str, version: str, *, base: bytes | None = None
) -> DemoImage:
    """Push ``repository:tag`` made of the base layer and an app layer of ``version``.

    The app's name is the last part of ``repository``.
    """
    name = repository.rsplit("/", 1)[-1]
    layers = [base if base is not None else base_layer(), app_layer(name, version)]
    pushed = push_image(
        registry_url,
        repository,
        tag,
        layers,
        media="oci",
        cmd=["/bin/hello"],
        labels={"org.opencontainers.image.version": version},
    )
    host = registry_url.split("://", 1)[-1]
    return DemoImage(host, repository, tag, version, pushed)
