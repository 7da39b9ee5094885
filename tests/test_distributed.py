"""Data-parallel training on CPU: the torchrun path with the gloo backend, world size 2."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.distributed import DistContext, shard


def test_shards_are_disjoint_padded_and_complete() -> None:
    items = list(range(7))
    parts = [shard(items, DistContext(r, 3)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]  # padded so every rank takes 3 steps
    assert set().union(*map(set, parts)) == set(items)
    assert shard(items, DistContext()) == items


def _rank_main(rank: int, root: str, data: str) -> None:
    from model.checkpoint import new_bundle
    from model.dataset import discover, load_samples, split
    from model.encoders import build_encoder
    from model.train import TrainConfig, seed_everything, train

    dist.init_process_group(
        "gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=2
    )
    torch.set_num_threads(1)
    train_s, val_s = split(discover(data), val_fraction=0.25, seed=0)
    seed_everything(0)
    bundle = new_bundle(build_encoder("sam_tiny", input_size=64), label_sigma=2.0)
    result = train(
        bundle,
        load_samples(train_s, 64),
        load_samples(val_s, 64),
        TrainConfig(epochs=2, batch_size=4, seed=rank),
        out=f"{root}/model.pt",
        progress=False,
    )
    torch.save(
        {"state": bundle.heads.trainable_state_dict(), "epochs": result.epochs_run},
        f"{root}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_ranks_train_in_lockstep(synth_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(str(tmp_path), str(synth_dir)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["epochs"] == r1["epochs"] == 2
    # Different seeds per rank, yet DDP keeps the weights identical on every rank.
    for key, value in r0["state"].items():
        assert torch.allclose(value, r1["state"][key], atol=1e-6), key
    assert (tmp_path / "model.pt").is_file()
