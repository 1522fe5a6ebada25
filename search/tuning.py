"""Ray for the commands that run trials (search.run, search.confirm, search.export --refit): starting it, and what
their Ray Tune runs share (trial folders, checkpoints kept, failures, syncing).

Import this module before Ray: it sets Ray's and MLflow's environment defaults."""

from __future__ import annotations

import os
from pathlib import Path

from search.sweep import Experiment

# Before Ray is imported: the classic progress table, no usage stats, no snapshot-sync warning.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Of Ray Tune's default loggers, only the JSON one (result.json, params.json: what search.sweep reads; run_config adds
# it): progress.csv and TensorBoard events repeat it, and every experiment snapshot uploads each trial's logger files
# again (bench/RESULTS.md item 18: on object storage, one request per file per snapshot).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# A tracking server that is down must cost seconds, not MLflow's default minutes of retries per call.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def start_ray(address: str | None) -> None:
    """Join the cluster at `address`, or start a private local Ray."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # A private local Ray, reachable from this machine only (127.0.0.1), dashboard off, temp files in /tmp.
        ray.init(
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=str(Path("/tmp") / f"ray-{os.getuid()}"),
        )


def ray_error(address: str | None, e: Exception) -> str:
    """The one line that says why Ray did not start (refused, wrong token, not a Ray port...)."""
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return f"error: {'--address ' + address if address else 'local Ray'}: {reason}"


def tune_names() -> dict:
    """TuneConfig arguments that name trials: their folder as search.sweep lays it out, name <id>."""
    return {"trial_dirname_creator": Experiment.trial_dirname, "trial_name_creator": lambda t: t.trial_id}


def tune_trainable(fn, space, settings):
    """A trial function as Ray Tune runs it: `fn(config, space, settings)` with the space and the trial settings
    bound, and the space's resources reserved per trial."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(fn, space=space, settings=settings.__dict__),
        {"cpu": space.resources["cpu"], "gpu": space.resources["gpu"]},
    )


def progress_table(parameter_columns, metric_columns: list[str]):
    """Ray Tune's progress table on the driver's terminal, every 30 s at most."""
    from ray import tune

    return tune.CLIReporter(
        parameter_columns=parameter_columns,
        metric_columns=metric_columns,
        max_report_frequency=30,
        sort_by_metric=False,  # Ray's sort fails on trials stopped before their first report
    )


def make_tuner(trainable, param_space: dict | None, tune_config, run_config, resume: bool, errored: bool):
    """The experiment to `fit`: a new Tuner, or (`resume`) the one in run_config's folder continued with this
    launch's RunConfig (Resumed; `errored`: errored trials go on too)."""
    from ray import tune

    if resume:
        return Resumed(trainable, param_space, tune_config, run_config, errored=errored)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def run_config(experiment: Experiment, space, reporter, callbacks: list, score: str | None):
    """Ray Tune's RunConfig of `experiment` (its folder on its storage: a local folder or object storage): the
    checkpoint of the best report by `score` (None: only the latest) and Ray's latest, optimizer state only where Ray
    may resume (TrainerStatePruner); `space.max_failures` retries from the last checkpoint; trial logs synced."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from search.checkpoints import TrainerStatePruner

    return tune.RunConfig(
        **experiment.tune_storage(),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=score, checkpoint_score_order="max"
        ),
        failure_config=tune.FailureConfig(max_failures=space.max_failures),
        sync_config=tune.SyncConfig(sync_artifacts=True),  # trial.log from each trial's working folder
        progress_reporter=reporter,
        callbacks=[*callbacks, JsonLoggerCallback(), TrainerStatePruner()],
        verbose=1,
    )


class Resumed:
    """The experiment that `tune.Tuner(trainable, param_space, tune_config, run_config)` started in run_config's
    folder, continued by `fit` with Ray's public `tune.run(resume=...)`: unfinished trials go on from their latest
    checkpoints (errored ones too if `errored`), the searcher from its saved state, with this launch's RunConfig.
    (`tune.Tuner.restore` brings back the first launch's RunConfig, callbacks included, and has no public way to
    replace them.) search.run and search.reruns continue their experiments with it."""

    def __init__(self, trainable, param_space: dict | None, tune_config, run_config, errored: bool):
        self.trainable, self.param_space, self.errored = trainable, param_space, errored
        self.tune_config, self.run_config = tune_config, run_config

    def fit(self):
        from ray import tune

        tc, rc = self.tune_config, self.run_config
        return tune.run(
            self.trainable,
            resume="AUTO+ERRORED" if self.errored else "AUTO",
            config=self.param_space,
            num_samples=tc.num_samples,
            metric=tc.metric,
            mode=tc.mode,
            search_alg=tc.search_alg,
            scheduler=tc.scheduler,
            max_concurrent_trials=tc.max_concurrent_trials,
            trial_name_creator=tc.trial_name_creator,
            trial_dirname_creator=tc.trial_dirname_creator,
            name=rc.name,
            storage_path=rc.storage_path,
            storage_filesystem=rc.storage_filesystem,
            checkpoint_config=rc.checkpoint_config,
            max_failures=rc.failure_config.max_failures,
            sync_config=rc.sync_config,
            progress_reporter=rc.progress_reporter,
            callbacks=rc.callbacks,
            verbose=rc.verbose,
            raise_on_failed_trial=False,  # as Tuner.fit: failed trials are in the results, not an exception
        )
