"""Extended attributes of layer entries: the safe ones published, the rest named.

A tar carries extended attributes as PAX records: ``SCHILY.xattr.<name>=<raw
value>`` (GNU tar, Go's archive/tar, hence Docker, buildkit, umoci) or
``LIBARCHIVE.xattr.<url-encoded name>=<base64 value>`` (bsdtar). Images use
them for file capabilities (``security.capability`` on ``ping``, ``arping``
…), which a flat image must keep like it keeps setuid bits.

Published (where the file system and our privileges allow): :data:`KEPT`,
i.e. ``security.capability`` (needs root: ``CAP_SETFCAP``) and ``user.*``.
Everything else (``trusted.*``, ``security.selinux``, ACLs in
``system.posix_acl_*``) is never applied: it would be the publisher host's
policy, not the image's. Whatever is not applied — by choice or because the
file system refused — is named in the layer's statistics (``dropped_xattrs``)
and in ``apply``'s output, never dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from urllib.parse import unquote

SCHILY = "SCHILY.xattr."
LIBARCHIVE = "LIBARCHIVE.xattr."
KEPT_EXACT = frozenset({"security.capability"})
KEPT_PREFIXES = ("user.",)


def kept(name: str) -> bool:
    """Is ``name`` an attribute wishbot publishes?"""
    return name in KEPT_EXACT or name.startswith(KEPT_PREFIXES)


def from_pax(records: Mapping[str, str]) -> dict[str, bytes]:
    """The extended attributes in an entry's PAX records (name -> raw value)."""
    out: dict[str, bytes] = {}
    for key, value in records.items():
        if key.startswith(SCHILY):
            out[key[len(SCHILY) :]] = value.encode("utf-8", "surrogateescape")
        elif key.startswith(LIBARCHIVE):
            try:
                raw = base64.b64decode(value.encode("ascii", "surrogateescape"), validate=False)
            except (binascii.Error, ValueError):
                raw = b""
            out[unquote(key[len(LIBARCHIVE) :])] = raw
    return out


def from_file(path: str) -> dict[str, bytes]:
    """The published attributes of a file already unpacked (no symlink followed)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        if kept(name):
            try:
                out[name] = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
    return out


def apply(target: int | str, attributes: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """Set the kept ``attributes`` on ``target`` (a descriptor or a path, never
    followed); returns ``(name, why)`` for each one not applied."""
    dropped: list[tuple[str, str]] = []
    for name, value in attributes.items():
        if not kept(name):
            dropped.append((name, "not published (only security.capability and user.* are)"))
            continue
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            dropped.append((name, exc.strerror or str(exc)))
    return dropped
