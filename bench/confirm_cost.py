"""What confirmation and refit cost next to the sweep they finish, on CPU with the smoke space.

    .venv/bin/python bench/confirm_cost.py [--space spaces/smoke.yaml] [--results /tmp/confirm-cost]

Runs, as a user would: the sweep (`search.run`), the confirmation with the space's defaults (`search.confirm`) and
`search.export --best --refit` (refit + export), then prints, side by side, each stage's trials, wall time and
device-hours (CPU-hours here: each trial's own time x its CPUs), and its ratio to the sweep's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.sweep import Experiment, Sweep  # noqa: E402


def _run(*args: str) -> float:
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args[:1])} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    print(p.stdout.strip().splitlines()[-1], flush=True)
    return time.perf_counter() - start


def _trial_seconds(experiment: Experiment) -> tuple[int, float]:
    """(trials, sum of their own time) of a Ray experiment: the sweep, its confirmation or its refit."""
    total, n = 0.0, 0
    for trial_dir in experiment.trial_dirs():
        reports = experiment.reports(experiment.trial_id(trial_dir))
        if reports:
            total += reports[-1]["time_total_s"]
            n += 1
    return n, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="spaces/smoke.yaml")
    p.add_argument("--results", default="/tmp/nucleitune-confirm-cost")
    args = p.parse_args()
    results = Path(args.results)
    shutil.rmtree(results, ignore_errors=True)
    common = ["--results", str(results), "--name", "s"]
    walls = {
        "sweep": _run("search.run", "--space", args.space, *common),
        "confirmation": _run("search.confirm", *common),
        "refit + export": _run("search.export", "--best", "--refit", *common),
    }
    sweep = Sweep(results / "s")
    cpus = sweep.saved()["overrides"]["resources"]["cpu"]
    rows = []
    for stage, sub in (("sweep", sweep), ("confirmation", sweep.confirmation), ("refit + export", sweep.refit)):
        n, seconds = _trial_seconds(sub)
        rows.append({"stage": stage, "trials": n, "wall_s": walls[stage], "cpu_hours": seconds * cpus / 3600})
    table = pd.DataFrame(rows)
    table["wall_x_sweep"] = table["wall_s"] / table.loc[0, "wall_s"]
    table["cpu_hours_x_sweep"] = table["cpu_hours"] / table.loc[0, "cpu_hours"]
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    confirm = sweep.confirmed()
    print()
    print(confirm.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
