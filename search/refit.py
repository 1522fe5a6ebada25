"""Refit: the chosen trial's configuration re-trained on every labelled tile (search.export --refit).

Like scikit-learn's refit=True: the sweep chose hyperparameters on a validation split; the final model also learns
from the validation tiles. The schedule carries over in epochs: epochs, warm-up and decay epochs stay as the sweep
chose them, and an epoch is one pass over all the tiles, so it has more iterations (the course data at batch 1: 24
instead of 20, 120 epochs = 2,880 iterations instead of 2,400), which keeps the number of times each tile is seen.
The refit runs as a Ray Tune trial with the sweep's resources in RESULTS/SWEEP/refit and is logged to MLflow as the
sweep's `refit` run. There is nothing left to validate on, so it has no val_map50.
"""

from __future__ import annotations

from dataclasses import dataclass

from search import reruns
from search.sweep import Experiment, Sweep, UsageError, latest_checkpoint
from trainable.config import schedule
from trainable.data import Split, load_train_records
from trainable.storage import Store


class RefitError(RuntimeError):
    """A refit that did not run to its end (interrupted, diverged, raised): exit 1, the message says what next."""


@dataclass(frozen=True)
class Plan:
    """A refit, checked before anything is written: its rerun, the trial's hyperparameters, and its schedule now
    (every labelled tile) and in the sweep (`schedule` of trainable.config)."""

    rerun: reruns.Rerun
    hp: dict
    now: dict
    before: dict

    @property
    def job(self) -> dict:
        return self.rerun.jobs[0]


def plan(sweep: Sweep, row: dict, data: str | None, force: bool) -> Plan:
    """The refit of leaderboard row `row`; every check before anything is written."""
    space, settings = sweep.as_ran(data)
    records, _ = load_train_records(settings.data, settings.cache_dir)
    config = sweep.trial_config(row, space)
    job = reruns.job("refit", row, config, [], len(records))
    existing = reruns.read_jobs(sweep.refit)
    if existing and existing != [job] and not force:
        raise UsageError(
            f"{sweep.refit.folder}: holds the refit of trial {existing[0]['trial']:02d} ({existing[0]['trial_id']}), "
            f"not of trial {job['trial']:02d} ({job['trial_id']}): add --force to replace it"
        )
    hp = space.hparams(config)
    sweep_train, _ = Split.from_dict(settings.split).apply([r["image_id"] for r in records])
    now, before = schedule(hp, len(records)), schedule(hp, len(sweep_train))
    return Plan(reruns.Rerun(sweep, sweep.refit, [job], space, settings), hp, now, before)


def finished(refit: Experiment, job: dict, space) -> Store | None:
    """The checkpoint of a refit of `job` that ran to its end, or None."""

    if reruns.read_jobs(refit) != [job] or not refit.can_restore():
        return None
    rows = reruns.results(refit, space)
    if len(rows) == 1 and rows[0]["status"] == "finished":
        return latest_checkpoint(refit.trial_dir(rows[0]["id"]))
    return None


def refit(p: Plan, address: str | None, force: bool) -> Store:
    """The refit model's checkpoint folder: reused when this job already ran to its end (unless `force`), else
    trained (an interrupted refit continues)."""
    job, hp, now, before, out = p.job, p.hp, p.now, p.before, p.rerun.experiment
    if not force:
        ckpt = finished(out, job, p.rerun.space)
        if ckpt is not None:
            print(f"refit: reusing {ckpt} (trial {job['trial']:02d}'s refit; --force retrains)", flush=True)
            return ckpt
    print(
        f"refit: trial {job['trial']:02d} ({job['trial_id']}) on all {job['num_train']} labelled tiles, seed "
        f"{hp['seed']}: {hp['epochs']} epochs of {now['iters_per_epoch']} iterations = {now['max_iter']} (the sweep's "
        f"{before['max_iter']}), decays at iterations {list(now['steps'])} (epochs {list(hp['decay_epochs'])})",
        flush=True,
    )
    rows = reruns.run(p.rerun, address, replace=force)
    if len(rows) != 1 or rows[0]["status"] != "finished":
        status = rows[0]["status"] if rows else "unfinished"
        reason = f": {rows[0]['failure_reason']}" if rows and rows[0]["failure_reason"] else ""
        then = {
            "failed": "its seed diverges again: refit another trial with --trial ID",
            "error": f"see error.txt in {out.folder}; the same command retries it from its last checkpoint",
        }.get(status, "the same command (without --force) continues it")
        raise RefitError(f"refit {status}{reason} ({then})")
    ckpt = latest_checkpoint(out.trial_dir(rows[0]["id"]))
    if ckpt is None:
        raise RefitError(f"{out.folder}: the refit left no checkpoint")
    return ckpt
