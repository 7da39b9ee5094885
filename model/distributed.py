"""Data-parallel training across processes (torchrun / DistributedDataParallel).

With more than one GPU, launch `torchrun --nproc-per-node N -m webapp.cli train ...`:
every process trains on its own shard of each epoch, gradients are averaged by DDP, and
rank 0 alone validates and writes checkpoints. Decisions that end training (time budget,
early stopping) are agreed across ranks so no process waits forever. The same path runs on
CPU with the gloo backend, which is how it is tested.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> DistContext:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def init_from_environment() -> DistContext:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return DistContext.current()


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of `items`, padded so every rank takes the same number of steps."""
    items = list(items)
    if not ctx.active or not items:
        return items
    per_rank = -(-len(items) // ctx.world_size)
    padded = (items * (per_rank * ctx.world_size // len(items) + 1))[: per_rank * ctx.world_size]
    return padded[ctx.rank :: ctx.world_size]


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if `flag` is true on any rank."""
    if not ctx.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def from_main(value: float, ctx: DistContext) -> float:
    """Rank 0's `value`, on every rank."""
    if not ctx.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if ctx.active:
        dist.barrier()


class _Step(nn.Module):
    """Returns plain tensors so DDP can find the graph (the heads return a dataclass)."""

    def __init__(self, heads: nn.Module) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, frozen, **kwargs):  # type: ignore[no-untyped-def]
        out = self.heads(frozen, **kwargs)
        return out.heatmap_logits, out.mask_logits, out.decoder_logits


def step_module(heads: nn.Module, ctx: DistContext) -> nn.Module:
    """The module a training step calls: DDP-wrapped when distributed."""
    module = _Step(heads)
    if not ctx.active:
        return module
    device = next(heads.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    # Click prompts are simulated for some batches only, so some parameters go unused.
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=True
    )
