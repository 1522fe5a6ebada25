"""Benchmark 6: seconds per 1000x1000 test tile for `search.export` (inference + RLE + overlay + validation of the
submission), on the 6 course test tiles, with every detection the model keeps (`--max-dets all`, what export did
before) and with the scorer's top 100 (the default), side by side.

    .venv/bin/python bench/export_speed.py [--data ../shared/data/nuclei] [--backbone R50-FPN] [--device cpu]

The checkpoint is a Mask R-CNN of the real space's size built from scratch with a fixed seed (no trained weights can
be fetched here) whose box classifier is biased to call every proposal a nucleus, and without box NMS, so that it
keeps `--detections` per tile like the trained R50-FPN of the GPU run (1,444-1,761 per course tile, bench/RESULTS.md
item 7). The network's own cost does not depend on its weights; pasting, RLE and the overlay grow with the count.
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


def make_checkpoint(folder: Path, backbone: str, detections: int) -> Path:
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from trainable.config import build_cfg, validate

    hp = validate({"backbone": backbone, "weights": "scratch", "detections_per_image": detections})
    folder.mkdir(parents=True)
    cfg = build_cfg(hp, num_train_images=20, output_dir=folder, device="cpu")
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 1.0  # an untrained model's boxes overlap: keep them
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[0] = 8.0  # class 0 (nucleus) over background: score ~1
    DetectionCheckpointer(model, str(folder)).save("model")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


def run_export(ckpt: Path, data: str, out: Path, device: str, max_dets: str) -> dict:
    cmd = [sys.executable, "-m", "search.export", "--checkpoint", str(ckpt), "--data", data, "--out", str(out)]
    cmd += ["--device", device, "--max-dets", max_dets]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-2000:]
    tiles = [(int(n), float(s)) for n, s in re.findall(r": (\d+) detections \(([\d.]+) s\)", done.stdout)]
    secs = [s for _, s in tiles]
    return {
        "tiles": len(tiles),
        "detections": statistics.median(n for n, _ in tiles),
        "median": statistics.median(secs),
        "min": min(secs),
        "max": max(secs),
        "wall": wall,
    }


def stages(ckpt: Path, data: str, device: str, max_dets: int | None) -> dict[str, float]:
    """Median seconds per tile of each stage of Predictor.predict + export's overlay: the network, mask pasting
    (Detectron2's detector_postprocess), RLE encoding (instances_to_coco_json), the overlay PNG."""
    import numpy as np
    import torch
    from detectron2.data import detection_utils as utils
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json
    from detectron2.modeling.postprocessing import detector_postprocess

    from trainable import overlay
    from trainable.data import load_test_index
    from trainable.predict import Predictor

    predictor = Predictor(ckpt, device=device, max_dets=max_dets)
    times: dict[str, list[float]] = {"network": [], "paste": [], "rle": [], "overlay": []}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for entry in load_test_index(data):
            image = utils.read_image(entry["file_name"], format=predictor.cfg.INPUT.FORMAT)
            h, w = image.shape[:2]
            inputs = [{"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))), "height": h}]
            inputs[0]["width"] = w
            t0 = time.perf_counter()
            raw = predictor.model.inference(inputs, do_postprocess=False)[0]
            t1 = time.perf_counter()
            inst = detector_postprocess(raw, h, w).to("cpu")
            t2 = time.perf_counter()
            dets = instances_to_coco_json(inst, entry["id"])
            t3 = time.perf_counter()
            shown = [d["segmentation"] for d in overlay.confident(dets)] if dets else []
            overlay.save(entry["file_name"], shown, Path(tmp) / "o.png")
            t4 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[k].append(v)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--backbone", default="R50-FPN")
    p.add_argument("--device", default="cpu")
    p.add_argument("--detections", type=int, default=1600, help="detections the model keeps per tile")
    args = p.parse_args()
    rows, parts = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        ckpt = make_checkpoint(Path(tmp) / "ckpt", args.backbone, args.detections)
        for cap in ("all", "100"):  # before: every detection the model keeps; now: the scorer's top 100
            rows[cap] = run_export(ckpt, args.data, Path(tmp) / cap / "answer.json", args.device, cap)
            parts[cap] = stages(ckpt, args.data, args.device, None if cap == "all" else int(cap))
    print(f"{args.backbone} on {args.device}, {rows['100']['tiles']} test tiles")
    print(
        "| --max-dets | detections per tile | s per tile (median, min-max) | network | mask paste | RLE | overlay "
        "| whole command |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cap, r in rows.items():
        t = parts[cap]
        print(
            f"| {cap} | {r['detections']:.0f} | {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
            f"{t['network']:.2f} | {t['paste']:.2f} | {t['rle']:.2f} | {t['overlay']:.2f} | {r['wall']:.1f} s |"
        )


if __name__ == "__main__":
    main()
