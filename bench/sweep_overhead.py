"""Benchmark 4: wall time of an N-trial smoke sweep vs the sum of its trials' own time, at two trial lengths, and
where the fixed cost per trial goes. Target: < 5% at realistic trial lengths.

    .venv/bin/python bench/sweep_overhead.py [--trials 3] [--epochs 2 6]

Trials run one at a time (max_concurrent 1, 2 CPUs each), so the sweep's wall time and the trials' summed own time
(Ray's time_total_s: from the trial function's start to its last report, training + validation + checkpoints) are
directly comparable. The command's wall time splits into: before the Tune loop (imports, space and data checks,
MLflow parent run, ray.init), the Tune loop, and after it (leaderboard, MLflow close, ray.shutdown).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sweep(folder: Path, trials: int, epochs: int) -> dict:
    from search.sweep import Sweep

    doc = yaml.safe_load((ROOT / "spaces" / "smoke.yaml").read_text())
    doc.update(name=f"e{epochs}", searcher="random", scheduler="fifo", num_samples=trials, max_concurrent=1)
    doc["resources"] = {"cpu": 2, "gpu": 0}
    doc["settings"]["data"] = str(ROOT / "sample_data" / "nuclei")
    doc["fixed"].update(epochs=epochs, decay_epochs=[max(1, epochs - 1)], warmup_epochs=1.0)
    doc["params"].pop("warmup_epochs")
    doc["params"].pop("epochs")
    doc["params"].pop("decay")
    doc.pop("points_to_evaluate", None)
    space = folder / f"space-e{epochs}.yaml"
    space.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", str(folder), "--name", f"e{epochs}"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    loop = float(re.search(r"Total run time: ([\d.]+) seconds", p.stdout + p.stderr).group(1))
    own, first_report, reports = 0.0, [], 0
    sweep = Sweep(folder / f"e{epochs}")
    for trial in sweep.trial_dirs():
        rows = sweep.reports(sweep.trial_id(trial))
        own += rows[-1]["time_total_s"]
        reports += len(rows)
        # Setup inside the trial: from its start to its first report, minus epoch 1's training and validation.
        ipe = rows[0]["iteration"]
        first_report.append(rows[0]["time_total_s"] - rows[0]["val_seconds"] - ipe * rows[0]["sec_per_iter"])
    return {
        "epochs": epochs,
        "wall": wall,
        "loop": loop,
        "own": own,
        "trials": trials,
        "setup_in_trial": sum(first_report) / len(first_report),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, nargs="+", default=[2, 6])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for epochs in args.epochs:
            r = sweep(Path(tmp), args.trials, epochs)
            rows.append(r)
            fixed = (r["wall"] - r["own"]) / r["trials"]
            print(
                f"{r['trials']} trials x {epochs} epochs: command {r['wall']:.1f} s, Tune loop {r['loop']:.1f} s, "
                f"trials' own time {r['own']:.1f} s ({r['own'] / r['trials']:.1f} s per trial)\n"
                f"  overhead (command - own) {r['wall'] - r['own']:.1f} s = {(r['wall'] - r['own']) / r['own']:.1%} "
                f"of own time; per trial {fixed:.1f} s: before the loop {(r['wall'] - r['loop']) / r['trials']:.1f}"
                f" (imports, checks, ray.init, after the loop: leaderboard, shutdown), in the loop outside trials "
                f"{(r['loop'] - r['own']) / r['trials']:.1f} (actor start, result handling, MLflow callback); "
                f"inside each trial before epoch 1: {r['setup_in_trial']:.1f} s (imports, data, model build; "
                f"counted in own time)",
                flush=True,
            )
    # Overhead model: wall = A + N * (b + own_per_trial); fit A and b from the two lengths' fixed costs.
    per_trial = [((r["loop"] - r["own"]) / r["trials"]) for r in rows]
    outside = [r["wall"] - r["loop"] for r in rows]
    b, a = sum(per_trial) / len(per_trial), sum(outside) / len(outside)
    print(f"fixed costs: {a:.1f} s per sweep + {b:.1f} s per trial (+ the trial's own setup, inside its time)")
    for minutes in (1, 5, 14, 30):
        own = minutes * 60
        for n in (4, 40):
            print(f"  trials of {minutes:>2} min, {n:>2} trials: overhead {(a + n * b) / (n * own):.1%}")


if __name__ == "__main__":
    main()
