"""How a trial ended and what it scored: one rule, read by the leaderboard, MLflow and the searcher.

status
    finished       ran its whole schedule
    stopped_early  ASHA stopped it at a rung (Ray ended it before the end of its schedule)
    failed         its loss became NaN/Inf (the trial reports `failure_reason` and ends itself)
    error          it raised and ran out of retries (Ray's ERROR)
    unfinished     still to run when the sweep stopped (time budget, Ctrl-C, a lost driver): --resume continues it
score
    the trial's last `val_map50_best` (trainable.metrics.SCORE): its best val_map50 over every report, 0 if its loss
    diverged (an unstable configuration scores nothing, whatever it reached before); NaN before the first report.
"""

from __future__ import annotations

import math

from trainable.metrics import MEASURE_KEYS, METRIC, PROGRESS, SCORE

# search.confirm's figures of a trial, one name each in its ranking, the leaderboard, MLflow and the docs: the mean
# and sample standard deviation of its score over the folds that took no part in choosing it, and how many scored.
CONFIRM_MEAN, CONFIRM_STD, CONFIRM_FOLDS = "confirm_mean", "confirm_std", "confirm_folds"

ENDED = ("finished", "stopped_early", "failed", "error")  # --resume has nothing left to do for these
SCORED = ("finished", "stopped_early")  # candidates for `export --best`


def status(ray_status: str, last: dict) -> str:
    """A trial's status from Ray's trial status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED) and its last report."""
    if ray_status == "ERROR":
        return "error"
    if isinstance(last.get("failure_reason"), str) and last["failure_reason"]:
        return "failed"
    if ray_status != "TERMINATED":
        return "unfinished"
    # A budget or an interrupt leaves trials RUNNING/PENDING in Ray's state (search.run stops Ray Tune like Ctrl-C),
    # so a TERMINATED trial short of its schedule is one the scheduler stopped.
    return "finished" if float(last.get(PROGRESS, 0.0) or 0.0) >= 1.0 else "stopped_early"


def score(last: dict) -> float:
    value = last.get(SCORE)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else float("nan")


def summary(ray_status: str, reports: list[dict], resources: dict) -> dict:
    """One trial in a few numbers, for the leaderboard and its MLflow run: status, score, the epoch of its best report
    (none for a diverged trial), epochs run, wall time and device-hours (GPU-hours, or CPU-hours without GPUs), and
    the nuclei measures of its best report where validation measured them (val_f1, val_pq, ...)."""
    last = reports[-1] if reports else {}
    ended = status(ray_status, last)
    scored = [r for r in reports if not r.get("diverged") and METRIC in r]
    best = max(scored, key=lambda r: r[METRIC]) if scored and ended != "failed" else None  # the first of equals
    wall = float(last.get("time_total_s", 0.0) or 0.0)
    per_trial = resources.get("gpu") or resources.get("cpu", 1)
    return {
        "status": ended,
        "score": score(last),
        "best_epoch": int(best["epoch"]) if best else None,
        "epochs_run": int(last.get("epoch", 0) or 0),
        "wall_s": round(wall, 1),
        "device_hours": round(wall * per_trial / 3600, 4),
        "failure_reason": str(last.get("failure_reason") or ""),
        **{k: best[k] for k in MEASURE_KEYS if best and k in best},
    }


def hours_key(resources: dict) -> str:
    """The name of device-hours for these resources: gpu_hours, or cpu_hours for CPU-only trials."""
    return "gpu_hours" if resources.get("gpu") else "cpu_hours"


def number(experiment_tag: str, searcher: str) -> int:
    """A trial's number in its sweep (1, 2, ...), from the tag Ray gives it: Optuna's generator counts from 1, Ray's
    variant generator (random, grid) from 0."""
    return int(experiment_tag.split("_")[0]) + (0 if searcher == "optuna" else 1)


def complete(statuses, expected: int) -> bool:
    """A sweep (or rerun) is complete when `expected` trials ended and none is left unfinished."""
    statuses = list(statuses)
    return sum(s in ENDED for s in statuses) >= expected and "unfinished" not in statuses
