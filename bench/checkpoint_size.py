"""Disk per trial: a one-trial R50-FPN sweep run by the code at --before (a git worktree) and by this tree.

    .venv/bin/python bench/checkpoint_size.py [--before REV] [--data ../shared/data/nuclei]

The trial is tiny (2 course tiles, 128 px crops, 4 epochs of 1 iteration, a report each epoch) but its model is the
real space's R50-FPN (box head 1024 wide), so its checkpoints have the real size. Ray keeps the best and the latest
checkpoint of a trial; the table lists what each side left in the trial folder, and the last line the disk per trial
when the best checkpoint is not the latest (the usual case in a long trial), from the measured file sizes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TILES = ["TCGA-CH-5767-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1"]  # two of the sparsest course tiles


def space(tmp: Path, data: Path) -> Path:
    doc = {
        "name": "ckpt",
        "searcher": "random",
        "scheduler": "fifo",
        "num_samples": 1,
        "resources": {"cpu": 2},
        "settings": {"data": str(data), "split": {"val_ids": [TILES[1]]}, "eval_every": 1, "val_crop": 128},
        "fixed": {
            "backbone": "R50-FPN",
            "weights": "scratch",
            "epochs": 4,
            "warmup_epochs": 0,
            "decay_epochs": [],
            "crop_size": 128,
            "lr": 0.001,
            "proposals_test": 300,
            "detections_per_image": 200,
        },
        "params": {"brightness": {"uniform": [0.0, 0.1]}},
    }
    path = tmp / "space-bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep(code: Path, space_file: Path, results: Path, cache: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(code), "NUCLEITUNE_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "search.run", "--space", str(space_file), "--results", str(results), "--name", "s"]
    cmd += ["--mlflow-uri", "off"]
    p = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    from search.sweep import Sweep

    return Sweep(results / "s").trial_dirs()[0]


def mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    from search.sweep import reports

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="9dc669d", help="git revision of the 'before' side (default: %(default)s)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data" / "train"
        data.mkdir(parents=True)
        for t in TILES:
            (data / t).symlink_to(Path(args.data).resolve() / "train" / t)
        space_file = space(tmp, data.parent)
        old = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(old), args.before], cwd=ROOT, check=True)
        try:
            rows, full, weights = [], [], 0.0
            for side, code in ((f"before ({args.before})", old), ("now", ROOT)):
                trial = sweep(code, space_file, tmp / f"results-{code.name}", tmp / "cache")
                ckpts = sorted(trial.glob("checkpoint_*"))
                files = "; ".join(
                    f"{c.name}: " + ", ".join(f"{f.name} {mb(f):.0f} MB" for f in sorted(c.glob("*.pth")))
                    for c in ckpts
                )
                scores = [round(r["val_map50"], 4) for r in reports(trial)]
                rows.append((side, scores, len(ckpts), sum(mb(c) for c in ckpts), mb(trial), files))
                full.append(mb(ckpts[-1]))  # the latest: everything resuming needs
                weights = mb(ckpts[-1] / "model.pth")  # what a best checkpoint keeps now (before: model.pth held all)
                print(f"{side}: done", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    print("\n| code | val_map50 per report | checkpoints kept | checkpoints MB | trial folder MB | files |")
    print("|---|---|---|---|---|---|")
    for side, scores, n, ck, total, files in rows:
        print(f"| {side} | {scores} | {n} | {ck:.0f} | {total:.0f} | {files} |")
    print(
        f"\nA trial whose best checkpoint is not its latest keeps two: before 2 x {full[0]:.0f} MB = "
        f"{2 * full[0]:.0f} MB; now {full[1]:.0f} MB (latest, model.pth + trainer.pth) + {weights:.0f} MB "
        "(best, model.pth) = "
        f"{full[1] + weights:.0f} MB. When the best is the latest: {full[0]:.0f} MB before, {full[1]:.0f} MB now."
    )


if __name__ == "__main__":
    main()
