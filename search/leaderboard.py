"""One row per trial of a finished (or interrupted) sweep, from Ray Tune's experiment state on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from search import outcome
from search.space import Space
from trainable.metrics import METRIC, SCORE

COLUMNS = [
    "trial_id",
    "status",
    "best_val_map50",
    "best_epoch",
    "epochs_run",
    "epochs",
    "stopped_early",
    "wall_s",
    "device_hours",
    "failure_reason",
]


def _first_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def build(experiment_path: str | Path, space: Space) -> pd.DataFrame:
    """Leaderboard rows, best score first; status and score as search.outcome defines them."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment_path), default_metric=SCORE, default_mode="max")
    gpus, cpus = space.resources.get("gpu", 0), space.resources.get("cpu", 1)
    rows = []
    for trial in analysis.trials:
        try:
            hp = space.hparams(trial.config)
        except KeyError:  # a trial that never got a configuration
            hp = {}
        df = analysis.trial_dataframes.get(trial.trial_id)
        df = df if df is not None and len(df) else pd.DataFrame()
        last = {k: v for k, v in (df.iloc[-1].to_dict() if len(df) else {}).items() if v == v}  # NaN: not reported
        status = outcome.status(trial.status, last)
        failure = last.get("failure_reason", "")
        if status == "error":
            failure = failure or _first_line(trial.error_file and _read(trial)) or "trial raised"
        scored = df[df.get("diverged", pd.Series(0, index=df.index)).fillna(0) == 0] if len(df) else df
        best = scored.loc[scored[METRIC].idxmax()] if len(scored) and METRIC in scored else None
        wall = float(last.get("time_total_s", 0.0) or 0.0)
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": status,
                "best_val_map50": outcome.score(last),
                "best_epoch": int(best["epoch"]) if best is not None and status != "failed" else None,
                "epochs_run": int(last.get("epoch", 0) or 0),
                "epochs": hp.get("epochs"),
                "stopped_early": status == "stopped_early",
                "wall_s": round(wall, 1),
                # GPU-hours on a GPU cluster; CPU-hours (wall x CPUs per trial) on CPU.
                "device_hours": round(wall * (gpus if gpus else cpus) / 3600, 4),
                "failure_reason": failure,
                **{f"hp.{k}": (str(v) if isinstance(v, list) else v) for k, v in sorted(hp.items())},
                "path": trial.storage.trial_fs_path if trial.storage else "",
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("best_val_map50", ascending=False, na_position="last").reset_index(drop=True)
    return table


def trial_reports(trial_dir: str | Path) -> list[dict]:
    """Every report of a trial, in order, from Ray's result.json in its folder ([] before its first report)."""
    f = Path(trial_dir) / "result.json"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def _read(trial) -> str:
    try:
        return Path(trial.storage.trial_fs_path, "error.txt").read_text()
    except OSError:
        return ""


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def summary(table: pd.DataFrame, space: Space, wall_s: float) -> str:
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    unit = "GPU-hours" if space.resources.get("gpu") else "CPU-hours"
    lines = [
        f"{len(table)} trial(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        f"sweep wall time {wall_s:.0f} s; trials' own time {table['wall_s'].sum():.0f} s; "
        f"{table['device_hours'].sum():.3f} {unit}",
    ]
    ok = table[table["status"].isin(outcome.SCORED)] if len(table) else table
    if len(ok):
        b = ok.iloc[0]
        searched = set(space.params) | ({"decay_epochs"} if "decay" in space.params else set())
        hps = {k[3:]: _plain(b[k]) for k in table.columns if k.startswith("hp.") and k[3:] in searched}
        lines.append(
            f"best: trial {b['trial_id']} val_map50 {b['best_val_map50']:.4f} at epoch {b['best_epoch']} {hps}"
        )
    return "\n".join(lines)
