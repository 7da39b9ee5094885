"""How a serving process shares the CPU's cores: compute threads × intra-op threads.

PyTorch runs each operator on an OpenMP team that belongs to the calling Python thread.
A server computes in several threads (background prediction, requests, the anomaly refit);
once their teams hold more threads than the machine has cores, GNU OpenMP stops spinning
between operators, and a network of many small operators (the heads on one tile) ran 1.8×
slower in a background thread than on the main thread of an idle process. One worker per
core, each computing with its own share of the cores (one thread on a small CPU), keeps
every operator on a core of its own and predicts several batches at once instead.
`ComputePool` holds those threads: the tile batches of every prediction (a lone large
image's too) run there side by side.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

MAX_AUTO_WORKERS = 4  # each worker holds one batch of tiles and their activations


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prediction_workers(setting: int | None, *, cuda: bool | None = None) -> tuple[int, int | None]:
    """(worker threads, intra-op threads of each, None: leave PyTorch's own) for the
    `prediction_workers` setting (None: one per core up to `MAX_AUTO_WORKERS` on a CPU,
    one on a GPU, where one worker's batches keep the device busy); `cuda` None: whether
    this machine has a CUDA device."""
    if torch.cuda.is_available() if cuda is None else cuda:
        return setting or 1, None
    cores = cpu_cores()
    workers = setting or min(cores, MAX_AUTO_WORKERS)
    return workers, max(1, cores // workers)


def pin_intra_op_threads(count: int) -> None:
    """Compute with `count` intra-op threads in the calling thread from now on.

    The thread takes PyTorch's process-wide value once, on its first call; reading it first
    makes that happen now, so the setting below stays this thread's whatever another thread
    sets later. Threads that compute for the first time afterwards start from `count` too.
    """
    torch.get_num_threads()
    torch.set_num_threads(count)


class ComputePool:
    """`threads` compute threads with `intra_op` PyTorch threads each."""

    def __init__(self, threads: int, intra_op: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(
            threads,
            thread_name_prefix="compute",
            initializer=pin_intra_op_threads,
            initargs=(intra_op,),
        )

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`fn` over `items` in the pool, results in order, at most `threads` computed
        ahead of the one the caller reads (a large image's tiles are not all held)."""
        source = iter(items)
        pending: deque[Future[R]] = deque(
            self._executor.submit(fn, item) for item in islice(source, self.threads)
        )
        while pending:
            result = pending.popleft().result()
            pending.extend(self._executor.submit(fn, item) for item in islice(source, 1))
            yield result

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def cpu_compute_pool(setting: int | None, *, cuda: bool | None = None) -> ComputePool | None:
    """The pool for the `prediction_workers` setting; None on a GPU (one batch at a time
    keeps it busy). `cuda` as for `prediction_workers`: False for a model kept on a CPU."""
    workers, intra_op = prediction_workers(setting, cuda=cuda)
    return None if intra_op is None else ComputePool(workers, intra_op)


def check_workers(workers: int | None) -> None:
    """ValueError for a negative compute-thread count (checked before a model loads)."""
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")


@contextmanager
def pool_for_device(device: torch.device, workers: int | None) -> Iterator[ComputePool | None]:
    """The compute pool a command-line run uses for a model on `device`, shut down on
    leaving: `workers` threads (None: the `prediction_workers` default; 0: none, the calling
    thread alone); never one for a GPU. ValueError for a negative count."""
    check_workers(workers)
    pool = None if device.type != "cpu" or workers == 0 else cpu_compute_pool(workers, cuda=False)
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown()
