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

from search import outcome
from search.checkpoints import best_checkpoint
from search.leaderboard import trial_reports
from search.space import Space
from trainable.metrics import METRIC, METRIC_KEYS

EXPERIMENT = "nucleitune"
TAG_SWEEP, TAG_TRIAL = "nucleitune.sweep", "nucleitune.trial_id"


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
        """The trial's run: found by tag if it exists (restarted trial: running again), else created with its params."""

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

    def last_step(self, run_id: str) -> int:
        """The last epoch the run holds metrics for (0 if none)."""
        history = self.safe("reading a run's metrics", self.client.get_metric_history, run_id, METRIC) or []
        return max((m.step for m in history), default=0)

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
    """Ray Tune driver callback: child runs, per-epoch metrics, final status and artifacts per trial.

    A run gets each epoch once: when it is first attached in this process, it takes the reports of Ray's result.json
    that it lacks (a sweep first run with MLflow off or down, a driver that died), and later a report of an epoch
    it already holds (a trial restarted from an earlier checkpoint runs that epoch again) is not logged twice."""

    def __init__(self, tracker: Tracker, parent_run_id: str, space: Space, num_train_images: int, folder: Path):
        self.tracker, self.parent, self.space, self.num_train = tracker, parent_run_id, space, num_train_images
        self.folder = folder
        self.runs: dict[str, str] = {}
        self.logged: dict[str, int] = {}  # trial id -> last epoch its run holds

    def attach(self, trial_id: str, config: dict) -> str | None:
        if trial_id not in self.runs:
            run_id = self.tracker.child_run(self.parent, trial_id, self.space.hparams(config))
            if run_id is None:
                return None
            self.runs[trial_id], self.logged[trial_id] = run_id, self.tracker.last_step(run_id)
            for result in trial_reports(self.folder / f"trial_{trial_id}"):
                self.log(trial_id, result)
        return self.runs[trial_id]

    def log(self, trial_id: str, result: dict) -> None:
        step = int(result.get("epoch", 0))
        if step > self.logged[trial_id]:
            self.tracker.log_metrics(self.runs[trial_id], result)
            self.logged[trial_id] = step

    def on_trial_start(self, iteration, trials, trial, **info):
        self.attach(trial.trial_id, trial.config)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.attach(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.attach(trial.trial_id, trial.config):
            self.log(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self.close(trial.trial_id, trial.config, outcome.status("TERMINATED", last), last=last)

    def on_trial_error(self, iteration, trials, trial, **info):
        p = Path(self.folder / f"trial_{trial.trial_id}" / "error.txt")
        error = p.read_text().strip().splitlines()[-1] if p.is_file() else ""
        self.close(trial.trial_id, trial.config, "error", error or "trial raised an exception")

    def close(self, trial_id: str, config: dict, status: str, reason: str = "", last: dict | None = None) -> None:
        """Status (search.outcome) -> MLflow: finished FINISHED; stopped_early FINISHED + tag stopped_early; failed and
        error FAILED + tag failure_reason; unfinished KILLED. Ended trials get their artifacts. `last`: the trial's
        last report (default: read from its result.json, which Ray writes with a delay while a trial runs)."""
        run_id = self.attach(trial_id, config)
        if not run_id:
            return
        client = self.tracker.client
        trial_dir = self.folder / f"trial_{trial_id}"
        if last is None:
            reports = trial_reports(trial_dir)
            last = reports[-1] if reports else {}
        hp = self.space.hparams(config)
        tags = {}
        if status in ("failed", "error"):
            tags["failure_reason"] = (reason or str(last.get("failure_reason", "")))[:5000]
        elif status == "stopped_early":
            tags["stopped_early"] = f"stopped by ASHA at epoch {int(last.get('epoch', 0))} of {hp['epochs']}"
        for k, v in tags.items():
            self.tracker.safe("tagging a run", client.set_tag, run_id, k, v)
        if status != "unfinished":
            self._artifacts(run_id, trial_dir, hp)
        mlflow_status = {"finished": "FINISHED", "stopped_early": "FINISHED", "unfinished": "KILLED"}
        self.tracker.safe("closing a run", client.set_terminated, run_id, mlflow_status.get(status, "FAILED"))

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


def close_sweep(callback: MLflowCallback, folder: Path, space: Space, table, complete: bool) -> None:
    """Every trial of the leaderboard gets its closed run (also one that ended before this launch attached MLflow);
    the parent gets the leaderboard and the what-matters plots, FINISHED when every trial ended, else KILLED."""
    import json

    from search import plots

    tracker, parent = callback.tracker, callback.parent
    client = tracker.client

    def _finish():
        children = client.search_runs(
            [tracker.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
        )
        closed = {r.data.tags.get(TAG_TRIAL) for r in children if r.info.status != "RUNNING"}
        for row in table.itertuples():
            params = folder / f"trial_{row.trial_id}" / "params.json"
            if row.trial_id not in closed and params.is_file():
                config = json.loads(params.read_text())
                reason = row.failure_reason if isinstance(row.failure_reason, str) else ""
                callback.close(row.trial_id, config, row.status, reason)
        board = folder / "leaderboard.csv"
        if board.is_file():
            client.log_artifact(parent, str(board))
            for png in plots.sweep_plots(board, space, folder / "plots"):
                client.log_artifact(parent, str(png), artifact_path="plots")
        client.set_terminated(parent, "FINISHED" if complete else "KILLED")

    tracker.safe("closing the sweep's run", _finish)
