"""The preprocessing cache switch (`cache: ram|disk|none`): dataset kinds, disk-cache invalidation, the RAM estimate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, RandFlipd, Resized

from bundle.engine import preprocessing_cache
from bundle.engine.preprocessing_cache import cache_size_bytes, cached_dataset

RECORDS = [{"image": np.full((1, 8, 8), float(i), dtype=np.float32)} for i in range(4)]


class CountingScale(MapTransform):
    """A deterministic transform that counts its calls, to tell a cache hit from a recomputation."""

    def __init__(self, factor: float) -> None:
        super().__init__(keys="image")
        self.factor = factor
        self.calls = 0

    def __call__(self, data: dict) -> dict:
        self.calls += 1
        return {"image": torch.as_tensor(data["image"]) * self.factor}


def pipeline(factor: float = 2.0, size: int = 4) -> tuple[Compose, CountingScale]:
    counting = CountingScale(factor)
    return Compose([counting, Resized(keys="image", spatial_size=(size, size)), RandFlipd(keys="image")]), counting


@pytest.mark.parametrize(("mode", "kind"), [("ram", CacheDataset), ("disk", PersistentDataset), ("none", Dataset)])
def test_cache_mode_selects_the_dataset(mode: str, kind: type, tmp_path: Path) -> None:
    dataset = cached_dataset(RECORDS, pipeline()[0], cache=mode, cache_dir=tmp_path, num_workers=0, progress=False)
    assert type(dataset) is kind
    assert dataset[1]["image"].shape == (1, 4, 4)


def test_disk_cache_is_reused_and_invalidated_by_a_changed_parameter(tmp_path: Path) -> None:
    transform, counting = pipeline()
    first = cached_dataset(RECORDS, transform, cache="disk", cache_dir=tmp_path)
    expected = [first[i]["image"].abs() for i in range(len(RECORDS))]  # abs(): the random flip is not cached
    files = set(tmp_path.iterdir())
    assert len(files) == len(RECORDS) and counting.calls == len(RECORDS)

    transform, counting = pipeline()  # same preprocessing, new objects (another run): read from disk
    again = cached_dataset(RECORDS, transform, cache="disk", cache_dir=tmp_path)
    for i, image in enumerate(expected):
        torch.testing.assert_close(again[i]["image"].abs(), image)
    assert counting.calls == 0 and set(tmp_path.iterdir()) == files

    for changed in (pipeline(size=6), pipeline(factor=3.0)):  # a changed parameter: recomputed, new files
        transform, counting = changed
        dataset = cached_dataset(RECORDS, transform, cache="disk", cache_dir=tmp_path)
        dataset[0]
        assert counting.calls == 1
    assert len(set(tmp_path.iterdir()) - files) == 2


def test_ram_cache_warns_with_its_estimate_when_memory_is_short(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert cache_size_bytes(10, (3, 256, 256)) == 10 * 3 * 256 * 256 * 4
    monkeypatch.setattr(preprocessing_cache, "available_memory_bytes", lambda: 10 * 2**30)
    with caplog.at_level(logging.WARNING, logger="bundle.engine.preprocessing_cache"):
        cached_dataset(RECORDS, pipeline()[0], item_shape=(3, 256, 256), num_workers=0, progress=False)
    assert not caplog.records  # 4 images of 0.75 MiB fit in 10 GiB
    monkeypatch.setattr(preprocessing_cache, "available_memory_bytes", lambda: 2**20)
    with caplog.at_level(logging.WARNING, logger="bundle.engine.preprocessing_cache"):
        cached_dataset(RECORDS, pipeline()[0], item_shape=(3, 256, 256), processes=8, num_workers=0, progress=False)
    (record,) = caplog.records
    assert "8 process(es) x 4 images x (3, 256, 256)" in record.getMessage() and "cache: disk" in record.getMessage()


def test_unknown_cache_mode_and_disk_without_folder_are_refused() -> None:
    with pytest.raises(ValueError, match="cache must be one of"):
        cached_dataset(RECORDS, pipeline()[0], cache="gpu")
    with pytest.raises(ValueError, match="cache_dir"):
        cached_dataset(RECORDS, pipeline()[0], cache="disk")
