"""How the serving process splits the CPU: workers × intra-op threads, pinned per thread."""

from __future__ import annotations

import threading

import pytest
import torch

from model.cpu_threads import MAX_AUTO_WORKERS, cpu_cores, pin_intra_op_threads, prediction_workers
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
