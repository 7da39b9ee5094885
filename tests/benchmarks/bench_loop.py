"""Active-learning loop figures: swap time (load + smoke test + swap), request latency
p50/p99 before versus during swaps (measured in one run), and the wall time of one
retraining over 200 corrections on CPU with the feature cache.

Run with `make bench`. Uses `effnet_lite0` at 256 px with fresh heads.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.synth import DEFECT_TYPES, make_surface
from tests.webapp_fixtures import free_port
from webapp.app import create_app
from webapp.retraining import RetrainConfig, run_retraining
from webapp.settings import Settings


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return 1000 * statistics.median(ordered), 1000 * ordered[max(0, int(0.99 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corrections", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpts = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            ckpts.append(
                save_checkpoint(
                    root / f"v{seed}.pt", new_bundle(build_encoder("effnet_lite0"), label_sigma=4.0)
                )
            )
        settings = Settings(data_dir=root / "data", checkpoint=ckpts[0], database_url=None)
        app = create_app(settings, ui=False, watch=False)
        services = app.services
        services.accounts.add_user("bench", "bench-password", role="inspector")
        token = services.accounts.issue_token("bench")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app.api, port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        image, _ = make_surface(np.random.default_rng(0), 256, "scratch")
        payload = _png(image)
        latencies: dict[str, list[float]] = {"before": [], "during": []}
        phase = ["before"]
        stop = threading.Event()
        failures = [0]

        def client() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    r = c.post(
                        f"http://127.0.0.1:{port}/api/predict", files={"file": ("x.png", payload)}
                    )
                    latencies[phase[0]].append(time.perf_counter() - t)
                    failures[0] += r.status_code != 200

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(8)
        phase[0] = "during"
        swaps = []
        for i in range(6):
            t = time.perf_counter()
            services.models.load(ckpts[(i + 1) % 2], 100 + i)  # load + smoke test + swap
            swaps.append(time.perf_counter() - t)
            time.sleep(0.5)
        stop.set()
        thread.join()
        server.should_exit = True

        rng = np.random.default_rng(1)
        kinds = [*DEFECT_TYPES, None]
        for i in range(args.corrections):
            img, mask = make_surface(rng, 256, kinds[i % len(kinds)])
            # Straight into storage: the labels, not background predictions, are measured here.
            image_id = services.repo.images.ingest_image(
                _png(img), width=256, height=256, format="PNG"
            ).id
            services.repo.reviews.save_correction(
                image_id,
                author="bench",
                action="corrected" if mask.any() else "defect_free",
                mask=mask if mask.any() else None,
            )
        run_id, _ = services.repo.runs.enqueue_training_run(trigger="bench")
        t = time.perf_counter()
        run_retraining(
            services.repo,
            run_id,
            models_dir=settings.data_dir / "models",
            cache_dir=settings.feature_cache_dir,
            config=RetrainConfig(epochs=args.epochs, max_minutes=60),
        )
        retrain_s = time.perf_counter() - t
        run = services.repo.runs.get_training_run(run_id)
        app.stop()
    before = _percentiles(latencies["before"])
    during = _percentiles(latencies["during"])
    result = {
        "swap_ms_median": 1000 * statistics.median(swaps),
        "predict_p50_ms_before": before[0],
        "predict_p99_ms_before": before[1],
        "predict_p50_ms_during": during[0],
        "predict_p99_ms_during": during[1],
        "failed_requests": failures[0],
        "retrain_corrections": run.corrections_used,
        "retrain_epochs": args.epochs,
        "retrain_wall_s": retrain_s,
        "retrain_status": run.status.value,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"loop: swap {result['swap_ms_median']:.0f} ms (load + smoke test + swap, median of 6);"
        f" /api/predict p50/p99 {before[0]:.0f}/{before[1]:.0f} ms before vs "
        f"{during[0]:.0f}/{during[1]:.0f} ms during swaps, {failures[0]} failed; retrain over "
        f"{run.corrections_used} corrections ({args.epochs} epochs, CPU, feature cache): "
        f"{retrain_s:.0f} s ({run.status.value})"
    )


if __name__ == "__main__":
    main()
