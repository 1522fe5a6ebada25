"""MLflow: one parent run per sweep, one nested child run per trial, logged from the Ray Tune driver.

Everything goes through the driver (a Ray Tune callback): workers need no access to the tracking server, a trial
restarted by FailureConfig or --resume continues its own run (found by its trial-id tag), and a stopped or failed
trial is closed with a status and a reason. MLflow trouble never stops the sweep: each failing call is reported
once on stderr and skipped; Ray's own results still hold every metric.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from ray.tune import Callback

from search import outcome
from search.space import Space, param_text
from search.sweep import EXPERIMENT, VIEW_TAG_PREFIX, Experiment, Sweep, best_checkpoint, ranked, view_key
from trainable.metrics import METRIC, METRIC_KEYS, SCORE
from trainable.storage import Store

TAG_SWEEP, TAG_TRIAL = "nucleitune.sweep", "nucleitune.trial_id"
# What a run under the sweep's run is: a sweep trial, a confirmation trial or the refit (search.reruns). The sweep's
# view shows its trials only; confirmation and refit runs carry the sweep trial they re-train (TAG_OF).
TAG_ROLE, TAG_OF = "nucleitune.role", "nucleitune.of_trial"


def view_state(space: Space, parent: str, confirmed: bool = False) -> dict:
    """MLflow UI view state (what the UI's "Save view" stores): filter, order, columns, charts; `confirmed`: with the
    columns of search.confirm (mean val_map50 over folds and its spread)."""

    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    hours = outcome.hours_key(space.resources)
    confirm = [outcome.CONFIRM_MEAN, outcome.CONFIRM_STD] if confirmed else []
    columns = [col("metrics", k) for k in (SCORE, *confirm, "best_epoch", hours)] + [col("tags", "status")]
    columns += [col("params", n) for n in space.searched_names()]
    section = "metrics"

    def chart(i: int, key: str, kind: str) -> dict:
        base = {"uuid": f"c{i}", "type": kind, "runsCountToCompare": 100, "metricSectionId": section, "deleted": False}
        base.update(isGenerated=False, displayName=key, metricKey=key)
        if kind == "LINE":
            base.update(selectedMetricKeys=[key], lineSmoothness=0, xAxisKey="step", xAxisScaleType="linear")
            base.update(scaleType="linear", range={}, selectedXAxisMetricKey="", yAxisKey="metric")
            base.update(yAxisExpressions=[], ignoreOutliers=False, useGlobalXaxisKey=True, useGlobalLineSmoothing=True)
        return base

    charts = [(METRIC, "LINE"), (SCORE, "LINE"), ("total_loss", "LINE"), (hours, "BAR")]
    return {
        "searchFilter": f"tags.mlflow.parentRunId = '{parent}' and tags.`{TAG_ROLE}` = 'trial'",
        "orderByKey": col("metrics", SCORE),
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", *columns, "runDateAndNestInfo", "duration"],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunSections": [
            {"uuid": section, "name": "Trials", "display": True, "isReordered": True, "deleted": False}
        ],
        "compareRunCharts": [chart(i, key, kind) for i, (key, kind) in enumerate(charts)],
        "isAccordionReordered": True,
    }


def run_name(number: int, hp: dict, space: Space, config: dict, points: bool = True) -> str:
    """A trial's run name people can tell apart: its number, backbone and lr (or the first searched values), and
    whether it is one of the space's points to evaluate (the seeded configurations)."""
    shown = [n for n in ("backbone", "lr") if n in space.params] or space.searched_names()[:2]
    parts = [f"{number:02d}"] + [hp[n] if n == "backbone" else f"{n} {param_text(hp[n])}" for n in shown]
    seeded = [i for i, p in enumerate(space.points_to_evaluate, 1) if all(config.get(k) == v for k, v in p.items())]
    return " ".join(str(p) for p in parts) + (f" (point {seeded[0]})" if seeded and points else "")


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

    def start_parent(self, name: str, tags: dict, artifacts: list[Store]) -> str | None:
        def _start():
            run = self.client.create_run(self.experiment_id(), run_name=name, tags={TAG_SWEEP: name, **tags})
            for a in artifacts:
                self.log_file(run.info.run_id, a)
            return run.info.run_id

        return self.safe("creating the sweep's run", _start)

    def log_file(self, run_id: str, file: Store | Path, artifact_path: str | None = None) -> None:
        """log_artifact of a file on the sweep's storage (copied through a local temporary folder where that is
        object storage) or on the local disk."""
        if isinstance(file, Path) or not file.remote:
            self.client.log_artifact(run_id, str(file), artifact_path=artifact_path)
            return
        with tempfile.TemporaryDirectory(prefix="nucleitune-artifact-") as scratch:
            self.client.log_artifact(run_id, str(file.as_local(Path(scratch))), artifact_path=artifact_path)

    def find_child(self, parent: str, trial_id: str):
        """The run of a Ray trial under the sweep's run, or None."""
        found = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent}'",
            max_results=1,
        )
        return found[0] if found else None

    def child_run(self, parent: str, trial_id: str, name: str, params: dict, tags: dict) -> str | None:
        """The trial's run: found by tag if it exists (restarted trial: running again), else created with its params."""

        def _get():
            found = self.find_child(parent, trial_id)
            if found:
                run_id = found.info.run_id
                if found.info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                return run_id
            run = self.client.create_run(
                self.experiment_id(), run_name=name, tags={TAG_TRIAL: trial_id, "mlflow.parentRunId": parent, **tags}
            )
            from mlflow.entities import Param

            items = [Param(k, param_text(v)) for k, v in params.items()]
            self.client.log_batch(run.info.run_id, params=items)
            return run.info.run_id

        return self.safe("creating a trial's run", _get)

    def save_view(self, parent: str, space: Space, sweep: str, confirmed: bool = False) -> None:
        """The sweep's view of the runs table (sweep.view_key; search.ui opens it): its trials only, best score first,
        with the columns that answer "which trial is best, and why", and its charts, val_map50 first."""

        def _save():
            state = view_state(space, parent, confirmed)
            packed = "deflate;" + base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
            now = int(time.time() * 1000)
            value = json.dumps({"name": f"sweep {sweep}", "createdAt": now, "updatedAt": now, "state": packed})
            self.client.set_experiment_tag(self.experiment_id(), f"{VIEW_TAG_PREFIX}{view_key(parent)}", value)

        self.safe("saving the sweep's view", _save)

    def last_step(self, run_id: str) -> int:
        """The last epoch the run holds metrics for (0 if none): val_map50, or the loss for a refit (no validation)."""
        steps = [0]
        for key in (METRIC, "total_loss"):
            history = self.safe("reading a run's metrics", self.client.get_metric_history, run_id, key) or []
            steps += [m.step for m in history]
        return max(steps)

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
    """Ray Tune driver callback: child runs, per-epoch metrics, final status, summary and artifacts per trial.

    A run gets each epoch once: when it is first attached in this process, it takes the reports of Ray's result.json
    that it lacks (a sweep first run with MLflow off or down, a driver that died), and later a report of an epoch
    it already holds (a trial restarted from an earlier checkpoint runs that epoch again) is not logged twice. The
    reports the driver received are kept for the trial's plots: Ray writes result.json with a delay."""

    def __init__(self, tracker: Tracker, parent_run_id: str, space: Space, num_train_images: int, ex: Experiment):
        self.tracker, self.parent, self.space, self.num_train = tracker, parent_run_id, space, num_train_images
        self.experiment = ex  # the Ray Tune experiment: the sweep, or its confirmation or refit (search.reruns)
        self.runs: dict[str, str] = {}
        self.logged: dict[str, int] = {}  # trial id -> last epoch its run holds
        self.results: dict[str, dict[int, dict]] = {}  # trial id -> epoch -> report, as received

    def labels(self, config: dict, number: int) -> tuple[str, dict, dict]:
        """(run name, params, tags) of a trial's run."""
        hp = self.space.hparams(config)
        return run_name(number, hp, self.space, config), hp, {TAG_SWEEP: self.experiment.name, TAG_ROLE: "trial"}

    def hparams(self, config: dict) -> dict:
        return self.space.hparams(config)

    def train_images(self, config: dict) -> int:
        return self.num_train

    def attach(self, trial_id: str, config: dict, number: int) -> str | None:
        if trial_id not in self.runs:
            name, params, tags = self.labels(config, number)
            run_id = self.tracker.child_run(self.parent, trial_id, name, params, tags)
            if run_id is None:
                return None
            self.runs[trial_id], self.logged[trial_id] = run_id, self.tracker.last_step(run_id)
            self.results[trial_id] = {}
            for result in self.experiment.reports(trial_id):
                self.log(trial_id, result)
        return self.runs[trial_id]

    def log(self, trial_id: str, result: dict) -> None:
        step = int(result.get("epoch", 0))
        self.results[trial_id].setdefault(step, result)
        if step > self.logged[trial_id]:
            self.tracker.log_metrics(self.runs[trial_id], result)
            self.logged[trial_id] = step

    def _number(self, trial) -> int:
        return outcome.number(trial.experiment_tag, self.space.searcher)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.attach(trial.trial_id, trial.config, self._number(trial))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.attach(trial.trial_id, trial.config, self._number(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.attach(trial.trial_id, trial.config, self._number(trial)):
            self.log(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.close(trial.trial_id, trial.config, self._number(trial), "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = (self.experiment.error(trial.trial_id).strip().splitlines() or [""])[-1]
        self.close(trial.trial_id, trial.config, self._number(trial), "ERROR", error or "trial raised an exception")

    def close(self, trial_id: str, config: dict, number: int, ray_status: str, reason: str = "") -> None:
        """Status (search.outcome) -> MLflow: finished FINISHED; stopped_early FINISHED + tag stopped_early; failed and
        error FAILED + tag failure_reason; unfinished KILLED. Every run gets the tag `status` and the metrics
        best_epoch and device-hours; ended trials get their pictures."""
        run_id = self.attach(trial_id, config, number)
        if not run_id:
            return
        client, log = self.tracker.client, self.tracker.safe
        reports = [self.results[trial_id][e] for e in sorted(self.results[trial_id])]
        s = outcome.summary(ray_status, reports, self.space.resources)
        hp = self.hparams(config)
        tags = {"status": s["status"]}
        if s["status"] in ("failed", "error"):
            tags["failure_reason"] = (reason or s["failure_reason"])[:5000]
        elif s["status"] == "stopped_early":
            tags["stopped_early"] = f"stopped by ASHA at epoch {s['epochs_run']} of {hp['epochs']}"
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        summary = {"best_epoch": s["best_epoch"], outcome.hours_key(self.space.resources): s["device_hours"]}
        if reports and "val_detections_per_image" in reports[-1]:
            summary["val_detections_per_image"] = reports[-1]["val_detections_per_image"]
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if v is not None]
        tags = [RunTag(k, v) for k, v in tags.items()]
        log("summarising a run", client.log_batch, run_id, metrics=metrics, tags=tags)
        if s["status"] != "unfinished":
            self._pictures(run_id, self.experiment.trial_dir(trial_id), hp, reports, self.train_images(config))
        mlflow_status = {"finished": "FINISHED", "stopped_early": "FINISHED", "unfinished": "KILLED"}
        log("closing a run", client.set_terminated, run_id, mlflow_status.get(s["status"], "FAILED"))

    def _pictures(self, run_id: str, trial_dir: Store, hp: dict, reports: list[dict], num_train: int) -> None:
        """Learning curve, LR schedule, the best report's validation overlay (prediction next to ground truth) at the
        top of the run's artifacts, so that the compare page shows them side by side; the best checkpoint's config
        and state under best_checkpoint/. Each on its own: one that cannot be made does not hold back the others."""
        from search import plots

        log = self.tracker.log_file
        with drawing_folder(None if trial_dir.remote else trial_dir.local() / "plots") as out:
            curve = self.tracker.safe(
                "plotting a learning curve", plots.learning_curve, reports, out / "learning_curve.png"
            )
            lrs = self.tracker.safe(
                "plotting an LR schedule", plots.lr_schedule, hp, num_train, out / "lr_schedule.png"
            )
            best = best_checkpoint(trial_dir)
            overlay = best / "val_overlay.png" if best and (best / "val_overlay.png").is_file() else None
            for path in (curve, lrs, overlay):
                if path is not None:
                    self.tracker.safe("logging artifacts", log, run_id, path)
            for name in ("config.yaml", "state.json") if best else ():
                if (best / name).is_file():
                    self.tracker.safe("logging artifacts", log, run_id, best / name, artifact_path="best_checkpoint")


@contextlib.contextmanager
def drawing_folder(folder: Path | None):
    """`folder` (made if needed) to draw plots in, or where the results are on object storage (None) a local
    temporary one, removed once MLflow has the plots."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="nucleitune-plots-") as scratch:
        yield Path(scratch)


def as_ray_status(status: str) -> str:
    """A Ray trial status that search.outcome reads back as `status` (the leaderboard's), for closing the run of a
    trial that ended before this launch attached MLflow."""
    return {"error": "ERROR", "unfinished": "RUNNING"}.get(status, "TERMINATED")


def close_sweep(callback: MLflowCallback, sweep: Sweep, space: Space, table, complete: bool, wall_s: float) -> None:
    """Every trial of the leaderboard gets its closed run (also one that ended before this launch attached MLflow).
    The parent summarises the sweep: metrics (best score, trials by status, device-hours, wall time), the space's
    fixed hyperparameters as params, a note with the top trials (linked) and the export command, the leaderboard and
    the what-matters plots; FINISHED when every trial ended, else KILLED."""
    from search import plots

    tracker, parent = callback.tracker, callback.parent
    client = tracker.client

    def _trials():
        children = client.search_runs(
            [tracker.experiment_id()], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
        )
        closed = {r.data.tags.get(TAG_TRIAL) for r in children if r.info.status != "RUNNING"}
        known = set(table["trial_id"]) if len(table) else set()
        for run in children:
            # A trial the driver started but died before Ray's experiment state recorded it (on object storage the
            # snapshot is uploaded in the background): Ray never resumes it; the searcher proposes it again as a new
            # trial. Its run ends KILLED instead of RUNNING forever.
            if run.info.status == "RUNNING" and run.data.tags.get(TAG_TRIAL) not in known:
                why = "not in Ray's experiment state: the driver stopped before recording it; not resumed"
                client.set_tag(run.info.run_id, "failure_reason", why)
                client.set_terminated(run.info.run_id, "KILLED")
        for row in table.itertuples():
            params = sweep.params_file(row.trial_id)
            if row.trial_id not in closed and params.is_file():
                reason = row.failure_reason if isinstance(row.failure_reason, str) else ""
                config = json.loads(params.read_text())
                callback.close(row.trial_id, config, int(row.trial), as_ray_status(row.status), reason)

    def _parent():
        from mlflow.entities import Metric, Param

        now, hours = int(time.time() * 1000), outcome.hours_key(space.resources)
        counts = table["status"].value_counts() if len(table) else {}
        summary = {f"trials_{s}": int(counts.get(s, 0)) for s in (*outcome.ENDED, "unfinished")}
        scored = ranked(table) if len(table) else table
        if len(scored):
            summary[SCORE] = float(scored[SCORE].iloc[0])
        summary.update({hours: float(table["device_hours"].sum()) if len(table) else 0.0, "wall_s": wall_s})
        params = [Param(f"fixed.{k}", param_text(v)) for k, v in sorted(space.fixed.items())]
        params += [Param(k, param_text(getattr(space, k))) for k in ("searcher", "scheduler", "num_samples")]
        existing = client.get_run(parent).data.params
        client.log_batch(
            parent,
            metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()],
            params=[p for p in params if p.key not in existing],  # params cannot change; a resume logs them once
        )
        client.set_tag(parent, "mlflow.note.content", sweep_note(callback, sweep, space, table))
        if sweep.board_file.is_file():
            tracker.log_file(parent, sweep.board_file)
            with drawing_folder(sweep.plots_dir) as out:
                for png in plots.sweep_plots(table, space, out):  # the leaderboard just written
                    client.log_artifact(parent, str(png), artifact_path="plots")
        client.set_terminated(parent, "FINISHED" if complete else "KILLED")

    tracker.safe("closing the trials' runs", _trials)
    tracker.safe("closing the sweep's run", _parent)


def sweep_note(callback: MLflowCallback, sweep: Sweep, space: Space, table) -> str:
    """The parent run's description (markdown): the top trials, linked to their runs, and how to export the best."""
    import pandas as pd

    exp = callback.tracker.experiment_id()
    counts = ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()) if len(table) else "no trial"
    lines = [
        f"**Sweep {sweep.name}**: {len(table)} trials ({counts}), searcher {space.searcher}, scheduler "
        f"{space.scheduler}. Trial score: {SCORE}, the best val_map50 (mask AP@0.5, top 100 detections).",
        "",
    ]
    names = space.searched_names()
    lines.append(f"| rank | trial | status | {SCORE} | epoch | " + " | ".join(names) + " |")
    lines.append("|---" * (5 + len(names)) + "|")
    for rank, (_, row) in enumerate(table.head(5).iterrows(), 1):
        run_id = callback.runs.get(row["trial_id"])
        label = f"{int(row['trial']):02d} ({row['trial_id']})"
        trial = f"[{label}](#/experiments/{exp}/runs/{run_id})" if run_id else label
        score = "" if pd.isna(row[SCORE]) else f"{row[SCORE]:.4f}"
        epoch = "" if pd.isna(row["best_epoch"]) else int(row["best_epoch"])
        values = " | ".join(param_text(row.get(f"hp.{n}", "")) for n in names)
        lines.append(f"| {rank} | {trial} | {row['status']} | {score} | {epoch} | {values} |")
    lines += ["", f"Export the best: `python -m search.export --best --results {sweep.results} --name {sweep.name}`"]
    return "\n".join(lines)


class RerunCallback(MLflowCallback):
    """Confirmation and refit trials (search.reruns) as runs under the sweep's run: named for the sweep trial they
    re-train (and the fold), tagged with their role and that trial, params with the fold's validation tiles."""

    def __init__(self, tracker: Tracker, parent_run_id: str, space: Space, rerun: Experiment, sweep: str):
        super().__init__(tracker, parent_run_id, space, 0, rerun)
        self.sweep = sweep

    def labels(self, config: dict, number: int) -> tuple[str, dict, dict]:
        job = config["job"]
        hp = self.hparams(config)
        name = f"{job['role']} {run_name(job['trial'], hp, self.space, job['config'], points=False)}"
        if job["role"] == "confirm":
            name += f" fold {job['fold']}"
        params = {**hp, "val_tiles": job["split"]["val_ids"], "train_tiles": job["num_train"]}
        if job["role"] == "confirm":
            params["fold"] = f"{job['fold']} of {job['folds']}"
        tags = {TAG_SWEEP: self.sweep, TAG_ROLE: job["role"], TAG_OF: job["trial_id"]}
        return name, params, tags

    def hparams(self, config: dict) -> dict:
        return self.space.hparams(config["job"]["config"])

    def train_images(self, config: dict) -> int:
        return config["job"]["num_train"]

    def _number(self, trial) -> int:
        return trial.config["job"]["trial"]


def close_reruns(callback: RerunCallback, trials: list[tuple[str, dict, str]]) -> None:
    """Every rerun trial's run closed, also one that ended before this launch attached MLflow: (id, config, status)
    with status as search.outcome names it."""
    closed = {
        r.data.tags.get(TAG_TRIAL)
        for r in callback.tracker.safe(
            "reading the sweep's runs",
            callback.tracker.client.search_runs,
            [callback.tracker.experiment_id()],
            filter_string=f"tags.`mlflow.parentRunId` = '{callback.parent}' and tags.`{TAG_ROLE}` != 'trial'",
            max_results=10000,
        )
        or []
        if r.info.status != "RUNNING"
    }
    for trial_id, config, status in trials:
        if trial_id not in closed:
            callback.close(trial_id, config, config["job"]["trial"], as_ray_status(status))


def log_confirmation(tracker: Tracker, parent: str, space: Space, sweep: str, table, winner_note: str) -> None:
    """Each confirmed sweep trial's run gets its mean and spread over folds, the sweep's view their columns, the
    sweep's run the winner's line."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    for row in table.itertuples():
        found = tracker.safe("finding a trial's run", tracker.find_child, parent, row.trial_id)
        if found is None:
            continue
        values = {k: getattr(row, k) for k in (outcome.CONFIRM_MEAN, outcome.CONFIRM_STD, outcome.CONFIRM_FOLDS)}
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v == v]  # NaN: not enough folds
        tracker.safe("logging a confirmation", tracker.client.log_batch, found.info.run_id, metrics=metrics)
    tracker.safe("tagging the sweep's run", tracker.client.set_tag, parent, "nucleitune.confirmation", winner_note)
    tracker.save_view(parent, space, sweep, confirmed=True)
