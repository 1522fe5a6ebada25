"""Figures of a finished sweep folder: trials by status, device-hours, s/iteration and validation time per backbone,
best val_map50. Reads only files: the leaderboard and each trial's reports (search.sweep; no Ray needed).

python bench/sweep_report.py results/NAME [--wall-s SECONDS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from search.sweep import Sweep, ranked  # noqa: E402
from trainable.metrics import SCORE  # noqa: E402


def trial_reports(sweep: Sweep) -> pd.DataFrame:
    """Every report of every trial (one row per report)."""
    frames = []
    for trial_dir in sweep.trial_dirs():
        df = pd.DataFrame(sweep.reports(sweep.trial_id(trial_dir)))
        df["trial_id"] = sweep.trial_id(trial_dir)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report(sweep: Sweep, wall_s: float | None = None) -> str:
    board = sweep.board()
    space_res = sweep.saved()["overrides"]["resources"]
    unit = "GPU-hours" if space_res.get("gpu") else "CPU-hours"
    reports = trial_reports(sweep)
    lines = [
        f"sweep {sweep.name}: {len(board)} trials: "
        + ", ".join(f"{n} {s}" for s, n in sorted(board["status"].value_counts().items()))
    ]
    own = board["wall_s"].sum()
    lines.append(
        f"trials' own time {own:.0f} s = {board['device_hours'].sum():.3f} {unit} "
        f"({space_res.get('gpu') or space_res.get('cpu')} per trial)"
    )
    if wall_s:
        lines.append(f"sweep wall time {wall_s:.0f} s")
    if len(reports) and "sec_per_iter" in reports:
        backbone = board.set_index("trial_id")["hp.backbone"] if "hp.backbone" in board else None
        reports["backbone"] = reports["trial_id"].map(backbone) if backbone is not None else "?"
        g = reports.groupby("backbone")
        table = pd.DataFrame(
            {
                "trials": g["trial_id"].nunique(),
                "s_per_iter_median": g["sec_per_iter"].median().round(3),
                "s_per_iter_min": g["sec_per_iter"].min().round(3),
                "s_per_iter_max": g["sec_per_iter"].max().round(3),
                "val_s_median": g["val_seconds"].median().round(1),
                "val_map50_max": g["val_map50"].max().round(4),
            }
        )
        lines.append(table.to_string())
    ok = ranked(board)
    if len(ok):
        b = ok.iloc[0]
        lines.append(
            f"best {SCORE} {b[SCORE]:.4f} (trial {b['trial_id']}, "
            f"{b.get('hp.backbone', '?')}, epoch {b['best_epoch']} of {b['epochs']})"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--wall-s", type=float)
    args = p.parse_args()
    print(report(Sweep.open(args.sweep.parent, args.sweep.name), args.wall_s))


if __name__ == "__main__":
    main()
