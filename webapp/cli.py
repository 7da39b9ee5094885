"""The `heatprompt` command line.

Every user-fixable problem (bad image, wrong checkpoint, empty folder, missing SAM file)
ends with one line `heatprompt: error: <what, naming the file>` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from model.errors import HeatPromptError
from model.geometry import parse_scale

EXIT_USER_ERROR = 2


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic MVTec-layout defect dataset")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--count", type=int, default=200, help="number of images")
    p.set_defaults(func=cmd_synth)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from model.encoders import ENCODER_NAMES

    p = sub.add_parser("train", help="train the heads on one or more datasets")
    p.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="dataset folder (MVTec-AD or images/+masks/); repeatable",
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--encoder", choices=ENCODER_NAMES, default="effnet_lite0")
    p.add_argument("--sam-checkpoint", type=Path, help="Meta's SAM weights for sam_vit_*")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    p.add_argument(
        "--input-size",
        type=int,
        help="tile side in pixels: 256, 384, 512, 1024 (default per encoder)",
    )
    p.add_argument(
        "--scale",
        type=parse_scale,
        default="auto",
        help="pixel scale the tiles are cut at: 1.0 native pixels, 0.5 half resolution, "
        "'fit' to squash each image into one tile (small images only); default 'auto': fit "
        "when every image is about one tile, else 1.0",
    )
    p.add_argument(
        "--type-head",
        choices=("pixel", "region"),
        default="pixel",
        help="defect-type head of a typed dataset: a per-pixel class map (default) or a "
        "classifier of region descriptors (an encoder pass per region)",
    )
    p.add_argument(
        "--tiles-per-image",
        type=int,
        default=6,
        help="training crops per image larger than a tile (defect-biased)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        help="pixels neighbouring tiles share at prediction (default a quarter tile; "
        "less is fewer tiles, faster)",
    )
    p.add_argument(
        "--test-time-views",
        type=int,
        help="predictions average the first N of 6 flips/rotations (default 6; 1 is fastest)",
    )
    p.add_argument("--cache-dir", type=Path, help="feature cache folder (default: beside --out)")
    p.add_argument(
        "--patience",
        type=int,
        default=15,
        help="stop after this many epochs without validation improvement",
    )
    p.set_defaults(func=cmd_train)


def _add_float32(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--float32",
        action="store_true",
        help="predict in float32 even where the device has a faster reduced precision "
        "(bfloat16 on CPUs with native support, float16 on CUDA)",
    )


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on every image of a dataset")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sam-checkpoint", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_float32(p)
    p.set_defaults(func=cmd_eval)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write heatmap, mask and overlay for images")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sam-checkpoint", type=Path)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--workers",
        type=int,
        help="compute threads on a CPU, tile batches side by side (default: one per core, "
        "at most 4; 0: the calling thread alone)",
    )
    _add_float32(p)
    p.add_argument("images", type=Path, nargs="+")
    p.set_defaults(func=cmd_predict)


def _add_weights(sub: argparse._SubParsersAction) -> None:
    from model.weights import OFFICIAL_WEIGHTS

    p = sub.add_parser("weights", help="manage SAM weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    d = wsub.add_parser("download", help="download Meta's official SAM checkpoint")
    d.add_argument("name", choices=sorted(OFFICIAL_WEIGHTS))
    d.add_argument("--out", type=Path, default=Path("weights"), help="folder to write into")
    d.add_argument("--url", help="mirror URL of the same file (checked against the same sha256)")
    d.set_defaults(func=cmd_weights_download)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="prepare the offline demo and start the app")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--prepare-only", action="store_true", help="prepare, do not serve")
    p.set_defaults(func=cmd_demo)


def _add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema migrations")
    dsub = p.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="migrate the schema up (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    down = dsub.add_parser(
        "downgrade", help="migrate the schema down to REVISION (deletes tables and their rows)"
    )
    down.add_argument("revision", help="target revision, e.g. 0001, or base for an empty database")
    down.add_argument("--yes", action="store_true", help="do not ask for a typed confirmation")
    for q in (up, down):
        q.add_argument("--data-dir", type=Path, help="data directory (SQLite file lives here)")
    up.set_defaults(func=cmd_db, direction="upgrade")
    down.set_defaults(func=cmd_db, direction="downgrade")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the web app (REST API under /api, UI at /)")
    p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--data-dir", type=Path, help="data directory (default ./data)")
    p.add_argument("--checkpoint", type=Path, help="model to serve when none is active yet")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--no-scheduler", action="store_true", help="web process only, no retraining")
    p.set_defaults(func=cmd_serve)


def _add_user(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="manage users and API tokens")
    usub = p.add_subparsers(dest="user_command", required=True)
    add = usub.add_parser("add", help="create a user (password from --password or a prompt)")
    add.add_argument("name")
    add.add_argument("--role", choices=("viewer", "inspector", "admin"), default="inspector")
    add.add_argument("--password", help="password (prompted for when left out)")
    add.set_defaults(func=cmd_user_add)
    tok = usub.add_parser("token", help="issue an API token (shown once)")
    tok.add_argument("name")
    tok.add_argument(
        "--days", type=int, help="lifetime in days (default HEATPROMPT_TOKEN_DAYS; 0: no expiry)"
    )
    tok.set_defaults(func=cmd_user_token)
    rev = usub.add_parser("revoke-token", help="revoke every API token of a user")
    rev.add_argument("name")
    rev.set_defaults(func=cmd_user_revoke_token)
    for q in (add, tok, rev):
        q.add_argument("--data-dir", type=Path)


def _add_types(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("types", help="list and add defect types (the classes of mask regions)")
    tsub = p.add_subparsers(dest="types_command", required=True)
    add = tsub.add_parser("add", help="add a defect type")
    add.add_argument("name")
    add.add_argument("--color", help="display colour #rrggbb (default: the next palette one)")
    add.add_argument("--key", help="one-character keyboard shortcut in the review editor")
    add.set_defaults(func=cmd_types_add)
    ls = tsub.add_parser("list", help="list the defect types: id, name, colour, key")
    ls.set_defaults(func=cmd_types_list)
    for q in (add, ls):
        q.add_argument("--data-dir", type=Path)


def _add_backup(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("backup", help="copy database, blobs and checkpoints to a new folder")
    b.add_argument("dest", type=Path, help="backup folder to create")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore a backup into the configured database")
    r.add_argument("src", type=Path, help="backup folder written by `heatprompt backup`")
    r.add_argument("--force", action="store_true", help="replace a target that holds data")
    r.set_defaults(func=cmd_restore)
    for q in (b, r):
        q.add_argument("--data-dir", type=Path)


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the retraining scheduler (no UI, no HTTP)")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=cmd_worker)
    r = sub.add_parser("retrain", help="train a new model from the corrections now")
    r.add_argument("--data-dir", type=Path)
    r.add_argument("--max-minutes", type=float, help="training time budget")
    r.set_defaults(func=cmd_retrain)


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="store every image file of a folder (recursively)")
    p.add_argument("dir", type=Path, help="folder of images")
    p.add_argument(
        "--good", action="store_true", help="the images are known good: label them defect-free"
    )
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=cmd_ingest)


def _add_bench_image(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-image",
        help="time whole-image prediction (tiles, encoder, heads, stitching) and its memory",
    )
    p.add_argument(
        "images", type=Path, nargs="*", help="images to time (default: synthetic, see --sizes)"
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--sam-checkpoint", type=Path)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--views", type=int, help="use the first N of the checkpoint's test-time views (all)"
    )
    p.add_argument(
        "--sizes",
        default="1024x1024,2048x2048,4096x1024,4096x4096",
        help="WIDTHxHEIGHT list of synthetic images, when no images are given",
    )
    p.add_argument("--repeat", type=int, default=1, help="measured predictions per image")
    p.add_argument(
        "--workers",
        type=int,
        help="compute threads the tiles are spread over, as the app does on a CPU "
        "(default: the app's, one per core; 0: the calling thread alone)",
    )
    _add_float32(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_bench_image)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `heatprompt`."""
    parser = argparse.ArgumentParser(
        prog="heatprompt", description="Heatmap-prompted SAM for surface-defect review."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_synth,
        _add_train,
        _add_eval,
        _add_predict,
        _add_weights,
        _add_demo,
        _add_db,
        _add_serve,
        _add_user,
        _add_types,
        _add_backup,
        _add_worker,
        _add_ingest,
        _add_bench_image,
    ):
        add(sub)
    return parser


