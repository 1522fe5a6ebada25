"""Benchmark 6: seconds per 1000x1000 test tile for `search.export` (inference + RLE + overlay + validation of the
submission), on the 6 course test tiles.

    .venv/bin/python bench/export_speed.py [--data ../shared/data/nuclei] [--backbone R50-FPN] [--device cpu]

The checkpoint is a Mask R-CNN of the real space's size built from scratch (no weights can be fetched here) with
score_thresh_test 0 and no box NMS, to get as many detections as an untrained model gives (the count is printed:
~200 per tile; a trained model keeps ~1,500-1,800 per course tile, see the GPU run in bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_checkpoint(folder: Path, backbone: str) -> Path:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from trainable.config import build_cfg, validate

    hp = validate({"backbone": backbone, "weights": "scratch", "norm": "FrozenBN", "score_thresh_test": 0.0})
    folder.mkdir(parents=True)
    cfg = build_cfg(hp, num_train_images=20, output_dir=folder, device="cpu")
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0  # an untrained model's boxes overlap: keep more of them
    DetectionCheckpointer(build_model(cfg), str(folder)).save("model")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--backbone", default="R50-FPN")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        ckpt = make_checkpoint(Path(tmp) / "ckpt", args.backbone)
        cmd = [
            sys.executable,
            "-m",
            "search.export",
            "--checkpoint",
            str(ckpt),
            "--data",
            args.data,
            "--out",
            str(Path(tmp) / "out" / "answer.json"),
            "--device",
            args.device,
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    tiles = [(int(n), float(s)) for n, s in re.findall(r": (\d+) detections \(([\d.]+) s\)", out.stdout)]
    secs = [s for _, s in tiles]
    print(
        f"{args.backbone} on {args.device}, {len(tiles)} test tiles, {statistics.median(n for n, _ in tiles):.0f} "
        f"detections per tile"
    )
    print(
        f"per tile (inference + RLE + overlay): median {statistics.median(secs):.1f} s (min {min(secs):.1f}, "
        f"max {max(secs):.1f})"
    )
    print(re.search(r"submission: .*", out.stdout).group(0))
    print(f"whole command (imports, model load, validation of the submission, zip): {wall:.1f} s")


if __name__ == "__main__":
    main()
