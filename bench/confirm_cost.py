"""What confirmation and refit cost next to the sweep they finish, on CPU with the smoke space.

    .venv/bin/python bench/confirm_cost.py [--space spaces/smoke.yaml] [--results /tmp/confirm-cost]

Runs, as a user would: the sweep (`search.run`), the confirmation with the space's defaults (`search.confirm`) and
`search.export --best --refit` (refit + export), then prints, side by side, each stage's trials, wall time and
device-hours (CPU-hours here: each trial's own time x its CPUs), and its ratio to the sweep's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.sweeps import CONFIRMED  # noqa: E402


def _run(*args: str) -> float:
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args[:1])} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    print(p.stdout.strip().splitlines()[-1], flush=True)
    return time.perf_counter() - start


def _trial_seconds(folder: Path) -> tuple[int, float]:
    """(trials, sum of their own time) of the Ray experiment in `folder`."""
    total, n = 0.0, 0
    for result in folder.glob("trial_*/result.json"):
        lines = result.read_text().splitlines()
        if lines:
            total += json.loads(lines[-1])["time_total_s"]
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
    folder = results / "s"
    cpus = json.loads((folder / "sweep.json").read_text())["overrides"]["resources"]["cpu"]
    rows = []
    for stage, sub in (("sweep", folder), ("confirmation", folder / "confirm"), ("refit + export", folder / "refit")):
        n, seconds = _trial_seconds(sub)
        rows.append({"stage": stage, "trials": n, "wall_s": walls[stage], "cpu_hours": seconds * cpus / 3600})
    table = pd.DataFrame(rows)
    table["wall_x_sweep"] = table["wall_s"] / table.loc[0, "wall_s"]
    table["cpu_hours_x_sweep"] = table["cpu_hours"] / table.loc[0, "cpu_hours"]
    print()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    confirm = pd.read_csv(folder / CONFIRMED)
    print()
    print(confirm.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
