"""Metadata formats: round trips, and files as the reference converter (DUCC) writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.core.model import Platform, ScheduledRemoval
from bot.core.reference import parse
from bot.errors import PublisherError
from bot.publisher.metadata import (
    ImageRecord,
    LayerInfo,
    ScheduleEntry,
    read_origin,
    read_schedule,
    schedule_json,
    write_json,
)

ID = "sha256:" + "a" * 64
L1 = "sha256:" + "b" * 64
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_image_record_round_trip_keeps_ducc_shape() -> None:
    record = ImageRecord(
        path="reg.io/lib/x:1",
        reference=parse("reg.io/lib/x:1"),
        platform=Platform("linux", "arm64", "v8"),
        manifest_digest="sha256:" + "c" * 64,
        image_id=ID,
        layers=((L1, 12, "application/vnd.oci.image.layer.v1.tar+gzip"),),
        converted=WHEN,
        thin_image="reg.io/thin/lib/x:1",
        unpacked_size=99,
    )
    data = json.loads(json.dumps(record.to_json()))
    assert data["config"]["digest"] == ID  # what DUCC reads to decide "already converted"
    assert data["layers"][0]["digest"] == L1
    assert ImageRecord.from_json(data, record.path) == record


def test_bare_ducc_manifest_is_readable() -> None:
    ducc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": ID},
        "layers": [{"digest": L1, "size": 5, "mediaType": "x"}],
    }
    record = ImageRecord.from_json(ducc, "registry.hub.docker.com/library/centos:centos7")
    assert record is not None and record.image_id == ID
    assert str(record.reference) == "registry.hub.docker.com/library/centos:centos7"
    assert record.platform == Platform("linux", "amd64") and record.layers == ((L1, 5, "x"),)
    assert ImageRecord.from_json({"layers": []}, "reg.io/a:1") is None
    assert ImageRecord.from_json("garbage", "reg.io/a:1") is None


def test_origin_and_layer_info(tmp_path: Path) -> None:
    path = tmp_path / "origin.json"
    path.write_text(json.dumps({"origin": ["a" * 64, ID, 7]}))  # DUCC may omit the prefix
    assert read_origin(path) == {ID}
    assert read_origin(tmp_path / "missing.json") == frozenset()
    info = LayerInfo(L1, "sha256:" + "d" * 64, "t", 1, 2, 3)
    assert LayerInfo.from_json(json.loads(json.dumps(info.to_json())), L1) == info
    assert LayerInfo.from_json(None, L1).unpacked_size == 0


def test_schedule_reads_ducc_entries_and_dedupes(tmp_path: Path) -> None:
    path = tmp_path / "remove-schedule.json"
    path.write_text(json.dumps([{"schemaVersion": 2, "config": {"digest": ID}, "layers": []}]))
    (entry,) = read_schedule(path, WHEN)
    assert entry.removal == ScheduledRemoval("image", ID, WHEN, None)
    later = ScheduleEntry(ScheduledRemoval("image", ID, datetime(2026, 1, 1, tzinfo=UTC)))
    layer = ScheduleEntry(ScheduledRemoval("layer", L1, WHEN))
    write_json(path, schedule_json([later, entry, layer]))
    again = read_schedule(path)
    assert [(e.removal.kind, e.removal.scheduled) for e in again] == [
        ("image", WHEN),
        ("layer", WHEN),
    ]
    path.write_text("{broken")  # damaged: never read as empty (its images would leak)
    with pytest.raises(PublisherError, match=r"remove schedule .* cannot be read.*repair"):
        read_schedule(path)
    path.write_text('{"a": 1}')
    with pytest.raises(PublisherError, match="is not a JSON list"):
        read_schedule(path)
    path.unlink()
    assert read_schedule(path) == []  # missing: nothing scheduled
