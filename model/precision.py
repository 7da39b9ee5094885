"""Reduced-precision arithmetic where the hardware does it natively.

float16 on CUDA; bfloat16 on CPUs with native bfloat16 instructions (AVX512-BF16, AMX),
where oneDNN runs the encoder's convolutions about twice as fast as in float32; nothing
elsewhere, where emulating it would be slower. Predictions and training steps follow this
rule; a training run's encoder passes and validation stay float32 (`model.train.train`).
"""

from __future__ import annotations

import contextlib

import torch


def reduced_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The reduced-precision type for `device`, or None where it would not pay (or when
    not `enabled`)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def precision_name(device: torch.device, enabled: bool = True) -> str:
    """The arithmetic predictions on `device` use: 'bfloat16', 'float16' or 'float32'."""
    dtype = reduced_dtype(device, enabled)
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def reduced_precision(
    device: torch.device, enabled: bool = True
) -> contextlib.AbstractContextManager[object]:
    """Autocast to `reduced_dtype(device)` inside the block when `enabled` and the device
    has one; float32 otherwise. Autocast is per thread: enter it in the thread computing."""
    dtype = reduced_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
