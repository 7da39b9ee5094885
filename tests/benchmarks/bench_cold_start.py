"""Cold start, end to end: a fresh data directory, no checkpoint, a line's own images.

Ingest known-good and unlabelled images from the independent generator
(`unseen_synth.py`) through the REST API; measure the zero-label anomaly scores (image and
pixel AUROC); label, as a simulated inspector, in the order the queue serves until the
first model is promoted (counting the defective images among the first ones served); then
evaluate the served model on further unseen images. Prints a table and one JSON line.

    python -m tests.benchmarks.bench_cold_start            # 20 good + 100 unlabelled
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from model.dataset import discover, load_samples
from model.evaluate import evaluate
from tests.benchmarks.unseen_synth import write_unseen_dataset
from tests.waiting import wait_for
from tests.webapp_fixtures import serve_app
from webapp.app import create_app
from webapp.settings import Settings

RANDOM_SHARE_OF_FIRST = 20  # "of the first N images served, how many were defective"


@dataclass(frozen=True)
class LineImage:
    """One image of the simulated line: its PNG bytes and its true mask."""

    name: str
    data: bytes
    mask: np.ndarray

    @property
    def defective(self) -> bool:
        return bool(self.mask.any())


def _read(path: Path) -> bytes:
    return path.read_bytes()


def line_images(root: Path, *, seed: int, good: int, defective: int, size: int) -> list[LineImage]:
    """`good` defect-free and `defective` defective images of the independent generator."""
    count = max(good * 5, round(defective / 0.8) + 1, 10)  # the generator makes 20 % good
    data = write_unseen_dataset(root, seed=seed, count=count, size=size)
    goods, bads = [], []
    for path in sorted((data / "test").glob("*/*.png")):
        kind = path.parent.name
        if kind == "good":
            goods.append(
                LineImage(f"{kind}-{path.name}", _read(path), np.zeros((size, size), bool))
            )
        else:
            mask_path = data / "ground_truth" / kind / f"{path.stem}_mask.png"
            mask = np.asarray(Image.open(mask_path)) > 0
            bads.append(LineImage(f"{kind}-{path.name}", _read(path), mask))
    if len(goods) < good or len(bads) < defective:
        raise RuntimeError("the generator made too few images of a kind")
    rng = np.random.default_rng(seed)
    picked_bad = [bads[i] for i in rng.permutation(len(bads))[:defective]]
    return goods[:good] + picked_bad


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def run_cold_start(
    work: Path,
    *,
    good: int = 20,
    unlabelled: int = 100,
    defective_share: float = 1 / 3,
    held_out: int = 150,
    first_model_labels: int = 20,
    min_defective: int = 3,
    train_minutes: float = 5.0,
    size: int = 256,
    seed: int = 0,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Run the whole cold start once and return its figures."""
    n_bad = round(unlabelled * defective_share)
    known_good = line_images(work / "good", seed=seed, good=good, defective=0, size=size)
    incoming = line_images(
        work / "incoming", seed=seed + 1, good=unlabelled - n_bad, defective=n_bad, size=size
    )
    order = np.random.default_rng(seed).permutation(len(incoming))
    incoming = [incoming[i] for i in order]  # the line does not sort its images
    settings = Settings(
        data_dir=work / "data",
        first_model_labels=first_model_labels,
        first_model_min_defective=min_defective,
        training={"max_minutes": train_minutes},
        hot_swap_seconds=1.0,
        retrain_check_minutes=60,
    )
    app = create_app(settings, ui=False, scheduler=True)
    services = app.services
    services.accounts.add_user("inspector", "inspector-password", role="inspector")
    headers = {"Authorization": f"Bearer {services.accounts.issue_token('inspector')}"}
    figures: dict[str, Any] = {"good": good, "unlabelled": unlabelled, "defective": n_bad}
    try:
        with (
            serve_app(app) as url,
            httpx.Client(base_url=url, headers=headers, timeout=600) as client,
        ):
            start = time.monotonic()
            for img in known_good:
                answer = client.post(
                    "/api/images", files={"file": (img.name, img.data)}, data={"label": "good"}
                )
                answer.raise_for_status()
            truth: dict[int, LineImage] = {}
            for img in incoming:
                answer = client.post("/api/images", files={"file": (img.name, img.data)})
                answer.raise_for_status()
                truth[answer.json()["id"]] = img

            def all_scored() -> bool:
                views = [client.get(f"/api/images/{i}").json() for i in truth]
                return all(v.get("anomaly") for v in views)

            wait_for(all_scored, "anomaly scores for every incoming image", timeout_s)
            figures["seconds_to_anomaly_scores"] = time.monotonic() - start
            figures.update(_anomaly_quality(services, truth))

            served: list[bool] = []
            kth_label_at = promoted_at = None
            labels = good
            while promoted_at is None and time.monotonic() - start < timeout_s:
                if client.get("/api/health").json()["served_model_version"] is not None:
                    promoted_at = time.monotonic()
                    break
                nxt = client.get("/api/queue/next")
                if nxt.status_code == 204:
                    time.sleep(1.0)  # everything labelled: wait for the first model
                    continue
                view = nxt.json()
                img = truth[view["id"]]
                served.append(img.defective)
                files = {"mask": ("m.png", _png(img.mask))} if img.defective else None
                data = {
                    "action": "corrected" if img.defective else "defect_free",
                    "based_on": view["state"],
                }
                client.post(
                    f"/api/images/{view['id']}/corrections", data=data, files=files
                ).raise_for_status()
                labels += 1
                if kth_label_at is None and labels >= first_model_labels:
                    defective_labels = sum(served)
                    if defective_labels >= min_defective:
                        kth_label_at = time.monotonic()
            first = served[:RANDOM_SHARE_OF_FIRST]
            figures["first_served"] = len(first)
            figures["defective_among_first_served"] = int(sum(first))
            figures["labels_until_promotion"] = len(served)
            if promoted_at is None:
                raise RuntimeError("no model was promoted within the time limit")
            figures["seconds_first_ingest_to_model"] = promoted_at - start
            figures["seconds_kth_label_to_model"] = (
                promoted_at - kth_label_at if kth_label_at is not None else None
            )
        figures.update(_first_model_quality(app, work, seed=seed, held_out=held_out, size=size))
    finally:
        app.stop()
    return figures


