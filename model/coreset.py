"""Greedy k-center coreset: a small memory bank that still covers every normal patch.

Nearest-neighbour search costs grow with the bank, and neighbouring patches of normal
images are near duplicates. The greedy k-center rule (Sener & Savarese, used by PatchCore)
repeatedly adds the patch farthest from those already chosen, so the coreset's worst-case
distance to any normal patch stays small. Distances are measured on a seeded random
projection to a few dimensions (Johnson–Lindenstrauss), which keeps the selection fast.

The greedy rule costs one pass over all points per centre, so a large bank (hundreds of
images) is split at random into parts of at most `part_size` points, each part gives its
share of the centres, and the union is the coreset: a composable k-center coreset
(Malkomes et al., NeurIPS 2015) at a fraction of the cost, since random parts are
down-sampled copies of the same distribution.
"""

from __future__ import annotations

import numpy as np
import torch

PROJECTION_DIM = 64
PART_SIZE = 32768


def random_projection(dim_in: int, dim_out: int, *, seed: int) -> np.ndarray:
    """(dim_in, dim_out) float32 Gaussian projection, scaled to keep distances on average."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_out)).astype(np.float32)


def k_center_greedy(
    points: np.ndarray,
    k: int,
    *,
    seed: int,
    projection_dim: int = PROJECTION_DIM,
    part_size: int = PART_SIZE,
) -> np.ndarray:
    """Indices (sorted) of `k` points of `points` (N, D) chosen by greedy k-center.

    Everything random (projection, first centres, parts) is drawn from `seed`.
    """
    n = len(points)
    if k <= 0:
        raise ValueError(f"coreset size must be positive, got {k}")
    if k >= n:
        return np.arange(n)
    x = points.astype(np.float32, copy=False)
    if x.shape[1] > projection_dim:
        x = x @ random_projection(x.shape[1], projection_dim, seed=seed)
    rng = np.random.default_rng(seed)
    parts = -(-n // part_size)
    if parts == 1:
        return _greedy(x, k, first=int(rng.integers(n)))
    order = rng.permutation(n)
    chosen = []
    for p, members in enumerate(np.array_split(order, parts)):
        share = k * (p + 1) // parts - k * p // parts  # shares sum to k exactly
        local = _greedy(x[np.sort(members)], share, first=int(rng.integers(len(members))))
        chosen.append(np.sort(members)[local])
    return np.sort(np.concatenate(chosen))


def _greedy(x: np.ndarray, k: int, *, first: int) -> np.ndarray:
    """Greedy k-center on (N, d) float32 points from centre `first`; sorted indices."""
    n = len(x)
    if k >= n:
        return np.arange(n)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    norms = (xt * xt).sum(dim=1)
    chosen = np.empty(k, dtype=np.int64)
    idx = first
    min_dist = torch.full((n,), float("inf"))
    for j in range(k):
        chosen[j] = idx
        centre = xt[idx]
        # ||x - c||² = ||x||² - 2 x·c + ||c||²: one matrix-vector product per centre.
        dist = norms - 2.0 * (xt @ centre) + norms[idx]
        torch.minimum(min_dist, dist, out=min_dist)
        min_dist[idx] = -1.0  # never pick a centre twice
        idx = int(torch.argmax(min_dist))
    return np.sort(chosen)
