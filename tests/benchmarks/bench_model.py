"""Model speed figures: encoder and heads per image, and a training epoch with the feature
cache versus re-encoding every step, for effnet_lite0 and a sam_vit_b-sized encoder.

Run with `make bench`. Random weights are used for the sam_vit_b-sized encoder (timing
only). Prints one line per figure; `--json` prints them as one object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from model.checkpoint import ModelBundle, new_bundle
from model.encoders import EncoderOutput, build_encoder
from model.losses import LossWeights, heatprompt_loss


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _epoch(
    bundle: ModelBundle, images: torch.Tensor, batch: int, cached: EncoderOutput | None
) -> float:
    heads = bundle.heads.train()
    params = [p for p in heads.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    size = bundle.encoder.input_size
    start = time.perf_counter()
    for b0 in range(0, images.shape[0], batch):
        chunk = images[b0 : b0 + batch]
        if cached is None:
            frozen = bundle.encoder.encode(chunk)
        else:
            frozen = EncoderOutput.stack([cached.select(i) for i in range(b0, b0 + len(chunk))])
            frozen = frozen.to("cpu", torch.float32)
        out = heads(frozen)
        zeros = torch.zeros(len(chunk), 1, size, size)
        loss = heatprompt_loss(
            out.heatmap_logits,
            out.mask_logits,
            zeros,
            zeros,
            LossWeights(),
            decoder_logits=out.decoder_logits,
        )
        optim.zero_grad()
        loss["total"].backward()
        optim.step()
    return time.perf_counter() - start


def bench_encoder(name: str, *, size: int, n_images: int, batch: int, pretrained: bool) -> dict:
    torch.manual_seed(0)
    encoder = build_encoder(name, input_size=size, pretrained=pretrained)
    bundle = new_bundle(encoder, label_sigma=4.0)
    images = torch.randint(0, 255, (n_images, size, size, 3), dtype=torch.uint8)
    one = images[:batch]
    enc_s = _timed(lambda: encoder.encode(one), 2) / batch
    frozen = encoder.encode(one)
    bundle.heads.eval()

    def heads_only() -> None:
        with torch.no_grad():
            bundle.heads(frozen)

    heads_s = _timed(heads_only, 3) / batch
    cache = EncoderOutput.stack([encoder.encode(images[i : i + 1]) for i in range(n_images)])
    cache = cache.to("cpu", torch.float16)
    cached_s = _epoch(bundle, images, batch, cache)
    reencode_s = _epoch(bundle, images, batch, None)
    return {
        "encoder": name,
        "input_size": size,
        "images_per_epoch": n_images,
        "encoder_ms_per_image": 1000 * enc_s,
        "heads_decoder_ms_per_image": 1000 * heads_s,
        "epoch_cached_s": cached_s,
        "epoch_reencode_s": reencode_s,
        "cache_speedup": reencode_s / cached_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = [
        bench_encoder("effnet_lite0", size=256, n_images=32, batch=8, pretrained=True),
        bench_encoder("sam_vit_b", size=1024, n_images=4, batch=2, pretrained=False),
    ]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"device: cpu, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for r in rows:
        print(
            f"{r['encoder']:>13} @ {r['input_size']}px: encoder {r['encoder_ms_per_image']:.1f} "
            f"ms/img, heads+decoder {r['heads_decoder_ms_per_image']:.1f} ms/img, epoch of "
            f"{r['images_per_epoch']} imgs: cached {r['epoch_cached_s']:.2f} s vs re-encode "
            f"{r['epoch_reencode_s']:.2f} s → cache {r['cache_speedup']:.1f}× faster"
        )


if __name__ == "__main__":
    main()
