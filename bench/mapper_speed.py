"""Training mapper speed, side by side on one core: Detectron2's stock DatasetMapper, the full-mask mapper the project
used before (`FullMaskMapper`), the box-local one trials use now (`NucleiTrainMapper`), and the same with every
augmentation lever of the nuclei space on (quarter turns, scale 1.5 with 20 % jitter, contrast, stain and
hue/saturation jitter), the costliest sample a trial of spaces/maskrcnn.yaml can ask for.

    .venv/bin/python bench/mapper_speed.py [--data ../shared/data/nuclei] [--crop 500] [--samples 48]

Same augmentations (random crop, flips, brightness), same random state per sample, the course tiles in turn. ms per
sample is the mapper call alone; MB per sample is what a loader worker hands to the training process (the image and
mask tensors). The box-local mapper reads images decoded once per trial (the decode is reported on its own line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_mb(sample: dict) -> float:
    inst = sample["instances"]
    masks = inst.gt_masks
    tensors = [sample["image"], inst.gt_boxes.tensor, inst.gt_classes]
    tensors += [masks.tensor] if hasattr(masks, "tensor") else [masks.patches, masks.origins]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def run(mapper, records: list[dict], seeds: list[int]) -> tuple[list[float], list[float], list[int]]:
    import numpy as np

    ms, mb, n = [], [], []
    for seed in seeds:
        rec = records[seed % len(records)]
        np.random.seed(seed)
        t0 = time.perf_counter()
        out = mapper(rec)
        ms.append((time.perf_counter() - t0) * 1000)
        mb.append(sample_mb(out))
        n.append(len(out["instances"]))
    return ms, mb, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--crop", type=int, default=500)
    p.add_argument("--samples", type=int, default=48, help="samples per mapper (the tiles in turn)")
    p.add_argument("--repeats", type=int, default=10, help="passes of the fast mapper over the same samples")
    args = p.parse_args()

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from detectron2.data import DatasetMapper

    from trainable.augment import FullMaskMapper, NucleiTrainMapper, build_augmentations, with_images
    from trainable.config import with_defaults
    from trainable.data import load_train_records

    records, stats = load_train_records(args.data)
    hp = with_defaults({"crop_size": args.crop, "hflip": 0.5, "vflip": 0.5, "brightness": 0.2})
    levers = {
        "rot90": 0.75,
        "scale": 1.5,
        "scale_jitter": 0.2,
        "contrast": 0.2,
        "stain": 0.05,
        "hue": 5,
        "saturation": 0.1,
    }
    t0 = time.perf_counter()
    in_memory = with_images(records)
    decode_ms = (time.perf_counter() - t0) * 1000 / len(records)
    seeds = list(range(args.samples))
    stock = DatasetMapper(
        is_train=True,
        augmentations=build_augmentations(hp),
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
        recompute_boxes=True,
    )
    print(
        f"{args.data}: {len(records)} tiles, {stats.instances} nuclei; {args.crop} px crops, flips, brightness; "
        f"{args.samples} samples per mapper, one core",
        flush=True,
    )
    rows = []
    for name, mapper, recs, repeats in (
        ("Detectron2 DatasetMapper (stock)", stock, records, 1),
        ("FullMaskMapper (before)", FullMaskMapper(build_augmentations(hp)), records, 1),
        ("NucleiTrainMapper (now)", NucleiTrainMapper(build_augmentations(hp)), in_memory, args.repeats),
        ("NucleiTrainMapper, every lever on", NucleiTrainMapper(build_augmentations({**hp, **levers})), in_memory, 3),
    ):
        ms, mb, n = [], [], []
        for _ in range(repeats):
            a, b, c = run(mapper, recs, seeds)
            ms, mb, n = ms + a, mb + b, c
        rows.append((name, statistics.median(ms), statistics.mean(ms), statistics.mean(mb), statistics.mean(n)))
        print(f"  {name}: done", flush=True)
    base = rows[1][2]
    print("\n| mapper | ms/sample (median) | ms/sample (mean) | MB/sample | instances/sample | speed-up vs before |")
    print("|---|---|---|---|---|---|")
    for name, med, mean, mb, n in rows:
        print(f"| {name} | {med:.1f} | {mean:.1f} | {mb:.2f} | {n:.0f} | {base / mean:.1f}x |")
    print(f"\nPNG decode, once per tile per trial (not in the box-local mapper's figure): {decode_ms:.1f} ms per tile")


if __name__ == "__main__":
    main()
