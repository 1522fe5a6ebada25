"""Export a submission from a sweep's best model, or score a submission against labelled tiles.

    python -m search.export --best [--name SWEEP]          # the winner of search.confirm, else the best trial
    python -m search.export --best --refit [--name SWEEP]  # the best configuration re-trained on every labelled tile
    python -m search.export --trial ID [--name SWEEP]
    python -m search.export --checkpoint DIR                # any trial checkpoint folder (model.pth + config.yaml)
    python -m search.export --score answer.json --gt DIR    # AP50@100 (course), AP50 uncapped, AP, F1, PQ, AJI
    python -m search.export --best --format geojson         # + QuPath GeoJSON per tile (labels: label map PNGs)

A submission is COCO results JSON: [{image_id, category_id: 1, segmentation: {size, counts}, score, bbox}], image ids
from test_img_ids.json, the top 100 detections per tile (the course scorer reads no more; --max-dets), sorted by
score. Written atomically, with a zip for upload and one overlay PNG per tile; validated with pycocotools before
success is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from search.space import SpaceError
from search.sweep import Sweep, UsageError, best_checkpoint
from trainable.cli import OneLineParser
from trainable.config import ConfigError
from trainable.data import DatasetError, load_test_index, load_train_records
from trainable.files import atomic_write, check_folder, read_document
from trainable.metrics import COURSE_MAX_DETS, MEASURES, SCORE
from trainable.storage import Store, is_remote


class ExportError(ValueError):
    pass


def pick_checkpoint(results: str, name: str | None, trial: str | None) -> tuple[Sweep, Store, dict, str]:
    """(sweep, checkpoint folder, row of the leaderboard, why) for --best (Sweep.winner: the confirmed winner where
    search.confirm ran, else the highest score) or --trial."""
    sweep = Sweep.open(results, name)
    board = sweep.board()
    if trial:
        rows = board[board["trial_id"] == trial]
        if rows.empty:
            raise ExportError(f"{sweep.board_file}: no trial {trial!r} (trials: {', '.join(board['trial_id'])})")
        row = rows.iloc[0].to_dict()
        why = f"{SCORE} {row[SCORE]:.4f}"
        trial_dir = sweep.trial_dir(row["trial_id"])
    else:
        row, why, trial_dir = sweep.winner(board)
    # Always inside the sweep's own folder (not the leaderboard's path column): checkpoints are loaded with torch.load,
    # so only from the results tree unless named with --checkpoint; a sweep folder that was moved still exports.
    ckpt = best_checkpoint(trial_dir)
    if ckpt is None:
        raise ExportError(f"{trial_dir}: trial {row['trial_id']} has no checkpoint")
    return sweep, ckpt, row, why


def validate_submission(results: list[dict], index: list[dict]) -> None:
    """pycocotools must accept the results against a ground-truth stub; ids known; every RLE decodes to its tile."""
    import contextlib
    import io

    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO

    sizes = {e["id"]: (e["height"], e["width"]) for e in index}
    for i, r in enumerate(results):
        if not {"image_id", "category_id", "segmentation", "score"} <= set(r) or r["category_id"] != 1:
            raise ExportError(f"detection {i}: needs image_id, category_id 1, segmentation, score")
        if r["image_id"] not in sizes:
            raise ExportError(f"detection {i}: unknown image_id {r['image_id']!r}")
        if not isinstance(r["score"], (int, float)) or isinstance(r["score"], bool) or not math.isfinite(r["score"]):
            raise ExportError(f"detection {i}: score must be a number, got {r['score']!r}")
        seg, size = r["segmentation"], list(sizes[r["image_id"]])
        if not isinstance(seg, dict) or not isinstance(seg.get("counts"), str) or list(seg.get("size", [])) != size:
            got = seg.get("size") if isinstance(seg, dict) else type(seg).__name__
            raise ExportError(f"detection {i}: RLE size {got} != tile {sizes[r['image_id']]}")
        try:
            decoded = mask_util.decode(seg)
        except (ValueError, TypeError):
            decoded = None
        if decoded is None or decoded.shape != sizes[r["image_id"]]:
            raise ExportError(f"detection {i}: RLE does not decode to {sizes[r['image_id']]}")
    gt = COCO()
    gt.dataset = {
        "images": [{"id": e["id"], "height": e["height"], "width": e["width"]} for e in index],
        "annotations": [],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if results:
            gt.loadRes([dict(r) for r in results])  # loadRes adds keys (id, area) to what it is given


def local_checkpoint(ckpt: Store | Path, scratch: Path) -> Path:
    """A checkpoint folder on this machine's disk: itself, or (object storage) a download of it into `scratch`."""
    if isinstance(ckpt, Path):
        return ckpt
    return ckpt.download(scratch / ckpt.parent.name / ckpt.name) if ckpt.remote else ckpt.local()


