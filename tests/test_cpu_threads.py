"""How the serving process splits the CPU: workers × intra-op threads, pinned per thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from model.cpu_threads import (
    MAX_AUTO_WORKERS,
    ComputePool,
    cpu_compute_pool,
    cpu_cores,
    pin_intra_op_threads,
    pool_for_device,
    prediction_workers,
)
from webapp.settings import Settings


def test_workers_default_to_one_per_core_each_on_its_share() -> None:
    cores = cpu_cores()
    workers, threads = prediction_workers(None, cuda=False)
    assert workers == min(cores, MAX_AUTO_WORKERS)
    assert threads == max(1, cores // workers)
    assert prediction_workers(1, cuda=False) == (1, cores)  # one worker: every core
    assert prediction_workers(3 * cores, cuda=False) == (3 * cores, 1)


def test_a_gpu_gets_one_worker_and_pytorchs_own_threads() -> None:
    assert prediction_workers(None, cuda=True) == (1, None)
    assert prediction_workers(2, cuda=True) == (2, None)


def test_pinned_threads_stay_the_threads_own() -> None:
    """A thread pinned to one thread keeps it after another thread sets another count,
    and the caller's own count is untouched."""
    before = torch.get_num_threads()
    pinned = threading.Event()
    other_set = threading.Event()
    seen: list[int] = []

    def pinned_worker() -> None:
        pin_intra_op_threads(1)
        pinned.set()
        other_set.wait(60)
        seen.append(torch.get_num_threads())

    def other() -> None:
        pinned.wait(60)
        torch.set_num_threads(2)  # the process-wide value, for threads that start later
        other_set.set()

    threads = [threading.Thread(target=pinned_worker), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_prediction_workers_setting_is_checked() -> None:
    assert Settings().prediction_workers is None
    assert Settings(prediction_workers=3).prediction_workers == 3
    with pytest.raises(ValueError):
        Settings(prediction_workers=0)


def test_the_pool_maps_in_order_on_pinned_threads_a_few_ahead() -> None:
    pool = ComputePool(2, 1)
    lock = threading.Lock()
    running, most, started = 0, 0, 0

    def work(item: int) -> tuple[int, int]:
        nonlocal running, most, started
        with lock:
            started += 1
            running += 1
            most = max(most, running)
        time.sleep(0.02 * (item % 3))  # finish out of order
        with lock:
            running -= 1
        return item * item, torch.get_num_threads()

    try:
        results = pool.map(work, range(7))
        first = next(results)
        time.sleep(0.2)  # the consumer is slow: the pool does not run far ahead of it
        started_while_slow = started
        rest = list(results)
    finally:
        pool.shutdown()
    assert [r for r, _ in [first, *rest]] == [i * i for i in range(7)]
    assert {threads for _, threads in [first, *rest]} == {1}
    assert most == 2
    assert started_while_slow == 3  # the one read and the next `threads`, not all seven


def test_a_gpu_gets_no_compute_pool() -> None:
    workers, intra_op = prediction_workers(None)
    pool = cpu_compute_pool(None)
    try:
        assert (pool is None) == (intra_op is None)
        assert pool is None or pool.threads == workers
    finally:
        if pool is not None:
            pool.shutdown()


def test_command_line_pools_follow_the_device_and_the_count() -> None:
    with pool_for_device(torch.device("cpu"), 3) as pool:
        assert pool is not None
        assert pool.threads == 3
        assert list(pool.map(lambda x: x * 2, range(5))) == [0, 2, 4, 6, 8]
    with pytest.raises(RuntimeError, match="shutdown"):  # shut down on leaving
        next(pool.map(lambda x: x, range(1)))
    with pool_for_device(torch.device("cpu"), 0) as none:
        assert none is None  # the calling thread alone
    with pool_for_device(torch.device("cuda"), 3) as none:
        assert none is None  # a GPU takes one batch at a time
    with (
        pytest.raises(ValueError, match="--workers must be 0 or more"),
        pool_for_device(torch.device("cpu"), -1),
    ):
        pass
