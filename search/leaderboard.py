"""One row per trial of a finished (or interrupted) sweep, from Ray Tune's experiment state on disk (the sweep's
leaderboard: search.sweep.Sweep writes it and reads it back)."""

from __future__ import annotations

import pandas as pd

from search import outcome
from search.space import Space, param_text
from search.sweep import Sweep, ranked
from trainable.metrics import MEASURE_KEYS, SCORE


def _last_line(text: str | None) -> str:
    """The last non-empty line of a traceback: the exception and its message."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def build(sweep: Sweep, space: Space) -> pd.DataFrame:
    """Leaderboard rows, best score first; status, score and the rest as search.outcome defines them."""
    analysis = sweep.analysis(default_metric=SCORE, default_mode="max")
    rows = []
    for trial in analysis.trials:
        try:
            hp = space.hparams(trial.config)
        except KeyError:  # a trial that never got a configuration
            hp = {}
        # The trial's own result.json, not Ray's analysis.trial_dataframes: Ray leaves a trial's frame empty when its
        # experiment snapshot holds no result for it (a driver killed, storage down), though its reports are stored.
        s = outcome.summary(trial.status, sweep.reports(trial.trial_id), space.resources)
        if s["status"] == "error":
            s["failure_reason"] = s["failure_reason"] or _last_line(sweep.error(trial.trial_id)) or "trial raised"
        rows.append(
            {
                "trial_id": trial.trial_id,
                "trial": outcome.number(trial.experiment_tag, space.searcher),
                "status": s["status"],
                SCORE: s["score"],
                "best_epoch": s["best_epoch"],
                **{k: s[k] for k in MEASURE_KEYS if k in s},  # at the best epoch, where validation measured them
                "epochs_run": s["epochs_run"],
                "epochs": hp.get("epochs"),
                "stopped_early": s["status"] == "stopped_early",
                "wall_s": s["wall_s"],
                # GPU-hours on a GPU cluster; CPU-hours (wall x CPUs per trial) on CPU.
                "device_hours": s["device_hours"],
                "failure_reason": s["failure_reason"],
                **{f"hp.{k}": (str(v) if isinstance(v, list) else v) for k, v in sorted(hp.items())},
                "path": str(sweep.trial_dir(trial.trial_id)),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values([SCORE, "trial"], ascending=[False, True], na_position="last")
        table = table.reset_index(drop=True)
    return table


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
    ok = ranked(table) if len(table) else table
    if len(ok):
        b = ok.iloc[0]
        hps = ", ".join(f"{n} {param_text(_plain(b[f'hp.{n}']))}" for n in space.searched_names() if f"hp.{n}" in b)
        lines.append(
            f"best: trial {b['trial']:02d} ({b['trial_id']}) {SCORE} {b[SCORE]:.4f} at epoch "
            f"{int(b['best_epoch'])}: {hps}"
        )
        measured = [k for k in MEASURE_KEYS if k in b and pd.notna(b[k])]
        if measured:
            lines.append("  nuclei measures at that epoch: " + ", ".join(f"{k} {b[k]:.4f}" for k in measured))
    return "\n".join(lines)
