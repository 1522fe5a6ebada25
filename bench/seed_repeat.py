"""The same trial twice with the same seed (and once with another): how far apart are their losses and val_map50?

    .venv/bin/python bench/seed_repeat.py [--data ../shared/data/nuclei] [--device auto] [--backbone R50-FPN]

Runs `python -m trainable.train` three times on 2 course tiles (500 px crops, 4 epochs of 1 iteration from scratch,
validation on a 500 px centre crop each epoch): seed 0, seed 0 again, seed 1. On CPU the first two must agree exactly;
on a GPU, cuDNN's autotuner and atomic-add kernels (ROIAlign's backward) make them drift (docs/reproducibility.md);
`--deterministic` turns on deterministic kernels where torch has them. The other seed shows a real difference's size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TILES = ["TCGA-CH-5767-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]
KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "val_map50")


def run(tmp: Path, name: str, data: Path, seed: int, args) -> list[dict]:
    trial = {
        "hparams": {
            "backbone": args.backbone,
            "weights": "scratch",
            "epochs": args.epochs,
            "warmup_epochs": 0,
            "decay_epochs": [],
            "lr": 0.005,
            "crop_size": 500,
            "seed": seed,
        },
        "settings": {
            "data": str(data),
            "split": {"val_ids": [TILES[1]]},
            "val_crop": 500,
            "eval_every": 1,
            "device": args.device,
            "deterministic": args.deterministic,
            "num_workers": 1,
        },
    }
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(trial))
    out = tmp / name
    cmd = [sys.executable, "-m", "trainable.train", "--config", str(tmp / f"{name}.yaml"), "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def gap(a: list[dict], b: list[dict]) -> dict[str, float]:
    return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True)) for k in KEYS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--device", default="auto")
    p.add_argument("--backbone", default="R50-FPN")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--deterministic", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data" / "train"
        data.mkdir(parents=True)
        for t in TILES:
            (data / t).symlink_to(Path(args.data).resolve() / "train" / t)
        a, b, c = (run(tmp, name, data.parent, seed, args) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    print(f"{args.backbone}, device {args.device}, deterministic {args.deterministic}, {len(a)} reports each")
    print("| largest difference over the reports | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for label, g in (("same seed (0 vs 0)", gap(a, b)), ("other seed (0 vs 1)", gap(a, c))):
        print(f"| {label} | " + " | ".join(f"{g[k]:.2e}" for k in KEYS) + " |")
    print("val_map50 per report, seed 0: " + ", ".join(f"{r['val_map50']:.4f}" for r in a))


if __name__ == "__main__":
    main()
