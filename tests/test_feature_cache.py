"""The frozen-feature cache: encode once, reuse, bound the disk, never trust damage."""

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import new_bundle
from model.encoders import EncoderOutput
from model.feature_cache import CacheKey, FeatureCache, output_bytes
from model.predict import Predictor


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


def test_memory_is_bounded_in_bytes_least_recently_used_first() -> None:
    entry = output_bytes(_output(0).to("cpu", torch.float16))
    cache = FeatureCache(None, max_memory_bytes=entry * 3)
    keys = _keys([0, 1, 2, 3])
    for i, key in enumerate(keys[:3]):
        cache.put(key, _output(float(i)))
    assert cache.get(keys[0]) is not None  # 0 is now the most recently used
    cache.put(keys[3], _output(3.0))
    assert cache.memory_bytes == entry * 3
    assert cache.get(keys[1]) is None  # the least recently used went
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))


def test_an_entry_larger_than_memory_is_returned_but_not_kept() -> None:
    cache, enc = FeatureCache(None, max_memory_bytes=16), CountingEncoder()
    out = cache.get_or_compute(_keys([1, 2]), enc([1, 2]))
    assert [float(f.max()) for f in out.features[0]] == [1.0, 2.0]
    assert cache.memory_bytes == 0


def test_item_bound_still_applies_with_the_byte_bound() -> None:
    cache = FeatureCache(None, max_memory_items=2)
    for i, key in enumerate(_keys([0, 1, 2])):
        cache.put(key, _output(float(i)))
    assert cache.get(_keys([0])[0]) is None and cache.get(_keys([2])[0]) is not None


def test_one_image_of_a_batch_does_not_keep_the_batch_alive() -> None:
    cache = FeatureCache(None, half=False)
    batch = EncoderOutput.stack([_output(float(i)) for i in range(8)])
    stored = cache.put(_keys([0])[0], batch.select(3))
    (tensor,) = stored.features
    assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    assert cache.memory_bytes == output_bytes(batch.select(3))


def test_concurrent_puts_and_gets_keep_both_bounds(tmp_path: Path) -> None:
    entry = output_bytes(_output(0).to("cpu", torch.float16))
    probe = FeatureCache(tmp_path / "probe")
    probe.put(_keys([0])[0], _output(0))
    on_disk = probe.disk_bytes
    cache = FeatureCache(tmp_path / "c", max_memory_bytes=entry * 5, max_disk_bytes=on_disk * 8)
    over: list[int] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for n in range(40):
            i = (worker * 7 + n) % 30
            enc = CountingEncoder()
            out = cache.get_or_compute(_keys([i, (i + 1) % 30]), enc([i, (i + 1) % 30]))
            assert float(out.features[0][0].max()) == float(i)
            if cache.memory_bytes > entry * 5 or cache.disk_bytes > on_disk * 8:
                over.append(cache.memory_bytes)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work, w) for w in range(8)]:
            future.result()  # re-raises anything a worker raised
    assert not over
    assert cache.memory_bytes <= entry * 5
    files = list((tmp_path / "c").rglob("*.pt"))
    assert cache.disk_bytes == sum(p.stat().st_size for p in files) <= on_disk * 8
    assert not list((tmp_path / "c").rglob("*.tmp"))
    assert cache.hits + cache.misses == 8 * 40 * 2


def test_a_file_where_the_folder_should_be_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    cache, enc = FeatureCache(blocker), CountingEncoder()
    with caplog.at_level(logging.WARNING, logger="model.feature_cache"):
        first = cache.get_or_compute(_keys([1, 2]), enc([1, 2]))
        again = cache.get_or_compute(_keys([1, 2, 3]), enc([1, 2, 3]))
    assert enc.seen == [1, 2, 3]
    assert torch.equal(first.features[0], again.features[0][:2])
    assert not cache.writes_to_disk
    assert len(caplog.records) == 1 and "memory only" in caplog.records[0].getMessage()
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
def test_a_read_only_folder_falls_back_to_memory_and_still_serves_its_files(
    tmp_path: Path,
) -> None:
    FeatureCache(tmp_path).put(_keys([1])[0], _output(1.0))
    folders = [tmp_path, *[p for p in tmp_path.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o555)
    try:
        cache, enc = FeatureCache(tmp_path), CountingEncoder()
        cache.get_or_compute(_keys([1, 2]), enc([1, 2]))
        assert enc.seen == [2] and not cache.writes_to_disk
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_predictions_work_when_the_cache_cannot_write(tiny_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    bundle = new_bundle(tiny_encoder, label_sigma=2.0)
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"")
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    broken = Predictor(bundle, cache=FeatureCache(blocker)).predict(image)
    plain = Predictor(bundle, cache=FeatureCache(None)).predict(image)
    assert np.array_equal(broken.mask, plain.mask)
    assert np.allclose(broken.heatmap, plain.heatmap)
