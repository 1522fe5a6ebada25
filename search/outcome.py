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

from trainable.metrics import PROGRESS, SCORE

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
