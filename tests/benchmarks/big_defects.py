"""Do defects larger than a tile come out whole? IoU of checkpoints on 1024² images whose
defects scale with the image (the generator's relative mode: dents, blobs and chips up
to about 330 px across, larger than a 256-px tile), split by whether the defect's
bounding box is larger than the model's tile. Run after `quality --large`:

    python -m tests.benchmarks.big_defects --checkpoint WORK/model-fit.pt \
        --checkpoint WORK/model-scale1.pt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from model.checkpoint import load_bundle
from model.dataset import discover
from model.geometry import scale_label
from model.hashing import sha256_bytes
from model.images import decode_image, read_mask
from model.metrics import iou
from model.predict import Predictor
from tests.benchmarks.unseen_synth import write_unseen_dataset


def bbox_side(mask: np.ndarray) -> int:
    """The longer side of the mask's bounding box, in pixels."""
    ys, xs = np.nonzero(mask)
    return int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append", required=True)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="heatprompt-big-"))
    data = write_unseen_dataset(
        work / "big", seed=3000 + args.seed, count=args.count, size=args.size
    )
    samples = [s for s in discover(data) if s.mask_path is not None]
    print(f"{len(samples)} defective {args.size}² images, defects scaled with the image")
    for checkpoint in args.checkpoint:
        bundle = load_bundle(checkpoint)
        predictor = Predictor(bundle)
        tile = bundle.meta.input_size
        big, small, per_type = [], [], {}
        for s in samples:
            raw = s.image_path.read_bytes()
            image = decode_image(raw, name=str(s.image_path))
            assert s.mask_path is not None
            target = read_mask(s.mask_path, shape=image.shape[:2])
            pred = predictor.predict(image, sha256=sha256_bytes(raw))
            value = iou(pred.mask, target)
            (big if bbox_side(target) > tile else small).append(value)
            per_type.setdefault(s.defect_type, []).append(value)
        label = f"{checkpoint.name} (scale {scale_label(bundle.meta.pixel_scale)}, tile {tile})"
        print(label)
        for name, values in (("larger than a tile", big), ("within a tile", small)):
            mean = f"{np.mean(values):.3f}" if values else "n/a"
            print(f"  {name:18s} n={len(values):3d} IoU {mean}")
        for kind, values in sorted(per_type.items()):
            print(f"  {kind:14s} n={len(values):3d} IoU {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
