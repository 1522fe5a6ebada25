"""Re-training chosen sweep trials on other data: confirmation folds (search.confirm) and the refit (search.refit).

A rerun is a fixed list of jobs, each a sweep trial's configuration with a split of its own, run as Ray Tune trials
(grid over the jobs, no searcher, no early stopping) with the sweep's resources, in a folder inside the sweep's:
RESULTS/SWEEP/confirm or RESULTS/SWEEP/refit. Like a sweep, an interrupted rerun continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from search import outcome, tuning  # tuning: Ray's environment defaults, before Ray loads
from search.space import Space
from search.sweep import Experiment, Sweep, UsageError
from trainable.metrics import METRIC, SCORE
from trainable.settings import Settings

JOB_KEYS = ("role", "trial", "trial_id", "config", "split", "fold", "folds")  # of each job (see `job`)


def job(
    role: str, row: dict, config: dict, val_ids: list[str], num_train: int, train_ids=None, fold=None, folds=None
) -> dict:
    """One rerun: sweep trial `row` (leaderboard) with its searched `config`, validated on `val_ids`, trained on
    `train_ids` (None: every other labelled tile, the refit), `num_train` tiles."""
    split = {"val_ids": list(val_ids)} | ({"train_ids": list(train_ids)} if train_ids is not None else {})
    return {
        "role": role,
        "trial": int(row["trial"]),
        "trial_id": str(row["trial_id"]),
        "config": config,
        "split": split,
        "num_train": num_train,
        "fold": fold,
        "folds": folds,
    }


def rerun_trial(config: dict, space: Space, settings: dict) -> None:
    """The trainable: the sweep trial's hyperparameters (its seed included) and settings (validations at the same
    points of the schedule, ASHA's rungs included, so that scores compare), the job's split."""
    from trainable.train import tune_trial

    job = config["job"]
    tune_trial(space.hparams(job["config"]), {**settings, "split": job["split"]})


def build_tuner(rerun: Experiment, jobs: list[dict], space: Space, settings: Settings, callbacks: list):
    """Ray Tune's Tuner of the jobs in `rerun` (restored when it already ran: unfinished and errored jobs go on)."""
    from ray import tune

    validated = any(j["split"]["val_ids"] for j in jobs)
    reporter = tuning.progress_table(
        {"job/trial": "trial", "job/fold": "fold"},
        ["epoch", METRIC, SCORE, "total_loss"] if validated else ["epoch", "total_loss"],
    )
    tune_config = tune.TuneConfig(max_concurrent_trials=space.max_concurrent, **tuning.tune_names())
    # The best report's checkpoint (val_map50) and the latest; without validation data, the latest only.
    runs = tuning.run_config(rerun, space, reporter, callbacks, score=METRIC if validated else None)
    resume = rerun.can_restore()  # as search.run: with this launch's callbacks
    job_grid = {"job": tune.grid_search(jobs)}
    return tuning.make_tuner(
        tuning.tune_trainable(rerun_trial, space, settings), job_grid, tune_config, runs, resume, errored=True
    )


def read_jobs(rerun: Experiment) -> list[dict] | None:
    """The jobs a rerun started with (None before it started)."""
    return rerun.read_jobs(JOB_KEYS)


def results(rerun: Experiment, space: Space) -> list[dict]:
    """Each job trial of a rerun: its job, Ray trial id, status and score (search.outcome), reports."""
    rows = []
    for trial in rerun.analysis().trials:
        reports = rerun.reports(trial.trial_id)
        rows.append(
            {
                "job": trial.config["job"],
                "id": trial.trial_id,
                "config": trial.config,
                **outcome.summary(trial.status, reports, space.resources),
                "reports": reports,
            }
        )
    return rows


@dataclass(frozen=True)
class Rerun:
    """A sweep's rerun (its confirmation or its refit): where it runs, its jobs, and how they train."""

    sweep: Sweep
    experiment: Experiment  # sweep.confirmation or sweep.refit
    jobs: list[dict]
    space: Space
    settings: Settings


def run(rerun: Rerun, address: str | None, replace: bool = False) -> list[dict]:
    """Run (or continue) the rerun's jobs on local Ray or the cluster at `address`; the results of every job, logged
    under the sweep's MLflow run where it has one. `replace`: start over (what the rerun's folder holds is removed
    once Ray has started). Ray that does not start is a UsageError, raised before anything is written."""
    import ray

    try:
        tuning.start_ray(address)
    except Exception as e:  # noqa: BLE001 - refused, wrong token, not a Ray port...
        raise UsageError(tuning.ray_error(address, e).removeprefix("error: ")) from None
    experiment, space, tracking = rerun.experiment, rerun.space, rerun.sweep.mlflow_run()
    try:
        if replace:
            experiment.remove()
        experiment.write_jobs(rerun.jobs)
        callback = None
        if tracking:
            from search import tracking as mlflow_tracking

            tracker = mlflow_tracking.Tracker(tracking["uri"], artifact_root=rerun.sweep.artifact_root(tracking["uri"]))
            callback = mlflow_tracking.RerunCallback(tracker, tracking["parent"], space, experiment, rerun.sweep.name)
        tuner = build_tuner(experiment, rerun.jobs, space, rerun.settings, [callback] if callback else [])
        try:
            tuner.fit()
        except Exception as e:  # noqa: BLE001 - a failure of Ray Tune itself: the trials' results still count
            print(f"warning: Ray Tune stopped with {type(e).__name__}: {e}", flush=True)
        rows = results(experiment, space)
    finally:
        ray.shutdown()
    if callback:
        from search import tracking as mlflow_tracking

        mlflow_tracking.close_reruns(callback, [(r["id"], r["config"], r["status"]) for r in rows])
    return rows
