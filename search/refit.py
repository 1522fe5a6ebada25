"""Refit: the chosen trial's configuration re-trained on every labelled tile (search.export --refit).

Like scikit-learn's refit=True: the sweep chose hyperparameters on a validation split; the final model also learns
from the validation tiles. The schedule carries over in epochs: epochs, warm-up and decay epochs stay as the sweep
chose them, and an epoch is one pass over all the tiles, so it has more iterations (the course data at batch 1: 24
instead of 20, 120 epochs = 2,880 iterations instead of 2,400), which keeps the number of times each tile is seen.
The refit runs as a Ray Tune trial with the sweep's resources in RESULTS/SWEEP/refit and is logged to MLflow as the
sweep's `refit` run. There is nothing left to validate on, so it has no val_map50.
"""

from __future__ import annotations

from pathlib import Path

from search import reruns
from search.sweeps import REFIT_DIR, UsageError
from trainable.config import schedule
from trainable.data import Split, load_train_records


class RefitError(RuntimeError):
    """A refit that did not run to its end (interrupted, diverged, raised): exit 1, the message says what next."""


def plan(folder: Path, row: dict, data: str | None, force: bool) -> tuple[dict, dict]:
    """The refit's job and context; every check before anything is written."""
    space, settings, saved = reruns.sweep_space(folder, data)
    records, _ = load_train_records(settings.data, settings.cache_dir)
    config = reruns.trial_config(folder, row, space)
    job = reruns.job("refit", row, config, [], len(records))
    existing = reruns.read_jobs(folder / REFIT_DIR)
    if existing and existing != [job] and not force:
        raise UsageError(
            f"{folder / REFIT_DIR}: holds the refit of trial {existing[0]['trial']:02d} ({existing[0]['trial_id']}), "
            f"not of trial {job['trial']:02d} ({job['trial_id']}): add --force to replace it"
        )
    hp = space.hparams(config)
    sweep_train, _ = Split.from_dict(settings.split).apply([r["image_id"] for r in records])
    now, before = schedule(hp, len(records)), schedule(hp, len(sweep_train))
    return job, {"space": space, "settings": settings, "saved": saved, "hp": hp, "now": now, "before": before}


def latest_checkpoint(trial_dir: Path) -> Path | None:
    done = sorted(d for d in trial_dir.glob("checkpoint_*") if (d / "model.pth").is_file())
    return done[-1] if done else None


def finished(folder: Path, job: dict, space) -> Path | None:
    """The checkpoint of a refit of `job` that ran to its end, or None."""
    from ray.tune import Tuner

    if reruns.read_jobs(folder) != [job] or not Tuner.can_restore(str(folder)):
        return None
    rows = reruns.results(folder, space)
    if len(rows) == 1 and rows[0]["status"] == "finished":
        return latest_checkpoint(folder / f"trial_{rows[0]['id']}")
    return None


def refit(folder: Path, job: dict, ctx: dict, address: str | None, force: bool) -> Path:
    """The refit model's checkpoint folder: reused when this job already ran to its end (unless `force`), else
    trained (an interrupted refit continues)."""
    out = folder / REFIT_DIR
    space, hp, now, before = ctx["space"], ctx["hp"], ctx["now"], ctx["before"]
    if not force:
        ckpt = finished(out, job, space)
        if ckpt is not None:
            print(f"refit: reusing {ckpt} (trial {job['trial']:02d}'s refit; --force retrains)", flush=True)
            return ckpt
    print(
        f"refit: trial {job['trial']:02d} ({job['trial_id']}) on all {job['num_train']} labelled tiles, seed "
        f"{hp['seed']}: {hp['epochs']} epochs of {now['iters_per_epoch']} iterations = {now['max_iter']} (the sweep's "
        f"{before['max_iter']}), decays at iterations {list(now['steps'])} (epochs {list(hp['decay_epochs'])})",
        flush=True,
    )
    tracking = None
    saved = ctx["saved"]
    if saved.get("mlflow_uri", "off") != "off" and saved.get("mlflow_parent_run_id"):
        tracking = {"uri": saved["mlflow_uri"], "parent": saved["mlflow_parent_run_id"], "sweep": folder.name}
    rows = reruns.run(out, [job], space, ctx["settings"], address, tracking, replace=force)
    if len(rows) != 1 or rows[0]["status"] != "finished":
        status = rows[0]["status"] if rows else "unfinished"
        reason = f": {rows[0]['failure_reason']}" if rows and rows[0]["failure_reason"] else ""
        then = {
            "failed": "its seed diverges again: refit another trial with --trial ID",
            "error": f"see error.txt in {out}; the same command retries it from its last checkpoint",
        }.get(status, "the same command (without --force) continues it")
        raise RefitError(f"refit {status}{reason} ({then})")
    ckpt = latest_checkpoint(out / f"trial_{rows[0]['id']}")
    if ckpt is None:
        raise RefitError(f"{out}: the refit left no checkpoint")
    return ckpt
