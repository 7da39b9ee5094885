"""`heatprompt demo`: an offline first look at the model, on embedded defaults.

Prepares (once) a synthetic dataset, a small `effnet_lite0` model trained on it for about
a minute and a batch of incoming images, then serves a Gradio page that shows each
image's heatmap overlay and mask and predicts uploaded images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.checkpoint import ModelBundle, load_bundle
from model.images import IMAGE_EXTENSIONS, read_image
from model.pipeline import train_from_folders
from model.predict import Prediction, Predictor
from model.synth import write_dataset
from model.visualize import colorize_heatmap, overlay

log = logging.getLogger(__name__)

DEMO_TRAIN_MINUTES = 1.5
BACKBONE_NOTE = (
    "Backbone: **effnet_lite0** — a frozen ImageNet EfficientNet-Lite0 with a trained neck, "
    "heads and SAM-architecture decoder (the offline default). Full SAM needs Meta's "
    "checkpoint: `heatprompt weights download sam_vit_b`, then train with "
    "`--encoder sam_vit_b --sam-checkpoint PATH`."
)


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


def prepare(paths: DemoPaths) -> ModelBundle:
    """Create the demo dataset, model and incoming images unless they exist already."""
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
    return load_bundle(paths.checkpoint)


def _describe(pred: Prediction) -> str:
    verdict = "defect" if pred.is_defective else "no defect"
    return (
        f"**{verdict}** — defect score {pred.defect_score:.3f}, "
        f"uncertainty {pred.uncertainty:.3f} (mask threshold {pred.threshold:.2f})"
    )


def build_ui(predictor: Predictor, incoming: list[Path]):  # type: ignore[no-untyped-def]
    """The demo page: a gallery of incoming images, a detail view, and an upload box."""
    import gradio as gr

    images = [read_image(p) for p in incoming]
    preds = predictor.predict_many(images)
    tiles = [
        (overlay(im, p.heatmap, p.mask), f"{path.name} · {p.defect_score:.2f}")
        for path, im, p in zip(incoming, images, preds, strict=True)
    ]

    def detail(image: np.ndarray, pred: Prediction):  # type: ignore[no-untyped-def]
        return (
            overlay(image, pred.heatmap, pred.mask),
            colorize_heatmap(pred.heatmap),
            (pred.mask.astype(np.uint8) * 255),
            _describe(pred),
        )

    def on_select(evt: gr.SelectData):  # type: ignore[no-untyped-def]
        return detail(images[evt.index], preds[evt.index])

    def on_upload(image: np.ndarray | None):  # type: ignore[no-untyped-def]
        if image is None:
            return None, None, None, "Upload an image to see its heatmap and mask."
        return detail(image, predictor.predict(image))

    with gr.Blocks(title="HeatPrompt demo") as ui:
        gr.Markdown("# HeatPrompt — heatmap-prompted SAM for surface defects")
        gr.Markdown(BACKBONE_NOTE)
        gallery = gr.Gallery(
            value=tiles,
            label="Incoming images (heatmap overlay, mask outline)",
            columns=6,
            height=360,
            elem_id="incoming",
        )
        with gr.Row():
            upload = gr.Image(type="numpy", label="Try your own image", elem_id="upload")
            out_overlay = gr.Image(label="Overlay", elem_id="overlay")
            out_heat = gr.Image(label="Heatmap", elem_id="heatmap")
            out_mask = gr.Image(label="Mask", elem_id="mask")
        summary = gr.Markdown(_describe(preds[0]) if preds else "", elem_id="summary")
        outputs = [out_overlay, out_heat, out_mask, summary]
        gallery.select(on_select, None, outputs)
        upload.change(on_upload, upload, outputs)
        if images:
            ui.load(lambda: detail(images[0], preds[0]), None, outputs)
    return ui


def run_demo(data_dir: Path, *, host: str, port: int, serve: bool = True) -> int:
    """Prepare the demo and (unless `serve` is False) serve it until interrupted."""
    paths = DemoPaths(Path(data_dir))
    bundle = prepare(paths)
    incoming = sorted(p for p in paths.incoming.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not serve:
        print(f"demo ready: {len(incoming)} incoming images, model {paths.checkpoint}")
        return 0
    ui = build_ui(Predictor(bundle), incoming)
    print(f"HeatPrompt demo on http://{host}:{port}")
    ui.launch(server_name=host, server_port=port)
    return 0
