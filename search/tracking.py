"""MLflow: one parent run per sweep, one nested child run per trial, logged from the Ray Tune driver.

Everything goes through the driver (a Ray Tune callback): workers need no access to the tracking server, a trial
restarted by FailureConfig or --resume continues its own run (found by its trial-id tag), and a stopped or failed
trial is closed with a status and a reason. MLflow trouble never stops the sweep: each failing call is reported
once on stderr and skipped; Ray's own results still hold every metric.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from ray.tune import Callback

from search.checkpoints import best_checkpoint
from search.space import Space

EXPERIMENT = "nucleitune"
TAG_SWEEP, TAG_TRIAL = "nucleitune.sweep", "nucleitune.trial_id"
METRIC_KEYS = (
    "total_loss",
    "loss_cls",
    "loss_box_reg",
    "loss_mask",
    "loss_rpn_cls",
    "loss_rpn_loc",
    "lr",
    "sec_per_iter",
    "val_map50",
    "val_map50_all",
    "val_map",
    "val_map_all",
    "val_detections_per_image",
    "val_seconds",
)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Thin, fault-tolerant wrapper around MlflowClient for one sweep."""

    def __init__(self, uri: str, artifact_root: Path | None = None):
        self.uri, self.artifact_root = uri, artifact_root
        self._client = None
        self._warned: set[str] = set()
        self.failures = 0

    def __getstate__(self):  # pickled with Ray's experiment state: no live client
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def safe(self, what: str, fn, *args, **kwargs):
        """Call fn; on any error report it (once per kind) and return None."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never take the sweep down
            self.failures += 1
            if what not in self._warned:
                self._warned.add(what)
                print(
                    f"warning: MLflow ({self.uri}): {what} failed: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''} (the sweep goes on)",
                    file=sys.stderr,
                    flush=True,
                )
            return None

    def experiment_id(self) -> str:
        """The `nucleitune` experiment's id (created on first use), asked of the server once per process."""
        if getattr(self, "_experiment_id", None):
            return self._experiment_id
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            self._experiment_id = exp.experiment_id
            return self._experiment_id
        location = self.artifact_root.resolve().as_uri() if self.artifact_root else None  # else the server's
        self._experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=location)
        return self._experiment_id

    def start_parent(self, name: str, tags: dict, artifacts: list[Path]) -> str | None:
        def _start():
            run = self.client.create_run(self.experiment_id(), run_name=name, tags={TAG_SWEEP: name, **tags})
            for a in artifacts:
                self.client.log_artifact(run.info.run_id, str(a))
            return run.info.run_id

        return self.safe("creating the sweep's run", _start)

    def child_run(self, parent: str, trial_id: str, params: dict) -> str | None:
        """The trial's run: found by tag if it exists (restarted trial), else created with its params."""

        def _get():
            found = self.client.search_runs(
                [self.experiment_id()],
                filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent}'",
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                if found[0].info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                return run_id
            run = self.client.create_run(
                self.experiment_id(),
                run_name=trial_id,
                tags={TAG_TRIAL: trial_id, "mlflow.parentRunId": parent},
            )
            from mlflow.entities import Param

            items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
            self.client.log_batch(run.info.run_id, params=items)
            return run.info.run_id

        return self.safe("creating a trial's run", _get)

    def log_metrics(self, run_id: str, result: dict) -> None:
        from mlflow.entities import Metric

        step, ts = int(result.get("epoch", 0)), int(time.time() * 1000)
        metrics = [
            Metric(k, float(result[k]), ts, step)
            for k in METRIC_KEYS
            if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])
        ]
        self.safe("logging metrics", self.client.log_batch, run_id, metrics=metrics)


class MLflowCallback(Callback):
    """Ray Tune driver callback: child runs, per-epoch metrics, final status and artifacts per trial."""

    def __init__(self, tracker: Tracker, parent_run_id: str, space: Space, num_train_images: int):
        self.tracker, self.parent, self.space, self.num_train = tracker, parent_run_id, space, num_train_images
        self.runs: dict[str, str] = {}

    def _run(self, trial) -> str | None:
        if trial.trial_id not in self.runs:
            run_id = self.tracker.child_run(self.parent, trial.trial_id, self.space.hparams(trial.config))
            if run_id is None:
                return None
            self.runs[trial.trial_id] = run_id
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        if run_id:
            self.tracker.log_metrics(run_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = ""
        if trial.storage:
            p = Path(trial.storage.trial_fs_path, "error.txt")
            error = p.read_text().strip().splitlines()[-1] if p.is_file() else ""
        self._close(trial, error=error or "trial raised an exception")

    def _close(self, trial, error: str | None) -> None:
        run_id = self._run(trial)
        if not run_id:
            return
        client = self.tracker.client
        last = trial.last_result or {}
        hp = self.space.hparams(trial.config)
        tags: dict[str, str] = {}
        if error:
            status, tags["failure_reason"] = "FAILED", error[:5000]
        elif last.get("failure_reason"):
            status, tags["failure_reason"] = "FAILED", str(last["failure_reason"])
        else:
            status = "FINISHED"
            if int(last.get("epoch", 0)) < int(hp.get("epochs", 0)):
                tags["stopped_early"] = f"stopped by ASHA at epoch {int(last.get('epoch', 0))} of {hp['epochs']}"
        for k, v in tags.items():
            self.tracker.safe("tagging a run", client.set_tag, run_id, k, v)
        if trial.storage:
            self._artifacts(run_id, Path(trial.storage.trial_fs_path), hp)
        self.tracker.safe("closing a run", client.set_terminated, run_id, status)

    def _artifacts(self, run_id: str, trial_dir: Path, hp: dict) -> None:
        """Each artifact on its own: one that cannot be made does not hold back the others."""
        from search import plots

        log, out = self.tracker.client.log_artifact, trial_dir / "plots"
        out.mkdir(exist_ok=True)
        curve = self.tracker.safe(
            "plotting a learning curve", plots.learning_curve, trial_dir, out / "learning_curve.png"
        )
        lrs = self.tracker.safe(
            "plotting an LR schedule", plots.lr_schedule, hp, self.num_train, out / "lr_schedule.png"
        )
        for path in (curve, lrs):
            if path is not None:
                self.tracker.safe("logging artifacts", log, run_id, str(path))
        best = best_checkpoint(trial_dir)
        for name in ("val_overlay.png", "config.yaml", "state.json") if best else ():
            if (best / name).is_file():
                self.tracker.safe("logging artifacts", log, run_id, str(best / name), artifact_path="best_checkpoint")


def close_sweep(tracker: Tracker, parent: str, folder: Path, space: Space, complete: bool) -> None:
    """Parent-run artifacts (leaderboard, what-matters plots); unfinished child runs are marked KILLED."""
    from search import plots

    client = tracker.client

    def _finish():
        board = folder / "leaderboard.csv"
        if board.is_file():
            client.log_artifact(parent, str(board))
            for png in plots.sweep_plots(board, space, folder / "plots"):
                client.log_artifact(parent, str(png), artifact_path="plots")
        children = client.search_runs(
            [tracker.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and status = 'RUNNING'"
        )
        for run in children:
            client.set_terminated(run.info.run_id, "KILLED")
        client.set_terminated(parent, "FINISHED" if complete else "KILLED")

    tracker.safe("closing the sweep's run", _finish)
