"""Run a hyperparameter sweep: Ray Tune trials of Detectron2 Mask R-CNN, proposed by Optuna, pruned by ASHA.

python -m search.run --space spaces/maskrcnn.yaml [--data DIR] [--name NAME] [--address auto]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from search import leaderboard, outcome, preflight, tuning  # tuning: Ray's environment defaults, before Ray loads
from search.space import Space, SpaceError, check_choices, describe, load_space
from search.sweep import Sweep, UsageError, check_data_location, check_name, data_location, location
from trainable.cli import OneLineParser
from trainable.config import CONDITIONAL, ConfigError
from trainable.data import DatasetError, Split, load_train_records
from trainable.files import check_folder
from trainable.metrics import METRIC, SCORE
from trainable.settings import Settings
from trainable.storage import explain


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m search.run",
        description="Hyperparameter sweep of Detectron2 Mask R-CNN on nuclei with Ray Tune. Each trial trains, "
        "validates every eval_every epochs (val_map50 = mask AP@0.5, top 100 detections, as the course scores) and "
        "checkpoints. Flags override the space file. Results: RESULTS/NAME (the leaderboard, Ray's trial folders).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", help="search-space YAML (format: spaces/README.md); required unless --resume")
    p.add_argument(
        "--data",
        help="dataset root in the course layout, a folder or s3:// gs:// (each node fetches it once into its cache); "
        "overrides settings.data in the space",
    )
    p.add_argument("--name", help="sweep name (default: the space's name + a timestamp; with --resume: the latest)")
    p.add_argument(
        "--results",
        default="results",
        help="where sweeps live: a folder (local or NFS) or object storage, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX "
        "(S3-compatible servers: ?endpoint_override=HOST:PORT&scheme=http or $AWS_ENDPOINT_URL; docs/cluster.md)",
    )
    p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions share a GPU, e.g. 0.5)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' or host:port (default: start a local Ray)")
    p.add_argument("--searcher", help="optuna (TPE), random or grid")
    p.add_argument("--scheduler", help="asha (early stopping at fractions of each trial's schedule) or fifo (none)")
    p.add_argument("--seed", type=int, help="searcher seed")
    p.add_argument(
        "--time-budget-s",
        type=float,
        help="stop the sweep after this many seconds, as Ctrl-C does: trials still running or waiting stay "
        "unfinished with their checkpoints, and --resume continues them (a new budget applies to the resumed run)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (--name, default latest)")
    p.add_argument(
        "--mlflow-uri",
        help="MLflow tracking URI, e.g. http://host:5000 for a cluster (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///RESULTS/mlflow.db; with --resume: the sweep's own); 'off' disables MLflow",
    )
    return p


def _positive(name: str, v: float | None, allow_zero: bool = False) -> None:
    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def resolve(args: argparse.Namespace) -> tuple[Space, Settings, Sweep]:
    """Space + CLI overrides -> (space, trial settings, sweep); every check that needs no Ray."""
    _positive("--num-samples", args.num_samples)
    _positive("--max-concurrent", args.max_concurrent)
    _positive("--cpus-per-trial", args.cpus_per_trial)
    _positive("--gpus-per-trial", args.gpus_per_trial, allow_zero=True)
    _positive("--time-budget-s", args.time_budget_s)
    results = location(args.results)  # reads only: a bad bucket, endpoint or credentials stop here
    if args.resume:
        sweep = Sweep.open(results, args.name)
        if not sweep.space_file.is_file():
            raise UsageError(f"{sweep.folder}: no sweep to resume (missing {sweep.space_file.name})")
        space, settings = sweep.as_ran(check_data=False)
        check_choices(space, sweep.settings_file)  # overrides of searcher and scheduler
        return space, settings, sweep
    if not args.space:
        raise UsageError("--space is required (or --resume to continue a sweep)")
    space = load_space(args.space)
    for key in ("searcher", "scheduler", "num_samples", "max_concurrent", "seed"):
        if getattr(args, key) is not None:
            setattr(space, key, getattr(args, key))
    if args.cpus_per_trial is not None:
        space.resources["cpu"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        space.resources["gpu"] = args.gpus_per_trial
    check_choices(space, args.space)
    sdict = dict(space.settings)
    if args.data:
        sdict["data"] = args.data
    if "data" not in sdict:
        raise UsageError(f"{args.space}: settings.data is not set: give --data DIR")
    sdict["data"] = data_location(sdict["data"])
    given = "--data" if args.data else f"settings.data of {args.space}"
    check_data_location(sdict["data"], given, f"dataset folder not found ({given}; give --data DIR, README: Data)")
    try:
        settings = Settings.from_dict(sdict)
    except (ConfigError, DatasetError, TypeError) as e:
        raise SpaceError(f"{args.space}: settings: {e}") from None
    fit_to_resources(settings, space, args.space)
    settings.report_at = space.rungs()  # trials report at ASHA's rungs, whatever their eval_every
    sweep = Sweep(results / (check_name(args.name) or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"))
    if not sweep.folder.remote:
        check_folder(sweep.folder.local(), UsageError, "--name")
    if sweep.folder.exists():
        raise UsageError(f"{sweep.folder} already exists: pick another --name, or add --resume to continue it")
    mlflow_uri(args, sweep)  # none to default to on object storage: one error now
    return space, settings, sweep


def mlflow_uri(args, sweep: Sweep) -> str:
    """The MLflow store of a new sweep: --mlflow-uri, $MLFLOW_TRACKING_URI, else SQLite beside the sweeps."""
    return args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or sweep.default_mlflow_uri()


def fit_to_resources(settings: Settings, space: Space, path: str) -> None:
    """Loader processes follow the CPUs a trial reserves (its own process is one); AMP needs a GPU per trial."""
    cpus, gpus = space.resources["cpu"], space.resources["gpu"]
    most = max(0, int(cpus) - 1)
    if settings.num_workers is None:
        settings.num_workers = most
    elif settings.num_workers > most:
        raise SpaceError(
            f"{path}: settings.num_workers: {settings.num_workers} loader processes and the trial's own exceed the "
            f"{cpus:g} CPU(s) a trial reserves (resources.cpu, --cpus-per-trial): use at most {most}"
        )
    if settings.amp in ("fp16", "bf16") and not gpus:
        raise SpaceError(f"{path}: settings.amp: {settings.amp} needs a GPU per trial (resources.gpu); use auto or off")


def check_data(settings: Settings) -> int:
    """Read (and cache) the dataset once on the driver: dataset errors stop the sweep before Ray starts.

    Returns the number of training images (for epoch arithmetic on the driver)."""
    records, stats = load_train_records(settings.data, settings.cache_dir)
    train, val = Split.from_dict(settings.split).apply([r["image_id"] for r in records])
    print(f"data: {settings.data}: {len(train)} train / {len(val)} val images, {stats.instances} nuclei", flush=True)
    return len(train)


def sweep_trial(config: dict, space: Space, settings: dict) -> None:
    """The trainable: searched values -> full hyperparameters -> one Detectron2 trial."""
    from trainable.train import tune_trial

    tune_trial(space.hparams(config), settings)


def build_tuner(space: Space, settings: Settings, sweep: Sweep, resume: bool, callbacks: list):
    from ray import tune

    from search.searchers import build_scheduler, build_search

    search_alg, param_space, num_samples = build_search(space)
    reporter = tuning.progress_table(
        list(param_space or progress_columns(space)), ["epoch", METRIC, SCORE, "total_loss"]
    )
    tune_config = tune.TuneConfig(
        metric=SCORE,
        mode="max",
        search_alg=search_alg,
        scheduler=build_scheduler(space),
        num_samples=num_samples,
        max_concurrent_trials=space.max_concurrent,
        **tuning.tune_names(),
    )
    # The checkpoint of the best report (val_map50); Ray always keeps the latest too.
    runs = tuning.run_config(sweep, space, reporter, callbacks, score=METRIC)
    # On resume: this launch's callbacks, not the first launch's (MLflow may have been off or unreachable then).
    return tuning.make_tuner(
        tuning.tune_trainable(sweep_trial, space, settings), param_space, tune_config, runs, resume, errored=False
    )


def interrupt_after(seconds: float) -> threading.Timer:
    """Stop Ray Tune after `seconds` the way Ctrl-C does (SIGUSR1, which Ray Tune handles alike): it saves the
    experiment with unfinished trials as they are, so that --resume continues them. (Ray's own time_budget_s marks
    them TERMINATED, which resuming skips.)"""

    def fire() -> None:
        while signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # Ray Tune's handler not installed yet
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGUSR1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def progress_columns(space: Space) -> list[str]:
    """The searcher's config keys that every trial has, for Ray's progress table: a conditional parameter (a decay
    under a cosine schedule, mask_resolution for C4) is missing from some trials' configs, and Ray's "current best
    trial" line raises KeyError on a column its trial lacks."""
    keys = [k for p in space.params.values() if p.hp not in CONDITIONAL for k in p.keys()]
    return keys + (["seed"] if space.trial_seeds == "per_trial" else [])


