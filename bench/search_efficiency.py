"""Benchmark 5: ASHA + Optuna TPE vs FIFO + random search, same number of trials, same CPU-sized space, several seeds:
compute spent (trials' own time) and best val_map50 reached. Target: the same best for half the compute.

    .venv/bin/python bench/search_efficiency.py [--seeds 0 1 2] [--trials 6]

The space is the smoke space (R18-FPN from scratch on the bundled sample, 4 iterations per epoch) with 128 px crops,
4 epochs per trial and the learning rate searched over 1.5 decades; 2 trials at a time with 1 CPU each. ASHA has
rungs at 25 % and 50 % of each trial (--grace 0.25, factor 2: epochs 1 and 2) or at 50 % only (--grace 0.5). TPE is
multivariate and grouped with the constant liar (search/searchers.py). Note: Optuna's TPE samples at random for its
first 10 trials (n_startup_trials), so with fewer trials this compares ASHA's early stopping, not TPE's modelling.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.sweep import Sweep  # noqa: E402
from trainable.metrics import SCORE  # noqa: E402

ARMS = {"asha+tpe": ("optuna", "asha"), "fifo+random": ("random", "fifo")}


def run_arm(folder: Path, arm: str, seed: int, trials: int, grace: float = 0.25) -> dict:
    searcher, scheduler = ARMS[arm]
    doc = yaml.safe_load((ROOT / "spaces" / "smoke.yaml").read_text())
    doc.update(name="eff", searcher=searcher, scheduler=scheduler, num_samples=trials, max_concurrent=2, seed=seed)
    doc["resources"] = {"cpu": 1, "gpu": 0}
    doc["asha"] = {"grace_period": grace, "reduction_factor": 2}
    doc["settings"]["data"] = str(ROOT / "sample_data" / "nuclei")
    doc["fixed"].update(epochs=4, crop_size=128, decay_epochs=[3])
    doc["params"] = {
        "lr": {"loguniform": [0.0015, 0.05]},
        "warmup_epochs": {"uniform": [0.25, 1.0]},
        "brightness": {"uniform": [0.0, 0.3]},
    }
    doc.pop("points_to_evaluate", None)
    space = folder / f"space-{arm}-{seed}.yaml"
    space.write_text(yaml.safe_dump(doc))
    name = f"{arm}-s{seed}"
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", str(folder), "--name", name]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    board = Sweep(folder / name).board()
    return {
        "arm": arm,
        "seed": seed,
        "best": float(board[SCORE].max()),  # the trial score (search.outcome)
        "compute_s": float(board["wall_s"].sum()),
        "epochs_trained": int(board["epochs_run"].sum()),
        "stopped_early": int((board["status"] == "stopped_early").sum()),
        "failed": int(board["status"].isin(["failed", "error"]).sum()),
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--grace", type=float, default=0.25, help="ASHA's first rung, a fraction of each trial's schedule")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for seed in args.seeds:
            for arm in ARMS:  # both arms of a seed back to back: the machine's state is as alike as it gets
                r = run_arm(Path(tmp), arm, seed, args.trials, args.grace)
                rows.append(r)
                print(
                    f"seed {seed} {arm:<12} best val_map50 {r['best']:.4f}, compute {r['compute_s']:.0f} s "
                    f"({r['epochs_trained']} trial-epochs, {r['stopped_early']} stopped early, {r['failed']} failed), "
                    f"wall {r['wall_s']:.0f} s",
                    flush=True,
                )
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    a, f = df[df.arm == "asha+tpe"].set_index("seed"), df[df.arm == "fifo+random"].set_index("seed")
    compute_ratio = a["compute_s"] / f["compute_s"]
    best_diff = a["best"] - f["best"]
    print(
        f"compute asha+tpe / fifo+random: median {statistics.median(compute_ratio):.2f} "
        f"(min {compute_ratio.min():.2f}, max {compute_ratio.max():.2f})\n"
        f"best val_map50 asha+tpe - fifo+random: median {statistics.median(best_diff):+.4f} "
        f"(min {best_diff.min():+.4f}, max {best_diff.max():+.4f}); medians of best: asha+tpe "
        f"{a['best'].median():.4f}, fifo+random {f['best'].median():.4f}"
    )


if __name__ == "__main__":
    main()