# --------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from model.synth import write_dataset

    write_dataset(args.out, seed=args.seed, size=args.size, count=args.count)
    print(f"wrote {args.count} images to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from model.pipeline import train_from_folders

    result = train_from_folders(
        data=args.data,
        out=args.out,
        encoder=args.encoder,
        sam_checkpoint=args.sam_checkpoint,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        **({} if args.lr is None else {"lr": args.lr}),
        input_size=args.input_size,
        scale=args.scale,
        tiles_per_image=args.tiles_per_image,
        test_time_views=args.test_time_views,
        type_head=args.type_head,
        tile_overlap=args.tile_overlap,
        cache_dir=args.cache_dir,
    )
    val = result.val_report or {}
    print(
        f"saved {result.checkpoint} after {result.epochs_run} epochs ({result.stopped_by}); "
        f"val mIoU {val.get('miou')}, empty accuracy {val.get('empty_accuracy')}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from model.checkpoint import load_bundle
    from model.dataset import discover, load_samples
    from model.evaluate import evaluate
    from model.inference import resolve_device

    bundle = load_bundle(
        args.checkpoint,
        sam_checkpoint=args.sam_checkpoint,
        device=resolve_device(args.device),
        mixed_precision=not args.float32,
    )
    items = load_samples(discover(args.data), bundle.geometry, progress=not args.json)
    report = evaluate(bundle, items, progress=not args.json)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict) -> str:
    """Human-readable evaluation table."""

    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    lines = [f"{'':14}{'prompt':>8}{'no prompt':>11}"]
    for key in ("miou", "dice", "empty_accuracy", "image_auroc", "pixel_auroc"):
        lines.append(f"{key:14}{f(report[key]):>8}{f(report['no_prompt'][key]):>11}")
    lines.append("per type:")
    for kind, stats in report["per_type"].items():
        shown = ", ".join(f"{k} {f(v).strip()}" for k, v in stats.items() if k != "count")
        lines.append(f"  {kind:12} n={stats['count']:<4} {shown}")
    types = report.get("types")
    if types:
        lines.append(
            f"defect types ({types['regions']} matched regions): accuracy "
            f"{f(types['type_accuracy']).strip()}, macro-F1 {f(types['type_macro_f1']).strip()}"
        )
        for name, stats in types["per_type"].items():
            lines.append(
                f"  {name:12} IoU {f(stats['iou']).strip()}, Dice {f(stats['dice']).strip()}"
            )
        lines += ["  " + line for line in format_confusion(types["confusion"])]
    return "\n".join(lines)


def format_confusion(confusion: dict) -> list[str]:
    """A type confusion matrix (`model.type_metrics`) as text lines, rows true."""
    labels = confusion["labels"]
    lines = ["confusion (rows true, columns predicted): " + ", ".join(labels)]
    for name, row in zip(labels, confusion["matrix"], strict=True):
        lines.append(f"  {name:14} " + " ".join(f"{v:4d}" for v in row))
    return lines


def cmd_predict(args: argparse.Namespace) -> int:
    from model.pipeline import predict_to_folder

    written = predict_to_folder(
        args.checkpoint,
        args.images,
        args.out,
        sam_checkpoint=args.sam_checkpoint,
        device=args.device,
        workers=args.workers,
        mixed_precision=not args.float32,
    )
    for row in written:
        print(
            f"{row['image']}: defect_score {row['defect_score']:.3f}, "
            f"uncertainty {row['uncertainty']:.3f}, defective {row['defective']}"
        )
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from model.weights import download_official

    path = download_official(args.name, args.out, url=args.url)
    print(f"{args.name}: {path} (sha256 verified)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from webapp.demo import run_demo

    return run_demo(args.data_dir, host=args.host, port=args.port, serve=not args.prepare_only)


def _engine(data_dir: Path | None):  # type: ignore[no-untyped-def]
    """The configured database's engine (the data directory is created if needed)."""
    from storage.engine import make_engine
    from webapp.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.resolved_database_url)


def confirm(action: str, consequence: str) -> None:
    """Ask for `action` typed out on a terminal; ValueError unless it is typed. Without a
    terminal nobody can answer, so the data-destroying command is refused (--yes skips)."""
    if not sys.stdin or not sys.stdin.isatty():
        raise ValueError(f"{consequence}; stdin is not a terminal to confirm on, pass --yes")
    print(f"{consequence}. Type {action!r} to go on: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip()
    if not sys.stderr.isatty():  # no echoed Enter there: end the prompt's line ourselves
        print(file=sys.stderr)
    if answer != action:
        raise ValueError(f"not confirmed ({action!r} was not typed); nothing changed")


def cmd_db(args: argparse.Namespace) -> int:
    from storage.migrate import current_revision, downgrade, upgrade

    engine = _engine(args.data_dir)
    if args.direction == "downgrade" and not args.yes:
        where = engine.url.render_as_string(hide_password=True)
        confirm(
            "downgrade",
            f"downgrading {where} from revision {current_revision(engine) or 'base'} to "
            f"{args.revision} deletes the tables and columns added since, with their data",
        )
    (upgrade if args.direction == "upgrade" else downgrade)(engine, args.revision)
    print(f"database at revision {current_revision(engine) or 'base (empty)'}")
    return 0


def _accounts(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from storage.accounts import Accounts
    from storage.migrate import upgrade

    engine = _engine(data_dir)
    upgrade(engine)
    return Accounts(engine)


def cmd_user_add(args: argparse.Namespace) -> int:
    import getpass

    from storage.errors import StorageError

    password = args.password or getpass.getpass(f"password for {args.name}: ")
    try:
        _accounts(args.data_dir).add_user(args.name, password, role=args.role)
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    print(f"user {args.name} added as {args.role}")
    return 0


def cmd_user_token(args: argparse.Namespace) -> int:
    from storage.errors import StorageError
    from webapp.settings import load_settings

    days = load_settings(data_dir=args.data_dir).token_days if args.days is None else args.days
    try:
        issued = _accounts(args.data_dir).issue(args.name, days=days)
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    print(issued.token)
    # On stderr, so that `TOKEN=$(heatprompt user token NAME)` captures the token alone.
    if issued.expires_at is None:
        print("never expires (end it with `heatprompt user revoke-token`)", file=sys.stderr)
    else:
        print(f"expires {issued.expires_at:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
    return 0


def cmd_user_revoke_token(args: argparse.Namespace) -> int:
    from storage.errors import StorageError

    try:
        count = _accounts(args.data_dir).revoke_tokens(args.name)
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    print(f"revoked {count} token{'' if count == 1 else 's'} of {args.name}")
    return 0


def _defect_types(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from storage.defect_types import DefectTypeStore
    from storage.engine import make_sessionmaker
    from storage.migrate import upgrade

    engine = _engine(data_dir)
    upgrade(engine)
    return DefectTypeStore(make_sessionmaker(engine))


def cmd_types_add(args: argparse.Namespace) -> int:
    from storage.errors import StorageError

    try:
        added = _defect_types(args.data_dir).add(args.name, color=args.color, key=args.key)
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    key = f", key {added.key}" if added.key else ""
    print(f"defect type {added.id} {added.name!r} added ({added.color}{key})")
    return 0


def cmd_types_list(args: argparse.Namespace) -> int:
    """One line per type: id, name, colour and key (ids are the values of type masks)."""
    types = _defect_types(args.data_dir).list()
    width = max((len(t.name) for t in types), default=0)
    for t in types:
        print(f"{t.id:>3}  {t.name:<{width}}  {t.color}  {t.key or '-'}")
    return 0


def _summary(manifest) -> str:  # type: ignore[no-untyped-def]
    counts = manifest.counts
    shown = ", ".join(
        f"{counts.get(t, 0)} {t.replace('_', ' ')}"
        for t in ("images", "corrections", "model_versions", "users")
    )
    return (
        f"{manifest.database} database at revision {manifest.revision or 'base'}: {shown}, "
        f"{manifest.blobs} blobs, {len(manifest.checkpoints)} checkpoints"
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from storage.backup import create_backup
    from storage.errors import StorageError
    from webapp.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    try:
        manifest = create_backup(
            _engine(args.data_dir),
            data_dir=settings.data_dir,
            blob_dir=settings.blob_dir,
            models_dir=settings.models_dir,
            dest=args.dest,
        )
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    for path in manifest.not_included:
        print(f"heatprompt: warning: checkpoint {path} is not in the backup", file=sys.stderr)
    for sha in manifest.missing_blobs:
        print(f"heatprompt: warning: blob {sha} is named by a row but missing", file=sys.stderr)
    print(f"backed up {_summary(manifest)} to {args.dest}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from storage.backup import restore_backup
    from storage.errors import StorageError
    from webapp.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    try:
        manifest = restore_backup(
            args.src,
            _engine(args.data_dir),
            data_dir=settings.data_dir,
            blob_dir=settings.blob_dir,
            models_dir=settings.models_dir,
            force=args.force,
        )
    except StorageError as exc:
        raise ValueError(str(exc)) from exc
    print(f"restored {_summary(manifest)} into {settings.data_dir}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from webapp.server import serve
    from webapp.settings import load_settings

    settings = load_settings(
        data_dir=args.data_dir, host=args.host, port=args.port, checkpoint=args.checkpoint
    )
    return serve(settings, share=args.share, scheduler=not args.no_scheduler)


def cmd_worker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from webapp.app import create_app
    from webapp.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    app = create_app(settings, ui=False, scheduler=True, watch=False)
    print(
        f"worker: checking for new corrections every {settings.retrain_check_minutes} min "
        f"(at least {settings.retrain_min_corrections} start a run)"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    app.stop()
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from webapp.app import build_services, retrain_config
    from webapp.retraining import run_retraining
    from webapp.settings import load_settings

    settings = load_settings(data_dir=args.data_dir)
    config = retrain_config(settings)
    if args.max_minutes:
        config = replace(config, max_minutes=args.max_minutes)  # validated like the settings
    services = build_services(settings)
    run_id, created = services.repo.runs.enqueue_training_run(trigger="cli")
    if not created:
        raise ValueError(f"training run {run_id} is already queued or running")
    version = run_retraining(
        services.repo,
        run_id,
        models_dir=settings.models_dir,
        cache_dir=settings.feature_cache_dir,
        config=config,
        sam_checkpoint=settings.sam_checkpoint,
    )
    run = services.repo.runs.get_training_run(run_id)
    services.shutdown()
    if version is None:
        raise ValueError(f"training run {run_id} failed: {run.error}")
    print(f"run {run_id}: model version {version}; {run.metrics.get('decision')}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """One line per image file, then a summary; a bad file is reported and skipped."""
    from model.images import IMAGE_EXTENSIONS
    from storage.errors import StorageError
    from webapp.app import build_services
    from webapp.cold_start import GOOD
    from webapp.ingest import IngestError
    from webapp.settings import load_settings

    if not args.dir.is_dir():
        raise ValueError(f"{args.dir}: no such folder")
    paths = sorted(
        p for p in args.dir.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
    )
    services = build_services(load_settings(data_dir=args.data_dir))
    limit = services.settings.max_image_bytes
    stored = duplicates = refused = labelled = 0
    try:
        for path in paths:
            shown = path.relative_to(args.dir)
            try:
                if path.stat().st_size > limit:
                    raise IngestError(f"{path.name}: larger than the limit of {limit} bytes")
                result = services.ingest(
                    path.read_bytes(), path.name, source="cli", label=GOOD if args.good else None
                )
            except (IngestError, StorageError, OSError) as exc:
                refused += 1
                print(f"{shown}: refused: {exc}")
                continue
            duplicates += result.duplicate
            stored += not result.duplicate
            labelled += result.labelled
            what = f"duplicate of image {result.id}" if result.duplicate else f"image {result.id}"
            print(f"{shown}: {what}{', labelled defect-free' if result.labelled else ''}")
    finally:
        services.shutdown()
    summary = f"{stored} stored, {duplicates} duplicates, {refused} refused"
    print(summary + (f"; {labelled} labelled defect-free" if args.good else ""))
    return 0


def cmd_bench_image(args: argparse.Namespace) -> int:
    """One row per image, printed as it is measured: tiles, encoder and head ms per tile,
    stitching, total seconds and memory; `--json` prints one object at the end."""
    from model.checkpoint import load_bundle
    from model.cpu_threads import check_workers, pool_for_device
    from model.images import read_image
    from model.inference import resolve_device
    from webapp.image_benchmark import (
        iter_benchmark,
        parse_sizes,
        select_views,
        synthetic_images,
        table_header,
        table_line,
    )

    if args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {args.repeat}")
    check_workers(args.workers)  # before minutes of model loading
    sizes = parse_sizes(args.sizes)  # a bad --sizes fails before the model loads
    bundle = load_bundle(
        args.checkpoint,
        sam_checkpoint=args.sam_checkpoint,
        device=resolve_device(args.device),
        mixed_precision=not args.float32,
    )
    views = select_views(bundle, args.views)
    if args.images:  # all read first, so a bad file fails before minutes of timing
        images = [(str(path), read_image(path)) for path in args.images]
    else:
        images = synthetic_images(sizes)
    rows = []
    with pool_for_device(bundle.device, args.workers) as pool:
        workers = pool.threads if pool is not None else 0
        if not args.json:
            print(f"compute threads: {workers or 'the calling thread alone'}", flush=True)
            print(table_header(), flush=True)
        for row in iter_benchmark(bundle, images, views=views, repeat=args.repeat, pool=pool):
            rows.append(row.as_dict())
            if not args.json:
                print(table_line(row), flush=True)
    if args.json:
        report = {"checkpoint": str(args.checkpoint), "views": views, "workers": workers}
        print(json.dumps(report | {"rows": rows}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `heatprompt` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (HeatPromptError, ValueError) as exc:
        print(f"heatprompt: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("heatprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