def _anomaly_quality(services: Any, truth: dict[int, LineImage]) -> dict[str, float]:
    """Image AUROC of the anomaly scores and pixel AUROC of the anomaly maps."""
    labels, scores, pixel_labels, pixel_scores = [], [], [], []
    for image_id, img in truth.items():
        view = services.image_view(image_id)
        labels.append(img.defective)
        scores.append(view["anomaly"]["score"])
        heat = services.heatmap(image_id, source="anomaly")
        pixel_labels.append(img.mask.ravel())
        pixel_scores.append(heat.ravel())
    return {
        "anomaly_image_auroc": float(roc_auc_score(labels, scores)),
        "anomaly_pixel_auroc": float(
            roc_auc_score(np.concatenate(pixel_labels), np.concatenate(pixel_scores))
        ),
    }


def _first_model_quality(
    app: Any, work: Path, *, seed: int, held_out: int, size: int
) -> dict[str, float]:
    """The promoted model's metrics on `held_out` further unseen images."""
    served = app.services.models.current
    bundle = served.predictor.bundle
    data = write_unseen_dataset(work / "held-out", seed=seed + 2, count=held_out, size=size)
    report = evaluate(
        bundle, load_samples(discover(data), bundle.encoder.input_size), ablation=False
    )
    return {
        "first_model_version": served.version_id,
        "first_model_miou": float(report["miou"]),
        "first_model_dice": float(report["dice"]),
        "first_model_empty_accuracy": float(report["empty_accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=20)
    parser.add_argument("--unlabelled", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=150)
    parser.add_argument("--first-model-labels", type=int, default=20)
    parser.add_argument("--train-minutes", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="heatprompt-cold-start-"))
    figures = run_cold_start(
        work,
        good=args.good,
        unlabelled=args.unlabelled,
        held_out=args.held_out,
        first_model_labels=args.first_model_labels,
        train_minutes=args.train_minutes,
        size=args.size,
        seed=args.seed,
    )
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
