"""The bot's review says plainly when what it plans against is wrong, as the
``plan`` command does (issue 12, "silent mistakes"): an unmounted repository
or a catalog of another repository never plans as "everything is new" or
"no changes"."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config
from bot.core.catalog import catalog_files
from bot.core.model import CurrentState
from bot.errors import PublisherError, UsageError
from bot.runtime.pipeline import WishbotPipeline

WISHLIST = b"""version: 1
user: bot
cvmfs_repo: unpacked.example.org
output_format: 'https://registry.example.org/thin/$(image)'
input: []
"""


def test_an_unmounted_repository_is_an_error_not_an_empty_publisher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WISHBOT_CVMFS_ROOT", str(tmp_path))  # nothing mounted there
    pipeline = WishbotPipeline(Config.load({"WISHBOT_PUBLISHER": "cvmfs:unpacked.example.org"}))
    with pytest.raises(PublisherError, match="is not mounted") as caught:
        pipeline.review(None, WISHLIST, "w.yaml", trusted=True)
    assert "cvmfs_server mount unpacked.example.org" in (caught.value.hint or "")


def test_a_catalog_of_another_repository_is_an_error_not_no_changes() -> None:
    files = catalog_files(CurrentState("other.example.org"), grace_days=30)
    catalog = next(body for name, body in files.items() if name.endswith(".json"))
    pipeline = WishbotPipeline(Config.load({}))
    with pytest.raises(
        UsageError,
        match=r"the wishlist is for unpacked\.example\.org, but the catalog is other\.example\.org",
    ):
        pipeline.review(None, WISHLIST, "w.yaml", trusted=True, catalog=catalog)
