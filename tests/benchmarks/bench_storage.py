"""Storage figures on SQLite and PostgreSQL side by side: correction saves per second
(1 and 8 threads) and next-item latency with 10 000 images in the queue.

Run with `make bench`. PostgreSQL is the server at 127.0.0.1:5432 (database `test`,
override with HEATPROMPT_TEST_POSTGRES_URL); it is skipped, with a note, if none answers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, insert, text

from storage.blobs import BlobStore
from storage.engine import make_engine, sqlite_url
from storage.migrate import upgrade
from storage.repository import Repository
from storage.review_queue import QueueKey
from storage.schema import Image
from tests.storage_fixtures import POSTGRES_URL, postgres_available

W, H = 256, 256

ORDER = (QueueKey.uncertainty_desc, QueueKey.arrival)  # most uncertain first


def _fill(engine: Engine, n: int) -> None:
    rng = random.Random(0)
    rows = [
        {
            "sha256": hashlib.sha256(f"img{i}".encode()).hexdigest(),
            "width": W,
            "height": H,
            "format": "PNG",
            "size_bytes": 1000,
            "source": "bench",
            "holdout": False,
            "uncertainty": rng.random(),
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Image), rows)


def _bench(repo: Repository, n_queue: int) -> dict[str, float]:
    mask = np.zeros((H, W), bool)
    mask[100:120, 50:200] = True
    latencies = []
    leased = []
    for i in range(200):
        start = time.perf_counter()
        image = repo.reviews.next_for_review(f"r{i}", order=ORDER)
        latencies.append(time.perf_counter() - start)
        assert image is not None
        leased.append((image.id, f"r{i}"))
    start = time.perf_counter()
    for image_id, reviewer_name in leased:  # each by the reviewer who holds its lease
        repo.reviews.save_correction(image_id, author=reviewer_name, action="corrected", mask=mask)
    one_thread = len(leased) / (time.perf_counter() - start)

    def reviewer(n: int) -> int:
        for _ in range(25):
            image = repo.reviews.next_for_review(f"t{n}", order=ORDER)
            assert image is not None
            repo.reviews.save_correction(image.id, author=f"t{n}", action="corrected", mask=mask)
        return 25

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        done = sum(pool.map(reviewer, range(8)))
    eight_threads = done / (time.perf_counter() - start)
    latencies.sort()
    return {
        "queue": n_queue,
        "next_item_p50_ms": 1000 * statistics.median(latencies),
        "next_item_p99_ms": 1000 * latencies[int(0.99 * len(latencies)) - 1],
        "saves_per_s_1_thread": one_thread,
        "lease_and_save_per_s_8_threads": eight_threads,
    }


def run(kind: str, n: int, tmp: Path) -> dict[str, float] | str:
    if kind == "sqlite":
        engine = make_engine(sqlite_url(tmp / "bench.db"))
        cleanup = None
    else:
        if not postgres_available():
            return f"skipped: no PostgreSQL at {POSTGRES_URL}"
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(
            POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10
        )

        def cleanup() -> None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

    try:
        upgrade(engine)
        _fill(engine, n)
        return _bench(Repository(engine, BlobStore(tmp / f"blobs-{kind}")), n)
    finally:
        engine.dispose()
        if cleanup:
            cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {kind: run(kind, args.images, Path(tmp)) for kind in ("sqlite", "postgresql")}
    if args.json:
        print(json.dumps(results))
        return
    for kind, r in results.items():
        if isinstance(r, str):
            print(f"{kind:>10}: {r}")
            continue
        print(
            f"{kind:>10}: {r['queue']} queued; next item p50 {r['next_item_p50_ms']:.2f} ms, "
            f"p99 {r['next_item_p99_ms']:.2f} ms; saves {r['saves_per_s_1_thread']:.0f}/s "
            f"(1 thread), lease+save {r['lease_and_save_per_s_8_threads']:.0f}/s (8 threads)"
        )


if __name__ == "__main__":
    main()
