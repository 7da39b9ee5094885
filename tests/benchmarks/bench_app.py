"""App figures: server time to show an already-seen image (cache hit), time to the first
prediction of a new image, and API ingest throughput one-by-one versus 8 in flight.

Then ingest throughput (upload + background prediction, images/s) by serving setting, each
on a fresh app and cold feature cache: one worker predicting batches of 1 (the old
one-image worker) versus `prediction_batch_size` 8, one worker versus the default workers
(one per core, `prediction_workers`), and all of a trained model's test-time views versus
`prediction_views` 1. That model carries every view, as training calibrates it.

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

from model.augment import TRANSFORMS
from model.checkpoint import new_bundle, save_checkpoint
from model.encoders import build_encoder
from model.visualize import overlay
from tests.webapp_fixtures import free_port
from webapp.app import Application, create_app
from webapp.settings import Settings


def _png(seed: int, size: int = 512) -> bytes:
    img = np.random.default_rng(seed).integers(60, 200, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _serve(
    settings: Settings, ui: bool = True
) -> tuple[Application, uvicorn.Server, httpx.Client, str]:
    """A launched app with an admin token: the app, its server, a client and the API URL."""
    app = create_app(settings, ui=ui)
    services = app.services
    services.accounts.add_user("bench", "bench-password", role="admin")
    headers = {"Authorization": f"Bearer {services.accounts.issue_token('bench')}"}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.api, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return app, server, httpx.Client(headers=headers, timeout=60), f"http://127.0.0.1:{port}/api"


def _ingest_rate(
    app: Application, client: httpx.Client, url: str, blobs: list[bytes], in_flight: int
) -> float:
    """Images/s from the first upload until every upload has its prediction stored."""

    def post(i: int) -> None:
        client.post(f"{url}/images", files={"file": (f"{i}.png", blobs[i])}).raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(post, range(len(blobs))))
    if not app.services.wait_for_predictions(timeout=600):
        raise RuntimeError("background predictions did not finish")
    return len(blobs) / (time.perf_counter() - start)


# (prediction_batch_size, prediction_views, prediction_workers): the old one-image worker,
# one batching worker, the default workers, and those serving the first view only.
SERVING = ((1, None, 1), (8, None, 1), (8, None, None), (8, 1, None))


def _serving_key(batch: int, views: int | None, workers: int | None, in_flight: int) -> str:
    return (
        f"ingest_per_s_batch{batch}_views{views or 'all'}_workers{workers or 'auto'}_"
        f"{in_flight}_in_flight"
    )


def _serving_label(batch: int, views: int | None, workers: int | None) -> str:
    return f"batch {batch}, {views or 'all'} view(s), {workers or 'default'} worker(s)"


def serving_settings(root: Path, images: int, repeats: int) -> dict[str, float]:
    """Ingest images/s by serving setting (`SERVING`), one by one and with 8 uploads in
    flight: the median of `repeats` rounds. Every setting runs on its own app, all of them
    at once, and the rounds interleave them, so a load that comes and goes on the machine
    falls on every setting alike; fresh images each time keep every feature cache cold."""
    torch.manual_seed(0)
    bundle = new_bundle(build_encoder("effnet_lite0"), label_sigma=4.0)
    bundle.meta.test_time_views = list(TRANSFORMS)  # as a trained model serves them
    ckpt = save_checkpoint(root / "all-views.pt", bundle)
    served = []
    for batch, views, workers in SERVING:
        settings = Settings(
            data_dir=root / f"data-batch{batch}-views{views}-workers{workers}",
            checkpoint=ckpt,
            database_url=None,
            prediction_batch_size=batch,
            prediction_views=views,
            prediction_workers=workers,
        )
        served.append(_serve(settings, ui=False))
        if served[-1][0].services.models.views != views:
            raise RuntimeError("prediction_views does not reach the model server")
    seeds = iter(range(10_000, 10**9))
    rates: dict[str, list[float]] = {}
    try:
        for app, _, client, url in served:  # warm-up: first calls, lazily built modules
            _ingest_rate(app, client, url, [_png(next(seeds)) for _ in range(2)], 1)
        for _ in range(repeats):
            for arm, (app, _, client, url) in zip(SERVING, served, strict=True):
                for in_flight in (1, 8):
                    blobs = [_png(next(seeds)) for _ in range(images)]
                    rate = _ingest_rate(app, client, url, blobs, in_flight)
                    rates.setdefault(_serving_key(*arm, in_flight), []).append(rate)
    finally:
        for app, server, _, _ in served:
            server.should_exit = True
            app.stop()
    return {key: statistics.median(values) for key, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--serving-images", type=int, default=16, help="per serving round")
    parser.add_argument("--serving-repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        ckpt = save_checkpoint(
            root / "m.pt", new_bundle(build_encoder("effnet_lite0"), label_sigma=4.0)
        )
        settings = Settings(data_dir=root / "data", checkpoint=ckpt, database_url=None)
        app, server, client, url = _serve(settings)
        services = app.services

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
        serial = _ingest_rate(app, client, url, blobs[: args.images], 1)
        parallel = _ingest_rate(app, client, url, blobs[args.images :], 8)
        server.should_exit = True
        app.stop()
        serving = serving_settings(root, args.serving_images, args.serving_repeats)
    result = {
        "show_seen_image_ms_p50": 1000 * statistics.median(shows),
        "refine_cached_ms_p50": 1000 * statistics.median(refines),
        "first_prediction_ms_p50": 1000 * statistics.median(firsts),
        "ingest_per_s_one_by_one": serial,
        "ingest_per_s_8_in_flight": parallel,
        **serving,
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
    print(
        f"ingest+predict by serving setting, {len(TRANSFORMS)}-view model, img/s (median of "
        f"{args.serving_repeats} interleaved rounds of {args.serving_images} images):"
    )
    for arm in SERVING:
        one, eight = (result[_serving_key(*arm, n)] for n in (1, 8))
        print(
            f"  {_serving_label(*arm)}: {one:.2f} one by one, "
            f"{eight:.2f} with 8 in flight ({eight / one:.2f}x)"
        )
    base, batched, workers, one_view = (result[_serving_key(*arm, 8)] for arm in SERVING)
    print(
        f"  with 8 in flight: batch 8 vs batch 1 {batched / base:.2f}x, default workers "
        f"vs the old one-image worker {workers / base:.2f}x, 1 view vs all "
        f"{one_view / workers:.2f}x"
    )


if __name__ == "__main__":
    main()
