"""Re-training chosen sweep trials on other data: confirmation folds (search.confirm) and the refit (search.refit).

A rerun is a fixed list of jobs, each a sweep trial's configuration with a split of its own, run as Ray Tune trials
(grid over the jobs, no searcher, no early stopping) with the sweep's resources, in a folder inside the sweep's:
RESULTS/SWEEP/confirm or RESULTS/SWEEP/refit. Like a sweep, an interrupted rerun continues where it stopped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from search import outcome
from search.leaderboard import trial_reports
from search.space import Space, load_space
from search.sweeps import BOARD, SETTINGS_FILE, SPACE_COPY, UsageError, read_json, read_settings, unreadable
from search.tuning import Resumed, ray_error, run_config, start_ray, tune_names  # sets Ray's environment defaults
from trainable.config import ConfigError, validate
from trainable.data import DatasetError
from trainable.files import check_folder
from trainable.metrics import METRIC, SCORE
from trainable.settings import Settings

JOBS_FILE = "jobs.json"  # the rerun's jobs, written when it starts: running the command again checks them
JOB_KEYS = ("role", "trial", "trial_id", "config", "split", "fold", "folds")  # of each job (see `job`)


def sweep_space(folder: Path, data: str | None = None) -> tuple[Space, Settings, dict]:
    """(space, trial settings, sweep.json) of a sweep as it ran: its copy of the space with the CLI's overrides;
    `data`: the dataset's new place (--data), if it has moved since the sweep."""
    if not (folder / SPACE_COPY).is_file() or not (folder / SETTINGS_FILE).is_file():
        raise UsageError(f"{folder}: not a sweep folder (no {SPACE_COPY} or {SETTINGS_FILE})")
    space, saved = load_space(folder / SPACE_COPY), read_settings(folder)
    for k, v in saved["overrides"].items():
        setattr(space, k, v)
    settings = saved_settings(folder, saved)
    settings.data = str(Path(data).expanduser().resolve()) if data else settings.data
    given = "--data" if data else f"the sweep's data folder ({folder / SETTINGS_FILE})"
    check_folder(settings.data, UsageError, given)
    if not Path(settings.data).is_dir():
        raise UsageError(f"{settings.data}: {given} not found (moved?): give --data DIR")
    return space, settings, saved


def trial_config(folder: Path, row: dict, space: Space | None = None) -> dict:
    """The searched values of a sweep trial (its Ray config), for re-training it; checked against `space`."""
    path = folder / f"trial_{row['trial_id']}" / "params.json"
    if "trial" not in row or not path.is_file():
        raise UsageError(
            f"{folder}: trial {row['trial_id']} has no {'params.json' if 'trial' in row else 'number in ' + BOARD} "
            f"(a sweep from an older version: python -m search.run --resume --name {folder.name} rebuilds it)"
        )
    config = read_json(path, dict)
    try:
        if space is not None:
            validate(space.hparams(config))
    except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError
        raise unreadable(path, f"not a configuration of this sweep's space: {type(e).__name__}: {e}"[:160]) from None
    return config


def saved_settings(folder: Path, saved: dict) -> Settings:
    """The trial settings of sweep.json (`saved`); one UsageError naming the file where they are not a trial's."""
    try:
        return Settings.from_dict(saved["settings"])
    except (ConfigError, DatasetError, TypeError) as e:
        raise unreadable(folder / SETTINGS_FILE, f"settings: {e}"[:160]) from None


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


def build_tuner(folder: Path, jobs: list[dict], space: Space, settings: Settings, callbacks: list):
    """Ray Tune's Tuner of the jobs in `folder` (restored when it already ran: unfinished and errored jobs go on)."""
    from ray import tune

    from search.checkpoints import TrainerStatePruner

    trainable = tune.with_resources(
        tune.with_parameters(rerun_trial, space=space, settings=settings.__dict__),
        {"cpu": space.resources["cpu"], "gpu": space.resources["gpu"]},
    )
    callbacks = [*callbacks, TrainerStatePruner()]
    validated = any(j["split"]["val_ids"] for j in jobs)
    reporter = tune.CLIReporter(
        parameter_columns={"job/trial": "trial", "job/fold": "fold"},
        metric_columns=["epoch", METRIC, SCORE, "total_loss"] if validated else ["epoch", "total_loss"],
        max_report_frequency=30,
        sort_by_metric=False,
    )
    param_space = {"job": tune.grid_search(jobs)}
    tune_config = tune.TuneConfig(max_concurrent_trials=space.max_concurrent, **tune_names())
    # The best report's checkpoint (val_map50) and the latest; without validation data, the latest only.
    runs = run_config(folder, space, reporter, callbacks, score=METRIC if validated else None)
    if tune.Tuner.can_restore(str(folder)):  # as search.run: with this launch's callbacks
        return Resumed(trainable, param_space, tune_config, runs, errored=True)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=runs)


def write_jobs(folder: Path, jobs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOBS_FILE).write_text(json.dumps(jobs, indent=1))


def read_jobs(folder: Path) -> list[dict] | None:
    f = folder / JOBS_FILE
    return read_json(f, list, JOB_KEYS) if f.is_file() else None


def results(folder: Path, space: Space) -> list[dict]:
    """Each job trial of a rerun folder: its job, Ray trial id, status and score (search.outcome), reports."""
    from ray.tune import ExperimentAnalysis

    rows = []
    for trial in ExperimentAnalysis(str(folder)).trials:
        reports = trial_reports(folder / f"trial_{trial.trial_id}")
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


def run(
    folder: Path,
    jobs: list[dict],
    space: Space,
    settings: Settings,
    address: str | None,
    tracking: dict | None,
    replace: bool = False,
) -> list[dict]:
    """Run (or continue) the jobs in `folder` on local Ray or the cluster at `address`; the results of every job.
    `tracking`: {"uri", "parent", "sweep"} of the sweep's MLflow run, or None. `replace`: start over (what `folder`
    holds is removed once Ray has started). Ray that does not start is a UsageError, raised before anything is
    written."""
    import ray

    try:
        start_ray(address)
    except Exception as e:  # noqa: BLE001 - refused, wrong token, not a Ray port...
        raise UsageError(ray_error(address, e).removeprefix("error: ")) from None
    try:
        if replace and folder.exists():
            shutil.rmtree(folder)
        write_jobs(folder, jobs)
        callback = None
        if tracking:
            from search import tracking as mlflow_tracking

            uri = tracking["uri"]
            root = folder.parent.parent / "mlartifacts" if uri.startswith("sqlite") else None
            tracker = mlflow_tracking.Tracker(uri, artifact_root=root)
            callback = mlflow_tracking.RerunCallback(tracker, tracking["parent"], space, folder, tracking["sweep"])
        tuner = build_tuner(folder, jobs, space, settings, [callback] if callback else [])
        try:
            tuner.fit()
        except Exception as e:  # noqa: BLE001 - a failure of Ray Tune itself: the trials' results still count
            print(f"warning: Ray Tune stopped with {type(e).__name__}: {e}", flush=True)
        rows = results(folder, space)
    finally:
        ray.shutdown()
    if callback:
        from search import tracking as mlflow_tracking

        mlflow_tracking.close_reruns(callback, [(r["id"], r["config"], r["status"]) for r in rows])
    return rows
