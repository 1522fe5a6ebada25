"""Mask-quality rescoring on the same checkpoints: val_map50 with and without it (no retraining needed).

    .venv/bin/python bench/rescore_gain.py [--data ../shared/data/nuclei] [--epochs 8] [--seeds 0 1]

Trains the smoke space's model (R18-FPN from scratch, 192 px crops, its CPU-sized heads and seed point, cosine
schedule) on the course data's sweep split (20 training / 4 validation tiles, `split: {val: 4, seed: 0}` as in
spaces/maskrcnn.yaml), once per seed, with a checkpoint every `--eval-every` epochs. Every checkpoint then predicts
the 4 validation tiles twice through the export path (`trainable.predict.Predictor`, the scorer's 100 detections per
tile): as trained, and with `trainable.rescore` attached. Both are scored by the same pycocotools AP50@100.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(tmp: Path, data: str, seed: int, args) -> tuple[list[Path], dict]:
    """One smoke-model trial; every checkpoint it reports is kept (folders), with the val_map50 it reported."""
    from search.space import load_space
    from trainable.train import Settings, run_trial

    smoke = load_space(ROOT / "spaces" / "smoke.yaml")
    hp = smoke.hparams(smoke.searched_point(smoke.points_to_evaluate[0]))
    hp.update({"epochs": args.epochs, "seed": seed, "mask_rescore": False})
    settings = Settings(data=data, split={"val": 4, "seed": 0}, eval_every=args.eval_every, num_workers=1)
    kept, reported = [], {}

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        if ckpt_dir:
            kept.append(Path(shutil.move(ckpt_dir, tmp / f"seed{seed}-epoch{metrics['epoch']:03d}")))
            reported[metrics["epoch"]] = metrics["val_map50"]

    t0 = time.perf_counter()
    run_trial(hp, settings, report, tmp / f"work{seed}")
    print(f"seed {seed}: trained {args.epochs} epochs in {time.perf_counter() - t0:.0f} s", flush=True)
    return kept, reported


def score(ckpt: Path, val: list[dict], gt) -> dict:
    from trainable import rescore
    from trainable.evaluate import COURSE_MAX_DETS, mask_ap
    from trainable.predict import Predictor

    predictor = Predictor(ckpt, max_dets=COURSE_MAX_DETS)
    out = {}
    for name in ("plain", "rescored"):
        if name == "rescored":
            rescore.attach(predictor.model)
        t0 = time.perf_counter()
        results = [r for rec in val for r in predictor.predict(rec["file_name"], rec["image_id"])]
        out[name] = mask_ap(gt, results)["map50"]
        out[f"{name}_s"] = (time.perf_counter() - t0) / len(val)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()

    from trainable.data import Split, load_train_records
    from trainable.evaluate import coco_ground_truth

    records, _ = load_train_records(args.data)
    _, val_ids = Split.from_dict({"val": 4, "seed": 0}).apply([r["image_id"] for r in records])
    val = [r for r in records if r["image_id"] in val_ids]
    gt = coco_ground_truth(val)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-rescore-") as tmp:
        for seed in args.seeds:
            kept, reported = train(Path(tmp), args.data, seed, args)
            for ckpt in kept:
                epoch = json.loads((ckpt / "state.json").read_text())["epoch"]
                rows.append({"seed": seed, "epoch": epoch, "trained": reported.get(epoch), **score(ckpt, val, gt)})
                print(f"  seed {seed} epoch {epoch}: {rows[-1]}", flush=True)

    print(f"\n{args.data}: validation tiles {', '.join(sorted(val_ids))}; AP50 at 100 detections per tile\n")
    print("| seed | epoch | val_map50 (training's report) | without rescoring | with rescoring | change | s/tile |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['epoch']} | {r['trained']:.4f} | {r['plain']:.4f} | {r['rescored']:.4f} | "
            f"{r['rescored'] - r['plain']:+.4f} | {r['plain_s']:.1f} / {r['rescored_s']:.1f} |"
        )
    gains = [r["rescored"] - r["plain"] for r in rows]
    better = sum(g > 0 for g in gains)
    print(f"\nchange with rescoring: median {statistics.median(gains):+.4f}, better on {better} of {len(gains)}")


if __name__ == "__main__":
    main()
