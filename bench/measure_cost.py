"""Benchmark: what the nuclei measures (F1, PQ, AJI, Dice: trainable.measures) add to a validation pass, side by side
with the pass itself. Target: <= 10 % of the pass.

    .venv/bin/python bench/measure_cost.py [--data ../shared/data/nuclei] [--val 4] [--detections 2000]

The real space's validation split (4 course tiles of 1000 x 1000, seed 0) and model (R50-FPN), from scratch (no
ImageNet weights here) with `score_thresh_test: 0`, so that every tile yields the full number of detections, as a
trained model does: the worst case for painting and matching. Validation keeps `--detections` per tile (uncapped: the
measures need it). Reported: the pass's wall time, the measures' share of it (painting each tile's label map from
the kept detections, then matching it with the ground truth's), and what a trial pays once (the ground truth's label
maps, numba compiling stardist's overlap table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--val", type=int, default=4, help="validation tiles (the real space's split: 4)")
    p.add_argument("--detections", type=int, default=2000, help="val_detections: kept per tile")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    import torch

    from trainable import measures
    from trainable.config import build_cfg, validate
    from trainable.evaluate import truth_label_map
    from trainable.train import NucleiTrainer, Settings, _setup_logging, prepare_data

    _setup_logging()
    torch.set_num_threads(args.threads)
    hp = validate(
        {"backbone": "R50-FPN", "weights": "scratch", "epochs": 1, "warmup_epochs": 0, "score_thresh_test": 0.0}
    )
    data = prepare_data(Settings(data=args.data, split={"val": args.val, "seed": 0}))
    start = time.perf_counter()
    truths = [truth_label_map(r) for r in data.val]
    truth_s = time.perf_counter() - start
    start = time.perf_counter()
    measures.measures(truths[0][:8, :8], truths[0][:8, :8])  # numba compiles the overlap table on its first call
    compile_s = time.perf_counter() - start
    nuclei = [int(len(np.unique(t)) - 1) for t in truths]

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-measures-") as tmp:
        cfg = build_cfg(hp, len(data.train), output_dir=tmp, device="cpu")
        trainer = NucleiTrainer(cfg, hp, data, lambda m, c: None, 1, Path(tmp), val_detections=args.detections)
        trainer.resume_or_load(resume=False)
        for _ in range(args.passes):
            start = time.perf_counter()
            m = trainer.validate()
            rows.append((time.perf_counter() - start, trainer.evaluator.measure_seconds, m))

    print(f"{args.val} validation tiles ({', '.join(map(str, nuclei))} nuclei), {args.detections} detections kept")
    print(f"once per trial: ground-truth label maps {truth_s:.2f} s, numba compile {compile_s:.2f} s")
    print(f"{'pass':<6}{'validation s':>14}{'measures s':>12}{'share':>8}   detections/tile  f1  pq  aji")
    for i, (val_s, measure_s, m) in enumerate(rows, 1):
        print(
            f"{i:<6}{val_s:>14.1f}{measure_s:>12.2f}{measure_s / val_s:>8.1%}   {m['val_detections_per_image']:.0f}"
            f"  {m['val_f1']:.3f}  {m['val_pq']:.3f}  {m['val_aji']:.3f}"
        )


if __name__ == "__main__":
    main()