def save_sweep(args, space: Space, settings: Settings, sweep: Sweep) -> None:
    """A new sweep's folder: the space file and its saved settings (resolved settings, CLI overrides, MLflow); on
    --resume, a new --mlflow-uri replaces the saved one."""
    if args.resume:
        saved = sweep.saved()
        if args.mlflow_uri and args.mlflow_uri != saved.get("mlflow_uri"):
            sweep.save({**saved, "mlflow_uri": args.mlflow_uri, "mlflow_parent_run_id": None})
        return
    overrides = {k: getattr(space, k) for k in ("searcher", "scheduler", "num_samples", "max_concurrent", "seed")}
    saved = {
        "settings": settings.__dict__,
        "overrides": {**overrides, "resources": space.resources},
        "address": args.address,
        "space": str(Path(args.space).resolve()),
        "mlflow_uri": mlflow_uri(args, sweep),
    }
    sweep.create(args.space, saved)


def start_tracking(args, space: Space, settings: Settings, sweep: Sweep, num_train: int):
    """The MLflow callback of the sweep, or None when MLflow is off or unreachable (the sweep goes on)."""
    from search import tracking
    from trainable.data import dataset_fingerprint
    from trainable.fetch import local_dataset

    saved = sweep.saved()
    uri = saved.get("mlflow_uri")
    if uri == "off":
        return None
    tracker = tracking.Tracker(uri, artifact_root=sweep.artifact_root(uri))
    parent = saved.get("mlflow_parent_run_id")
    if parent is None:
        tags = {
            "data_fingerprint": dataset_fingerprint(local_dataset(settings.data, settings.cache_dir)),
            "git_commit": tracking.git_commit(),
            "ray_address": args.address or "local",
            "space": saved.get("space", str(sweep.space_file)),
        }
        parent = tracker.start_parent(sweep.name, tags, [sweep.space_file, sweep.settings_file])
        if parent is None:
            return None
        sweep.save({**saved, "mlflow_parent_run_id": parent})
    else:
        tracker.safe("reopening the sweep's run", tracker.client.update_run, parent, "RUNNING")
    tracker.save_view(parent, space, sweep.name)
    print(f"mlflow: {uri} (sweep run {parent})", flush=True)
    return tracking.MLflowCallback(tracker, parent, space, num_train, sweep)


