"""Benchmark 3: one validation pass vs one training epoch, for the real space's default split (20 train / 4 validation
course tiles) and model (R50-FPN, 500 px crops, batch 1). Target: validation <= 10% of the training time it follows.

    .venv/bin/python bench/validation_cost.py [--data ../shared/data/nuclei] [--val-repeats 2]

No ImageNet weights can be downloaded here, so the model starts from scratch, with GroupNorm (an un-normalised
FrozenBN network diverges from random weights; GN costs a little more compute than FrozenBN). score_thresh_test is 0
so that every validation tile yields the full number of detections, as a trained model does (the worst case for
validation). Validation runs with the default `val_detections: 100` (the scorer's cap) and, side by side, with 2000
(what trials kept before).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--backbone", default="R50-FPN")
    p.add_argument("--val-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from trainable.config import build_cfg, validate
    from trainable.train import NucleiTrainer, Settings, _setup_logging, prepare_data

    _setup_logging()
    torch.set_num_threads(args.threads)
    hp = validate(
        {
            "backbone": args.backbone,
            "weights": "scratch",
            "epochs": 1,
            "warmup_epochs": 0.5,
            "decay_epochs": [],
            "crop_size": 500,
            "score_thresh_test": 0.0,
        }
    )
    settings = Settings(data=args.data, split={"val": 4, "seed": 0})
    data = prepare_data(settings)
    reports: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-val-") as tmp:
        cfg = build_cfg(hp, len(data.train), output_dir=tmp, device="cpu")
        trainer = NucleiTrainer(cfg, hp, data, lambda m, c: reports.append(m), 1, Path(tmp))
        trainer.resume_or_load(resume=False)
        t0 = time.perf_counter()
        trainer.train()  # one epoch; its end-of-epoch hook validates once (val_detections 100) and checkpoints
        epoch_wall = time.perf_counter() - t0
        first = reports[-1]
        train_s = epoch_wall - first["val_seconds"]
        capped = [first["val_seconds"]]
        for _ in range(args.val_repeats - 1):
            t0 = time.perf_counter()
            trainer.validate()
            capped.append(time.perf_counter() - t0)
        trainer.val_detections = 2000
        t0 = time.perf_counter()
        m2000 = trainer.validate()
        uncapped = time.perf_counter() - t0

    n_train, n_val = len(data.train), len(data.val)
    val = statistics.median(capped)
    print(f"{args.backbone}, {n_train} train / {n_val} validation tiles, {args.threads} threads")
    print(
        f"training epoch: {train_s:.1f} s ({n_train} iterations, {first['sec_per_iter']:.2f} s/iter by "
        f"Detectron2's timer; checkpoint and report included)"
    )
    print(
        f"validation, 100 detections/tile: median {val:.1f} s (min {min(capped):.1f}, max {max(capped):.1f}; "
        f"{len(capped)} passes; {first['val_detections_per_image']:.0f} detections/tile)"
    )
    print(
        f"validation, 2000 detections/tile: {uncapped:.1f} s ({m2000['val_detections_per_image']:.0f} "
        f"detections/tile): {uncapped / val:.1f}x the capped pass"
    )
    for every in (1, 5, 10):
        print(f"validation / training with eval_every {every}: {val / (every * train_s):.1%}")


if __name__ == "__main__":
    main()
