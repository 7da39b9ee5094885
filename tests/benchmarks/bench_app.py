"""App figures: server time to show an already-seen image (cache hit), time to the first
prediction of a new image, and API ingest throughput one-by-one versus 8 in flight.

Run with `make bench`. Serves a real app on localhost with an `effnet_lite0` model at
256 px (fresh heads: speed does not depend on training).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image

from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.visualize import overlay
from tests.webapp_fixtures import free_port
from webapp.app import create_app
from webapp.settings import Settings


def _png(seed: int, size: int = 512) -> bytes:
    img = np.random.default_rng(seed).integers(60, 200, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        ckpt = save_checkpoint(
            root / "m.pt", new_bundle(build_encoder("effnet_lite0"), label_sigma=4.0)
        )
        app = create_app(Settings(data_dir=root / "data", checkpoint=ckpt, database_url=None))
        services = app.services
        services.accounts.add_user("bench", "bench-password", role="admin")
        headers = {"Authorization": f"Bearer {services.accounts.issue_token('bench')}"}
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app.api, port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/api"
        client = httpx.Client(headers=headers, timeout=60)

        # Time to first prediction: upload, then poll until the prediction is stored.
        firsts = []
        for i in range(5):
            start = time.perf_counter()
            image_id = client.post(
                f"{url}/images", files={"file": ("a.png", _png(1000 + i))}
            ).json()["id"]
            while client.get(f"{url}/images/{image_id}").json()["prediction"] is None:
                time.sleep(0.005)
            firsts.append(time.perf_counter() - start)

        # Showing an already-seen image: what the review page computes for it.
        def show(image_id: int) -> None:
            rgb = services.image_rgb(image_id)
            overlay(rgb, services.heatmap(image_id), services.mask(image_id))
            services.image_view(image_id)

        def refine(image_id: int) -> None:  # cache hit: heads + decoder only
            services.predict_image(image_id, store=False)

        shows, refines = [], []
        for _ in range(20):
            t = time.perf_counter()
            show(image_id)
            shows.append(time.perf_counter() - t)
            t = time.perf_counter()
            refine(image_id)
            refines.append(time.perf_counter() - t)

        blobs = [_png(i) for i in range(2 * args.images)]
        start = time.perf_counter()
        for i in range(args.images):
            client.post(f"{url}/images", files={"file": (f"{i}.png", blobs[i])})
        services.wait_for_predictions(timeout=600)
        serial = args.images / (time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: client.post(f"{url}/images", files={"file": (f"{i}.png", blobs[i])}),
                    range(args.images, 2 * args.images),
                )
            )
        services.wait_for_predictions(timeout=600)
        parallel = args.images / (time.perf_counter() - start)
        server.should_exit = True
        app.stop()
    result = {
        "show_seen_image_ms_p50": 1000 * statistics.median(shows),
        "refine_cached_ms_p50": 1000 * statistics.median(refines),
        "first_prediction_ms_p50": 1000 * statistics.median(firsts),
        "ingest_per_s_one_by_one": serial,
        "ingest_per_s_8_in_flight": parallel,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"app (512 px uploads, effnet_lite0 @ 256): show seen image "
        f"{result['show_seen_image_ms_p50']:.1f} ms p50, re-predict from cache "
        f"{result['refine_cached_ms_p50']:.1f} ms p50, first prediction of a new image "
        f"{result['first_prediction_ms_p50']:.0f} ms p50; ingest+predict "
        f"{serial:.1f} img/s one by one vs {parallel:.1f} img/s with 8 in flight"
    )


if __name__ == "__main__":
    main()