def export(
    checkpoint: Path,
    data: str | Path,
    out: Path,
    device: str,
    score_threshold: float | None,
    tta: bool,
    max_dets: int | None = COURSE_MAX_DETS,
    form: str = "coco",
) -> dict:
    """Predict every test tile (top `max_dets` detections each; None: all the model keeps) and write the submission;
    `form` labels or geojson: each tile's label map or QuPath GeoJSON too (trainable.instance_formats)."""
    from trainable import instance_formats, overlay
    from trainable.predict import Predictor

    index = load_test_index(data)  # checked against the files before the model is loaded
    predictor = Predictor(checkpoint, device=device, score_threshold=score_threshold, tta=tta, max_dets=max_dets)
    out.parent.mkdir(parents=True, exist_ok=True)
    overlays = out.parent / "overlays"
    overlays.mkdir(exist_ok=True)
    extra = out.parent / form if form in EXTRA_FORMATS else None
    if extra:
        extra.mkdir(exist_ok=True)
    results, start = [], time.perf_counter()
    for i, entry in enumerate(index, start=1):
        t0 = time.perf_counter()
        dets = predictor.predict(entry["file_name"], entry["id"])
        results += dets
        shown = [d["segmentation"] for d in overlay.confident(dets)] if dets else []
        stem = Path(entry["file_name"]).stem
        png = overlays / f"{stem}.png"
        atomic_write(png, lambda p, e=entry, s=shown: overlay.save(e["file_name"], s, p))
        if extra:
            labels = instance_formats.tile_label_map(_tile_shape(entry["file_name"]), dets)
            if form == "labels":
                atomic_write(extra / f"{stem}.png", lambda p, m=labels: instance_formats.write_label_map(p, m))
            else:
                collection = instance_formats.geojson(labels, dets)
                atomic_write(extra / f"{stem}.geojson", lambda p, c=collection: instance_formats.write_geojson(p, c))
        print(
            f"[{i}/{len(index)}] {Path(entry['file_name']).name}: {len(dets)} detections "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    validate_submission(results, index)
    atomic_write(out, lambda p: p.write_text(json.dumps(results)))
    zip_path = out.with_suffix(".zip")
    atomic_write(zip_path, lambda p: _zip(out, p))
    wall = time.perf_counter() - start
    return {
        "submission": str(out),
        "zip": str(zip_path),
        "overlays": str(overlays),
        **({form: str(extra)} if extra else {}),
        "tiles": len(index),
        "detections": len(results),
        "seconds_per_tile": wall / len(index),
        "checkpoint": str(checkpoint),
    }


def _tile_shape(image: str | Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(image) as im:
        return im.height, im.width


# --format: what export may write beside the COCO submission, each in a folder of its name next to it (a file per tile)
EXTRA_FORMATS = ("labels", "geojson")


def check_out(out: Path, what: str, form: str = "coco") -> None:
    """Where export writes (the submission, its zip, overlays/, and labels/ or geojson/ for that --format): refused
    in one line before any model is loaded."""
    for path in (out, out.with_suffix(".zip")):
        if path.is_dir():
            raise UsageError(f"{path}: is a folder, not a file ({what}: the submission JSON)")
    for folder in ("overlays", *([form] if form in EXTRA_FORMATS else [])):
        check_folder(out.parent / folder, UsageError, what)


def _zip(src: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(src, arcname=src.name)


def score(submission: Path, gt_dir: Path, cache_dir: str | None = None) -> dict:
    """Mask AP and the nuclei measures (mean over tiles) of a submission against labelled tiles (<id>/images,
    <id>/masks, or a dataset root with train/)."""
    from trainable.evaluate import coco_ground_truth, mask_ap, predicted_label_map, recall_ceiling, truth_label_map
    from trainable.measures import mean_over_tiles, measures

    check_folder(gt_dir, UsageError, "--gt")
    results = read_document(submission, ExportError)
    if not isinstance(results, list) or not all(isinstance(d, dict) for d in results):
        raise ExportError(f"{submission}: expected a list of detections (mappings)")
    subdir = "train" if (gt_dir / "train").is_dir() else ""
    records, _ = load_train_records(gt_dir, cache_dir, subdir=subdir)
    # Image ids: test_img_ids.json beside the tiles maps "<id>.png" -> id; otherwise the folder names.
    ids = {r["image_id"]: r["image_id"] for r in records}
    index_file = gt_dir / "test_img_ids.json"
    if index_file.is_file():
        index = read_document(index_file, ExportError)
        if not isinstance(index, list) or not all(isinstance(e, dict) and {"file_name", "id"} <= set(e) for e in index):
            raise ExportError(f"{index_file}: unreadable (expected a list of {{file_name, id, ...}})")
        ids = {Path(e["file_name"]).stem: e["id"] for e in index}
    for r in records:
        r["image_id"] = ids.get(r["image_id"], r["image_id"])
    known = {r["image_id"] for r in records}
    unknown = {d.get("image_id") for d in results} - known
    if unknown:
        raise ExportError(f"{submission}: image_id(s) {sorted(map(str, unknown))[:5]} not among the tiles of {gt_dir}")
    try:  # what pycocotools and the label maps need of every detection, checked as export checks its own
        validate_submission(
            results, [{"id": r["image_id"], "height": r["height"], "width": r["width"]} for r in records]
        )
    except ExportError as e:
        raise ExportError(f"{submission}: {e}") from None
    gt = coco_ground_truth(records)
    scored = {**mask_ap(gt, results), "recall_ceiling_at_100": recall_ceiling(gt)}
    by_tile: dict = {}
    for d in results:
        by_tile.setdefault(d["image_id"], []).append(d)
    per_tile = [  # the nuclei measures of each tile: the label map its detections paint against its nuclei
        measures(truth_label_map(r), predicted_label_map((r["height"], r["width"]), by_tile.get(r["image_id"], [])))
        for r in records
    ]
    return {**scored, **mean_over_tiles(per_tile), "detections_per_tile": len(results) / max(1, len(records))}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m search.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--best",
        action="store_true",
        help="the winner of search.confirm where it ran, else the trial with the highest val_map50_best (the trial "
        "score)",
    )
    what.add_argument("--trial", help="a trial id of the sweep (see its leaderboard)")
    what.add_argument("--checkpoint", help="an explicit checkpoint folder (model.pth + config.yaml)")
    what.add_argument("--score", metavar="SUBMISSION", help="score a submission JSON against --gt")
    p.add_argument("--gt", help="labelled tiles for --score: <id>/images + <id>/masks (or a dataset root)")
    p.add_argument(
        "--refit",
        action="store_true",
        help="with --best or --trial: re-train that configuration on every labelled tile (train and validation) for "
        "the schedule the search chose, as a Ray Tune trial in RESULTS/NAME/refit, then export from it; an existing "
        "refit is reused",
    )
    p.add_argument("--force", action="store_true", help="with --refit: train anew even if a refit exists")
    p.add_argument("--address", help="with --refit: Ray cluster to join (default: start a local Ray)")
    p.add_argument("--name", help="sweep name (default: the latest in --results)")
    p.add_argument(
        "--results", default="results", help="folder or s3:// gs:// location of sweeps (default: %(default)s)"
    )
    p.add_argument(
        "--data", help="dataset with test/ and test_img_ids.json, and train/ for --refit (default: the sweep's data)"
    )
    p.add_argument(
        "--out",
        help="submission JSON (default: RESULTS/NAME/submission/answer.json; --refit: RESULTS/NAME/refit/...; with "
        "RESULTS on object storage: ./NAME-submission/answer.json, copied into RESULTS/NAME/submission/)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--score-threshold", type=float, help="drop detections below this score (default: the model's)")
    p.add_argument("--tta", action="store_true", help="test-time flip augmentation (Detectron2's TTA)")
    p.add_argument(
        "--format",
        choices=["coco", *EXTRA_FORMATS],
        default="coco",
        help="coco: the COCO results submission (always written); labels: also one 16-bit instance label map PNG "
        "per tile (labels/); geojson: also QuPath GeoJSON detections per tile (geojson/) (default: %(default)s)",
    )
    p.add_argument(
        "--max-dets",
        type=max_dets_arg,
        default=COURSE_MAX_DETS,
        metavar="N",
        help="detections kept per tile, best first: the course scorer reads the top %(default)s; 'all' keeps every "
        "detection the model gives (default: %(default)s)",
    )
    return p


def max_dets_arg(text: str) -> int | None:
    """--max-dets: a positive integer, or 'all' (None)."""
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return n


def submission_path(given: str | None, where: Store | Path, sweep: Sweep | None) -> Path:
    """Where export writes the submission on this machine: --out; else in the sweep's (or refit's, or checkpoint's)
    folder, submission/answer.json; a sweep on object storage: ./NAME-submission/answer.json here (the JSON and its
    zip are copied into the sweep's folder there)."""
    if given:
        return Path(given)
    if isinstance(where, Path):
        return where / "submission" / "answer.json"
    if where.remote:
        refit = "-refit" if where != sweep.folder else ""
        return Path(f"{sweep.name}{refit}-submission") / "answer.json"
    return where.local() / "submission" / "answer.json"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="nucleitune-export-"))  # checkpoints fetched from object storage
    try:
        if args.score:
            if not args.gt:
                raise UsageError("--score needs --gt DIR (labelled tiles)")
            s = score(Path(args.score), Path(args.gt))
            print(
                f"AP50@100 (course scorer): {s['map50']:.4f}\nAP50 uncapped: {s['map50_all']:.4f}\n"
                f"AP@[.5:.95]@100: {s['map']:.4f}\n"
                f"nuclei measures of its {s['detections_per_tile']:.0f} detections per tile (mean over tiles): "
                + ", ".join(f"{k} {s[k]:.4f}" for k in MEASURES)
            )
            for image_id, c in s["recall_ceiling_at_100"].items():
                print(f"  {image_id}: recall ceiling at 100 detections {c:.3f}")
            return 0
        if args.score_threshold is not None and not 0 <= args.score_threshold < 1:
            raise UsageError(f"--score-threshold must be in [0, 1), got {args.score_threshold}")
        if args.refit and args.checkpoint:
            raise UsageError("--refit re-trains a trial of a sweep: use it with --best or --trial")
        for flag in ("force", "address"):
            if getattr(args, flag) and not args.refit:
                raise UsageError(f"--{flag} goes with --refit")
        if args.checkpoint:
            ckpt = Path(args.checkpoint).resolve()
            if not ckpt.is_dir():
                raise ExportError(f"{ckpt}: checkpoint folder not found")
            sweep, row, why = None, {}, ""
        else:
            sweep, ckpt, row, why = pick_checkpoint(args.results, args.name, args.trial)
            ckpt = local_checkpoint(ckpt, scratch)
        refit_plan = None
        if args.refit:
            from search import preflight, refit

            refit_plan = refit.plan(sweep, row, args.data, args.force)
            if args.address:
                preflight.probe_address(args.address)
            else:
                preflight.check_machine(refit_plan.rerun.space, sweep.space_file)
        data = args.data
        if data is None and sweep is not None:
            data = sweep.saved()["settings"]["data"]
        if data is None:
            raise UsageError("--data DIR is needed with --checkpoint")
        if not is_remote(data):
            check_folder(data, UsageError, "--data" if args.data else f"the sweep's data ({sweep.settings_file})")
        if args.tta:  # before a refit trains
            from trainable.predict import check_tta, inference_hparams

            hp, where = (refit_plan.hp, sweep.folder) if refit_plan else (inference_hparams(ckpt), ckpt)
            check_tta(hp, True, where)
        where = sweep.refit.folder if refit_plan else (sweep.folder if sweep else ckpt)
        copy_to = where / "submission" if isinstance(where, Store) and where.remote else None
        out = submission_path(args.out, where, sweep)
        check_out(out, "--out" if args.out else "the submission", args.format)
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device here")
        if row:
            number = f"{int(row['trial']):02d} " if "trial" in row else ""  # leaderboards before the trial column
            print(f"trial {number}({row['trial_id']}), {why}" + ("" if refit_plan else f", checkpoint {ckpt.name}"))
        if refit_plan:
            load_test_index(data)  # the test tiles are checked before the refit trains
            ckpt = local_checkpoint(refit.refit(refit_plan, args.address, args.force), scratch)
        info = export(ckpt, data, out.resolve(), device, args.score_threshold, args.tta, args.max_dets, args.format)
        if copy_to is not None:  # the sweep's storage keeps the submission beside its trials
            for name in (out.name, out.with_suffix(".zip").name):
                (copy_to / name).write_bytes((out.parent / name).read_bytes())
            info["copied_to"] = str(copy_to)
    except (UsageError, ExportError, ConfigError, DatasetError, SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from search.refit import RefitError

        if not isinstance(e, RefitError):
            raise
        print(f"error: {e}", file=sys.stderr)  # the refit did not end: running the command again continues it
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"submission: {info['submission']} ({info['detections']} detections on {info['tiles']} tiles, "
        f"{info['seconds_per_tile']:.1f} s per tile; validated with pycocotools)\nzip: {info['zip']}\n"
        f"overlays: {info['overlays']}"
        + "".join(f"\n{form}: {info[form]}" for form in EXTRA_FORMATS if form in info)
        + (f"\ncopied to: {info['copied_to']}" if "copied_to" in info else "")
    )
    if refit_plan:
        print(
            f"note: the refit model ({ckpt}) learned from every labelled tile: no validation data is left, so it has "
            "no val_map50; the sweep's score is the estimate (the confirmation's mean where it ran). Measure it with "
            "--score SUBMISSION --gt DIR on labelled tiles it has not seen."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
