"""One row per trial of a finished (or interrupted) sweep, from Ray Tune's experiment state on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from search import outcome
from search.space import Space, param_text
from search.sweeps import BOARD, CONFIRM_DIR, CONFIRMED, UsageError, read_json, read_table, unreadable
from trainable.metrics import SCORE

CONFIRM_COLUMNS = {"mean_val_map50": "confirm_mean", "std_val_map50": "confirm_std", "folds_scored": "confirm_folds"}


def _last_line(text: str | None) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def build(experiment_path: str | Path, space: Space) -> pd.DataFrame:
    """Leaderboard rows, best score first; status, score and the rest as search.outcome defines them."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment_path), default_metric=SCORE, default_mode="max")
    rows = []
    for trial in analysis.trials:
        try:
            hp = space.hparams(trial.config)
        except KeyError:  # a trial that never got a configuration
            hp = {}
        trial_dir = Path(experiment_path, f"trial_{trial.trial_id}")  # search.tuning.trial_dirname
        s = outcome.summary(trial.status, trial_reports(trial_dir), space.resources)
        if s["status"] == "error":
            s["failure_reason"] = s["failure_reason"] or _last_line(_read(trial)) or "trial raised"
        rows.append(
            {
                "trial_id": trial.trial_id,
                "trial": outcome.number(trial.experiment_tag, space.searcher),
                "status": s["status"],
                "best_val_map50": s["score"],
                "best_epoch": s["best_epoch"],
                "epochs_run": s["epochs_run"],
                "epochs": hp.get("epochs"),
                "stopped_early": s["status"] == "stopped_early",
                "wall_s": s["wall_s"],
                # GPU-hours on a GPU cluster; CPU-hours (wall x CPUs per trial) on CPU.
                "device_hours": s["device_hours"],
                "failure_reason": s["failure_reason"],
                **{f"hp.{k}": (str(v) if isinstance(v, list) else v) for k, v in sorted(hp.items())},
                "path": str(trial_dir),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["best_val_map50", "trial"], ascending=[False, True], na_position="last")
        table = table.reset_index(drop=True)
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
        hps = ", ".join(f"{n} {param_text(_plain(b[f'hp.{n}']))}" for n in space.searched_names() if f"hp.{n}" in b)
        lines.append(
            f"best: trial {b['trial']:02d} ({b['trial_id']}) val_map50 {b['best_val_map50']:.4f} at epoch "
            f"{int(b['best_epoch'])}: {hps}"
        )
    return "\n".join(lines)


def read(folder: Path) -> pd.DataFrame:
    """A sweep's leaderboard.csv, with the confirm_* columns of its confirmation where one ran (read from the
    confirmation's own folder each time: never a copy that could outlive it); a sweep without one has not ended."""
    path = folder / BOARD
    if not path.is_file():
        raise UsageError(f"{folder}: no {BOARD} (the sweep has not ended; resume it first)")
    board = read_table(path, ("trial_id", "status", "best_val_map50"), numbers=("best_val_map50",))
    board = board.drop(columns=[c for c in CONFIRM_COLUMNS.values() if c in board])  # written by older versions
    confirmed = confirmation(folder)
    if confirmed is None:
        return board
    extra = confirmed[["trial_id", *(c for c in CONFIRM_COLUMNS if c in confirmed)]].rename(columns=CONFIRM_COLUMNS)
    return board.merge(extra, on="trial_id", how="left")


def confirmation(folder: Path) -> pd.DataFrame | None:
    """search.confirm's ranking of the sweep (best first), or None where none ran to its end. It must be the ranking
    of the jobs beside it (confirm/jobs.json): anything else is one error, never a ranking to trust."""
    path = folder / CONFIRMED
    if not path.is_file():
        return None
    jobs_file = folder / CONFIRM_DIR / "jobs.json"  # search.reruns.JOBS_FILE
    table = read_table(path, ("trial_id", "mean_val_map50", "folds_scored"), numbers=("mean_val_map50", "folds_scored"))
    ran = {str(j["trial_id"]) for j in read_json(jobs_file, list, ("trial_id",))} if jobs_file.is_file() else None
    if not ran or set(table["trial_id"]) != ran:
        raise UsageError(
            f"{path}: does not match the confirmation jobs beside it ({jobs_file.name}): run search.confirm again, or "
            f"delete {path.parent} to ship without confirmation"
        )
    return table


def winner(folder: Path, board: pd.DataFrame) -> tuple[dict, str, Path]:
    """(leaderboard row, why, the folder of the trial whose checkpoint to ship) of the trial to ship: the winner of
    search.confirm where it ran to the end, else the scored trial with the highest score. A confirmed winner that ASHA
    stopped early ships the checkpoint of its confirmation on fold 0, its whole schedule on the sweep's split; where
    that is missing, one error (never the sweep's checkpoint, cut short by ASHA)."""
    confirmed = confirmation(folder)
    if confirmed is not None:
        top = confirmed.iloc[0]
        rows = board[board["trial_id"] == top["trial_id"]]
        if rows.empty:
            raise UsageError(f"{folder / CONFIRMED}: its winner {top['trial_id']} is not in {folder / BOARD}")
        row = rows.iloc[0].to_dict()
        why = (
            f"confirmed winner: mean val_map50 {top['mean_val_map50']:.4f} over {int(top['folds_scored'])} folds "
            "that took no part in the selection"
        )
        if row["status"] == "finished":
            return row, why, folder / f"trial_{row['trial_id']}"
        for params in sorted((folder / CONFIRM_DIR).glob("trial_*/params.json")):
            job = read_json(params, dict, ("job",))["job"]
            if not isinstance(job, dict) or not {"trial_id", "fold"} <= set(job):
                raise unreadable(params, "job: expected a mapping with trial_id and fold")
            if job["trial_id"] == row["trial_id"] and job["fold"] == 0:
                why += f"; stopped early in the sweep, so its full schedule on fold 0 ({params.parent.name})"
                return row, why, params.parent
        raise UsageError(
            f"{folder / CONFIRM_DIR}: the confirmed winner, trial {int(row['trial']):02d} ({row['trial_id']}), was "
            "stopped early in the sweep and its fold-0 retrain, the checkpoint to ship, is missing: run search.confirm "
            "again to retrain it"
        )
    rows = board[board["status"].isin(outcome.SCORED) & board["best_val_map50"].notna()]
    if rows.empty:
        raise UsageError(f"{folder / BOARD}: no finished trial")
    best = rows.sort_values("best_val_map50", ascending=False, kind="stable").iloc[0].to_dict()
    return best, f"best val_map50 {best['best_val_map50']:.4f}", folder / f"trial_{best['trial_id']}"
