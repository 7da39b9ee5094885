"""The frozen-feature cache: encode once, reuse, bound the disk, never trust damage."""

from pathlib import Path

import torch

from model.encoders import EncoderOutput
from model.feature_cache import CacheKey, FeatureCache


def _output(value: float) -> EncoderOutput:
    return EncoderOutput(features=[torch.full((1, 4, 8, 8), value)], embedding=None)


class CountingEncoder:
    """Encodes 'image i' as a constant map of value i and counts the images it saw."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, images: list[int]):  # type: ignore[no-untyped-def]
        def compute(indices: list[int]) -> EncoderOutput:
            self.seen += [images[i] for i in indices]
            return EncoderOutput.stack([_output(float(images[i])) for i in indices])

        return compute


def _keys(ids: list[int], transform: str = "identity") -> list[CacheKey]:
    return [CacheKey(f"{i:064x}", "enc", 64, transform) for i in ids]


def test_each_image_is_encoded_once_and_results_keep_order(tmp_path: Path) -> None:
    cache, enc = FeatureCache(tmp_path), CountingEncoder()
    first = cache.get_or_compute(_keys([1, 2, 3]), enc([1, 2, 3]), batch_size=2)
    again = cache.get_or_compute(_keys([3, 1, 4]), enc([3, 1, 4]))
    assert enc.seen == [1, 2, 3, 4]
    assert [float(f[0, 0, 0]) for f in again.features[0]] == [3.0, 1.0, 4.0]
    assert first.features[0].shape == (3, 4, 8, 8)
    assert cache.hits == 2 and cache.misses == 4


def test_transforms_are_separate_entries(tmp_path: Path) -> None:
    cache, enc = FeatureCache(tmp_path), CountingEncoder()
    cache.get_or_compute(_keys([1]), enc([1]))
    cache.get_or_compute(_keys([1], "hflip"), enc([1]))
    assert enc.seen == [1, 1]


def test_disk_entries_survive_a_new_process_and_are_half_precision(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get_or_compute(_keys([7]), CountingEncoder()([7]))
    fresh = FeatureCache(tmp_path)
    value = fresh.get(_keys([7])[0])
    assert value is not None and value.features[0].dtype == torch.float16
    assert float(value.features[0].max()) == 7.0
    assert fresh.disk_bytes > 0


def test_disk_size_stays_bounded(tmp_path: Path) -> None:
    one = FeatureCache(tmp_path)
    one.put(_keys([0])[0], _output(0))
    entry = one.disk_bytes
    cache = FeatureCache(tmp_path, max_disk_bytes=entry * 5, max_memory_items=2)
    for i in range(1, 20):
        cache.put(_keys([i])[0], _output(float(i)))
    files = list(tmp_path.rglob("*.pt"))
    assert sum(p.stat().st_size for p in files) <= entry * 5
    assert cache.get(_keys([19])[0]) is not None  # the newest entry is kept
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_damaged_entry_is_recomputed(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get_or_compute(_keys([5]), CountingEncoder()([5]))
    (path,) = tmp_path.rglob("*.pt")
    path.write_bytes(b"garbage")
    enc = CountingEncoder()
    out = FeatureCache(tmp_path).get_or_compute(_keys([5]), enc([5]))
    assert enc.seen == [5] and float(out.features[0].max()) == 5.0


def test_memory_only_cache_works_without_a_folder() -> None:
    cache, enc = FeatureCache(None), CountingEncoder()
    cache.get_or_compute(_keys([1]), enc([1]))
    cache.get_or_compute(_keys([1]), enc([1]))
    assert enc.seen == [1] and cache.disk_bytes == 0
