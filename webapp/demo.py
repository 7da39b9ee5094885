"""`heatprompt demo`: the full app on embedded defaults, offline, in a few minutes.

Prepares (once, then reused) a synthetic dataset, an `effnet_lite0` model trained on it
for about a minute and a half, and a batch of incoming images; then starts the app with
SQLite and files under the data directory, ingests and predicts the incoming images so the
review queue is full, and prints the demo login.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from model.images import IMAGE_EXTENSIONS
from model.pipeline import train_from_folders
from model.synth import write_dataset
from storage.errors import StorageError
from webapp.app import create_app
from webapp.settings import load_settings

DEMO_TRAIN_MINUTES = 1.5
DEMO_USER = "demo"
DEMO_PASSWORD = "heatprompt-demo"


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps its files under the data directory."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "demo" / "dataset"

    @property
    def incoming(self) -> Path:
        return self.root / "demo" / "incoming"

    @property
    def checkpoint(self) -> Path:
        return self.root / "models" / "demo-effnet_lite0.pt"


def prepare(paths: DemoPaths) -> None:
    """Create the demo dataset, model and incoming images unless they exist already.

    Reproducible: `heatprompt synth --out DIR --seed 0 --count 160` and
    `heatprompt train --data DIR --out CKPT --max-minutes 1.5` make the same files.
    """
    if not (paths.dataset / "test").is_dir():
        write_dataset(paths.dataset, seed=0, size=256, count=160)
    if not paths.incoming.is_dir():
        staging = paths.root / "demo" / "incoming-src"
        write_dataset(staging, seed=1, size=256, count=24, progress=False)
        paths.incoming.mkdir(parents=True, exist_ok=True)
        for img in sorted(staging.glob("test/*/*.png")):
            img.rename(paths.incoming / f"{img.parent.name}-{img.name}")
    if not paths.checkpoint.is_file():
        print(f"training the demo model for up to {DEMO_TRAIN_MINUTES} minutes …")
        train_from_folders(
            data=[paths.dataset],
            out=paths.checkpoint,
            max_minutes=DEMO_TRAIN_MINUTES,
            epochs=60,
            device="auto",
            cache_dir=paths.root / "cache" / "features",
        )


def run_demo(data_dir: Path, *, host: str, port: int, serve: bool = True) -> int:
    """Prepare the demo, start the app with a full queue and serve until interrupted."""
    paths = DemoPaths(Path(data_dir))
    prepare(paths)
    settings = load_settings(data_dir=paths.root, checkpoint=paths.checkpoint, host=host, port=port)
    app = create_app(settings, scheduler=True)
    services = app.services
    with contextlib.suppress(StorageError):  # the demo user exists after the first run
        services.accounts.add_user(DEMO_USER, DEMO_PASSWORD, role="admin")
    incoming = sorted(p for p in paths.incoming.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    for path in incoming:
        services.ingest(path.read_bytes(), path.name, source="demo")
    services.wait_for_predictions()
    counts = services.repo.images.counts()
    print(f"demo ready: {counts['images']} images, {counts['pending']} waiting for review")
    if not serve:
        app.stop()
        return 0
    print(f"open http://{host}:{port}/ and sign in as {DEMO_USER} / {DEMO_PASSWORD}")
    try:
        uvicorn.run(app.api, host=host, port=port, log_level="warning")
    finally:
        app.stop()
    return 0
