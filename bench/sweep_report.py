"""Figures of a finished sweep folder: trials by status, device-hours, s/iteration and validation time per backbone,
best val_map50. Reads only files: leaderboard.csv and each trial's progress.csv (no Ray needed).

python bench/sweep_report.py results/NAME [--wall-s SECONDS]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def trial_reports(sweep: Path) -> pd.DataFrame:
    """Every report of every trial (one row per validation), with the trial's backbone."""
    frames = []
    for progress in sorted(sweep.glob("trial_*/progress.csv")):
        df = pd.read_csv(progress)
        df["trial_id"] = progress.parent.name.removeprefix("trial_")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report(sweep: Path, wall_s: float | None = None) -> str:
    board = pd.read_csv(sweep / "leaderboard.csv")
    space_res = json.loads((sweep / "sweep.json").read_text())["overrides"]["resources"]
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
                "best_val_map50": g["val_map50"].max().round(4),
            }
        )
        lines.append(table.to_string())
    ok = board[board["status"].isin(["finished", "stopped_early"])]
    if len(ok):
        b = ok.sort_values("best_val_map50", ascending=False).iloc[0]
        lines.append(
            f"best val_map50 {b['best_val_map50']:.4f} (trial {b['trial_id']}, "
            f"{b.get('hp.backbone', '?')}, epoch {b['best_epoch']} of {b['epochs']})"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--wall-s", type=float)
    args = p.parse_args()
    print(report(args.sweep, args.wall_s))


if __name__ == "__main__":
    main()
