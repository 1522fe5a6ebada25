"""What the costly levers cost, relative to today's trial: mask head resolution (training) and test-time scale.

    .venv/bin/python bench/lever_cost.py [--data ../shared/data/nuclei] [--iters 4] [--crop 256]

Training: s/iteration of R50-FPN from scratch with mask_resolution 14 (today) and 28, on the same course crops (the
first iteration, lazy initialisation, is not counted; C4 models keep 14, see trainable/config.py). Validation: seconds
to predict one course tile at scale 1, 1.5 and 2 (R50-FPN, the scorer's 100 detections). Ratios on CPU stand in for a
GPU's (spaces/README.md turns them into the real space's GPU-hours with bench/RESULTS.md item 7's GPU figures); absolute
CPU seconds are not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HP = {"weights": "scratch", "epochs": 1, "warmup_epochs": 0, "decay_epochs": [], "lr": 0.005, "mask_rescore": False}


def sec_per_iter(data, hp: dict, iters: int) -> float:
    from detectron2.utils.events import EventStorage

    from trainable.config import build_cfg
    from trainable.train import NucleiTrainer

    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        cfg = build_cfg(hp, len(data.train), output_dir=tmp, device="cpu")
        trainer = NucleiTrainer(cfg, hp, data, lambda m, c: None, eval_every=10**6, workdir=Path(tmp))
        trainer.resume_or_load(resume=False)
        loader = iter(trainer.data_loader)
        with EventStorage(0):
            times = _steps(trainer, loader, iters)
    return statistics.median(times)


def _steps(trainer, loader, iters: int) -> list[float]:
    times = []
    for i in range(iters + 1):
        batch = next(loader)
        t0 = time.perf_counter()
        losses = sum(trainer.model(batch).values())
        trainer.optimizer.zero_grad()
        losses.backward()
        trainer.optimizer.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    args = p.parse_args()

    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from trainable.config import build_cfg, with_defaults
    from trainable.predict import Predictor
    from trainable.train import Settings, prepare_data

    torch.manual_seed(0)
    data = prepare_data(Settings(data=args.data, split={"val": 4, "seed": 0}))
    rows = []
    for backbone in ("R50-FPN",):  # C4 models keep 14 (trainable.config: their heads share one pooling)
        base = None
        for res in (14, 28):
            hp = {**HP, "backbone": backbone, "mask_resolution": res, "crop_size": args.crop}
            s = sec_per_iter(data, hp, args.iters)
            base = base or s
            rows.append((f"train {backbone}, mask_resolution {res}", s, s / base))
            print(f"  {rows[-1]}", flush=True)

    # Prediction: an untrained R50-FPN saved as a checkpoint; score_thresh_test 0 keeps the scorer's 100 detections.
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        hp = {**HP, "backbone": "R50-FPN", "score_thresh_test": 0.0}
        cfg = build_cfg(hp, 1, output_dir=tmp)
        DetectionCheckpointer(build_model(cfg), tmp).save("model")
        Path(tmp, "config.yaml").write_text(cfg.dump())
        tile = data.val[0]
        base = None
        for scale in (1.0, 1.5, 2.0):
            Path(tmp, "state.json").write_text(json.dumps({"hparams": with_defaults({**hp, "scale": scale})}))
            predictor = Predictor(tmp, max_dets=100)
            predictor.predict(tile["file_name"], tile["image_id"])  # warm-up
            t0 = time.perf_counter()
            predictor.predict(tile["file_name"], tile["image_id"])
            s = time.perf_counter() - t0
            base = base or s
            rows.append((f"predict one {tile['height']}x{tile['width']} tile, scale {scale}", s, s / base))
            print(f"  {rows[-1]}", flush=True)

    print(f"\n{args.data}: {args.crop} px training crops, batch 1, CPU ({torch.get_num_threads()} threads)\n")
    print("| work | seconds | x today |")
    print("|---|---|---|")
    for name, s, ratio in rows:
        print(f"| {name} | {s:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