def preflight_checks(args, space: Space, settings: Settings, sweep: Sweep) -> int:
    """Everything that can be known wrong before Ray starts; returns the number of training images."""
    source = args.space or sweep.space_file
    num_train = check_data(settings)
    preflight.warn_test_index(settings.data, settings.cache_dir)
    if args.address:
        preflight.probe_address(args.address)
    else:
        preflight.check_machine(space, source)
    preflight.fetch_weights(space, source)
    return num_train


def resume_command(sweep: Sweep) -> str:
    return f"python -m search.run --resume --name {sweep.name} --results {sweep.results}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space, settings, sweep = resolve(args)
        num_train = preflight_checks(args, space, settings, sweep)
    except (SpaceError, UsageError, ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import ray

    try:
        tuning.start_ray(args.address)
    except Exception as e:  # noqa: BLE001 - refused, wrong token, not a Ray port...: nothing written yet
        print(tuning.ray_error(args.address, e), file=sys.stderr)
        return 2
    fit_error = storage_error = None
    try:
        save_sweep(args, space, settings, sweep)
        print(
            f"sweep {sweep.name}: {space.trial_count()} trial(s), searcher {space.searcher}, "
            f"scheduler {space.scheduler}"
        )
        print(describe(space), flush=True)
        mlflow_callback = start_tracking(args, space, settings, sweep, num_train)
        start = time.perf_counter()
        tuner = build_tuner(space, settings, sweep, args.resume, [mlflow_callback] if mlflow_callback else [])
        timer = interrupt_after(args.time_budget_s) if args.time_budget_s else None
        try:
            tuner.fit()
        except Exception as e:  # a failure of Ray Tune itself: the trials' results on disk still make a leaderboard
            fit_error = f"{type(e).__name__}: {e}"
        finally:
            if timer:
                timer.cancel()
        wall = time.perf_counter() - start
        try:
            table = leaderboard.build(sweep, space)
        except OSError as e:  # storage that stopped answering: Ray's state there is as it last saved it
            storage_error = e
    finally:
        ray.shutdown()
    if storage_error:
        if fit_error:
            print(f"error: Ray Tune stopped with {fit_error}", file=sys.stderr)
        print(
            f"error: storage {sweep.folder} failed: {explain(storage_error)}; the trials there are as Ray "
            f"last saved them: once it answers, continue with {resume_command(sweep)}",
            file=sys.stderr,
        )
        return 1
    sweep.write_board(table)
    print(f"\nleaderboard: {sweep.board_file}")
    print(leaderboard.summary(table, space, wall))
    if fit_error:
        print(f"error: Ray Tune stopped with {fit_error}", file=sys.stderr)
    expected = space.trial_count()
    ended = table["status"].isin(outcome.ENDED).sum() if len(table) else 0
    complete = outcome.complete(table["status"] if len(table) else [], expected)
    if mlflow_callback:
        from search import tracking

        tracking.close_sweep(mlflow_callback, sweep, space, table, complete=complete, wall_s=wall)
        if mlflow_callback.tracker.failures:
            print(
                f"warning: {mlflow_callback.tracker.failures} MLflow call(s) failed; Ray's results in {sweep.folder} "
                "hold every metric",
                file=sys.stderr,
            )
    if not complete:
        print(
            f"error: sweep interrupted: {ended} of {expected} trials ended; continue with {resume_command(sweep)}",
            file=sys.stderr,
        )
        return 1
    if not table["status"].isin(outcome.SCORED).any():
        reasons = "; ".join(f"{r.trial_id}: {r.failure_reason}" for r in table.itertuples())
        print(f"error: no trial finished ({reasons})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
