"""Which merge request last added or changed each published path, and the
optional note on it when a registry event republishes the path
(``registry_event_note``, off by default).

When a merge to the default branch is published, the bot knows the merged
commit and finds its merge request (GitLab ``GET
/projects/:id/repository/commits/:sha/merge_requests``, GitHub ``GET
/repos/{owner}/{repo}/commits/{commit_sha}/pulls``, through
:meth:`~bot.forge.base.Forge.merge_request_for_commit`); the paths that
publication added or re-pointed are recorded against that request in
``STATE_DIR/wish-requests.json``. A ``refresh`` run (registry events) that
re-points a recorded path because its tag moved posts one short note on that
request: ``republished `PATH`: tag moved to sha256:…``. A note that cannot be
posted is logged; it never fails the refresh.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from bot.config import Config
from bot.core.catalog import CATALOG_JSON
from bot.core.text import code_span, cut, is_digest
from bot.errors import ForgeError
from bot.forge.base import Forge, MergeRequest
from bot.runtime.pipeline_api import Publication

log = logging.getLogger(__name__)

FILE = "wish-requests.json"
MAX_BYTES = 16 * 2**20  # the record is ours, but bounded all the same
MAX_NOTES = 50  # notes one refresh posts at most


def _path(config: Config) -> Path | None:
    if not config.registry_event_note or not config.state_dir:
        return None
    return Path(config.state_dir) / FILE


def recorded(config: Config) -> dict[str, str]:
    """Path -> merge request number (empty when off, absent or unreadable)."""
    path = _path(config)
    if path is None or not path.is_file() or path.stat().st_size > MAX_BYTES:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable, starting afresh: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, (str, int))}


def remember(config: Config, mr: MergeRequest, publication: Publication) -> None:
    """Record ``mr`` as the request that last added or changed the paths
    ``publication`` published (nothing when the note is off)."""
    path = _path(config)
    if path is None or not publication.ok or not publication.published:
        return
    known = recorded(config)
    known.update({published: mr.number for published in publication.published})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE}.")
        with os.fdopen(fd, "w") as out:
            json.dump(known, out, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError as exc:  # the note is optional: publishing goes on
        log.warning("cannot record the merge request of %s: %s", path, exc)


def moved_to(catalog: Mapping[str, bytes]) -> dict[str, str]:
    """``/cvmfs/...`` path -> manifest digest, from a publication's ``catalog.json``."""
    try:
        images = json.loads(catalog.get(CATALOG_JSON, b"{}")).get("images", [])
    except (ValueError, AttributeError):
        return {}
    digests = {}
    for image in images if isinstance(images, list) else []:
        if isinstance(image, dict) and is_digest(image.get("manifest_digest")):
            for key in ("cvmfs_path", "path"):
                digests[str(image.get(key))] = str(image["manifest_digest"])
    return digests


def note_text(path: str, digest: str) -> str:
    return f"republished {code_span(path)}: tag moved to {code_span(digest)}\n"


def note_republished(config: Config, forge: Forge, publication: Publication) -> int:
    """Post the note on each recorded request whose path ``publication``
    re-published; how many were posted."""
    if not publication.ok or not publication.published:
        return 0
    known = recorded(config)
    if not known:
        return 0
    digests = moved_to(publication.catalog)
    posted = 0
    for path in _noted(publication.published, known):
        digest = digests.get(path) or digests.get(_relative(path))
        if digest is None or posted >= MAX_NOTES:
            continue
        try:
            mr = forge.merge_request(known[path])
            forge.add_comment(mr, note_text(path, digest))
            posted += 1
        except ForgeError as exc:
            log.warning("no note on request %s for %s: %s", known[path], path, cut(str(exc), 200))
    return posted


def _noted(published: Iterable[str], known: Mapping[str, str]) -> list[str]:
    return [path for path in published if path in known]


def _relative(path: str) -> str:
    """``/cvmfs/REPO/a/b`` -> ``a/b`` (the catalog's ``path``)."""
    parts = path.split("/", 3)
    return parts[3] if len(parts) == 4 and parts[1] == "cvmfs" else path
