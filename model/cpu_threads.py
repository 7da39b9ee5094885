"""How a serving process shares the CPU's cores: prediction workers × intra-op threads.

PyTorch runs each operator on an OpenMP team that belongs to the calling Python thread.
A server computes in several threads (background prediction, requests, the anomaly refit);
once their teams hold more threads than the machine has cores, GNU OpenMP stops spinning
between operators, and a network of many small operators (the heads on one tile) ran 1.8×
slower in a background thread than on the main thread of an idle process. One worker per
core, each computing with its own share of the cores (one thread on a small CPU), keeps
every operator on a core of its own and predicts several batches at once instead.
"""

from __future__ import annotations

import os

import torch

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
    workers = setting or min(cpu_cores(), MAX_AUTO_WORKERS)
    return workers, max(1, cpu_cores() // workers)


def pin_intra_op_threads(count: int) -> None:
    """Compute with `count` intra-op threads in the calling thread from now on.

    The thread takes PyTorch's process-wide value once, on its first call; reading it first
    makes that happen now, so the setting below stays this thread's whatever another thread
    sets later. Threads that compute for the first time afterwards start from `count` too.
    """
    torch.get_num_threads()
    torch.set_num_threads(count)
