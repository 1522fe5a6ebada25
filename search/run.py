"""Run a hyperparameter sweep: Ray Tune trials of Detectron2 Mask R-CNN, proposed by Optuna, pruned by ASHA.

python -m search.run --space spaces/maskrcnn.yaml [--data DIR] [--name NAME] [--address auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

# Before Ray is imported: the classic progress table, no usage stats, no snapshot-sync warning.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# A tracking server that is down must cost seconds, not MLflow's default minutes of retries per call.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from search import leaderboard  # noqa: E402
from search.space import METRIC, MODE, Space, SpaceError, check_choices, describe, load_space  # noqa: E402
from trainable.cli import OneLineParser
from trainable.config import ConfigError  # noqa: E402
from trainable.data import DatasetError, Split, load_train_records  # noqa: E402
from trainable.train import Settings  # noqa: E402

SPACE_COPY, SETTINGS_FILE = "space.yaml", "sweep.json"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m search.run",
        description="Hyperparameter sweep of Detectron2 Mask R-CNN on nuclei with Ray Tune. Each trial trains, "
        "validates every eval_every epochs (val_map50 = mask AP@0.5, top 100 detections, as the course scores) and "
        "checkpoints. Flags override the space file. Results: RESULTS/NAME (leaderboard.csv, Ray trial folders).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", help="search-space YAML (format: spaces/README.md); required unless --resume")
    p.add_argument("--data", help="dataset root in the course layout (overrides settings.data in the space)")
    p.add_argument("--name", help="sweep name (default: the space's name + a timestamp; with --resume: the latest)")
    p.add_argument("--results", default="results", help="folder for sweeps (absolute path, NFS or local)")
    p.add_argument("--num-samples", type=int, help="number of trials")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (fractions share a GPU, e.g. 0.5)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' or host:port (default: start a local Ray)")
    p.add_argument("--searcher", help="optuna (TPE), random or grid")
    p.add_argument("--scheduler", help="asha (early stopping on epoch) or fifo (none)")
    p.add_argument("--seed", type=int, help="searcher seed")
    p.add_argument(
        "--time-budget-s",
        type=float,
        help="stop the sweep after this many seconds (running trials end unfinished; their checkpoints stay)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (--name, default latest)")
    p.add_argument(
        "--mlflow-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI, e.g. http://host:5000 for a cluster (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///RESULTS/mlflow.db); 'off' disables MLflow",
    )
    return p


class UsageError(ValueError):
    pass


def _positive(name: str, v: float | None, allow_zero: bool = False) -> None:
    if v is not None and (v < 0 or (v == 0 and not allow_zero)):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def resolve(args: argparse.Namespace) -> tuple[Space, Settings, Path]:
    """Space + CLI overrides -> (space, trial settings, sweep folder); every check that needs no Ray."""
    results = Path(args.results).expanduser().resolve()
    _positive("--num-samples", args.num_samples)
    _positive("--max-concurrent", args.max_concurrent)
    _positive("--cpus-per-trial", args.cpus_per_trial)
    _positive("--gpus-per-trial", args.gpus_per_trial, allow_zero=True)
    _positive("--time-budget-s", args.time_budget_s)
    if args.resume:
        name = check_name(args.name) or latest_sweep(results)
        folder = results / name
        if not (folder / SPACE_COPY).is_file():
            raise UsageError(f"{folder}: no sweep to resume (missing {SPACE_COPY})")
        space = load_space(folder / SPACE_COPY)
        saved = json.loads((folder / SETTINGS_FILE).read_text())
        for k, v in saved["overrides"].items():
            setattr(space, k, v)
        return space, Settings.from_dict(saved["settings"]), folder
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
    sdict["data"] = str(Path(sdict["data"]).expanduser().resolve())
    try:
        settings = Settings.from_dict(sdict)
    except (ConfigError, TypeError) as e:
        raise SpaceError(f"{args.space}: settings: {e}") from None
    fit_to_resources(settings, space, args.space)
    name = check_name(args.name) or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"
    folder = results / name
    if folder.exists():
        raise UsageError(f"{folder} already exists: pick another --name, or add --resume to continue it")
    return space, settings, folder


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


def check_name(name: str | None) -> str | None:
    """--name is a folder directly under --results (no path: nothing is read or written outside the results tree)."""
    if name is not None and (not name or Path(name).name != name or name in (".", "..")):
        raise UsageError(f"--name must be a plain folder name under --results, got {name!r}")
    return name


def latest_sweep(results: Path) -> str:
    sweeps = sorted((p for p in results.glob(f"*/{SPACE_COPY}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise UsageError(f"{results}: no sweep found")
    return sweeps[-1].parent.name


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


def build_tuner(
    space: Space, settings: Settings, folder: Path, resume: bool, callbacks: list, time_budget_s: float | None = None
):
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from search.checkpoints import TrainerStatePruner

    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, space=space, settings=settings.__dict__),
        {"cpu": space.resources["cpu"], "gpu": space.resources["gpu"]},
    )
    if resume:
        return tune.Tuner.restore(str(folder), trainable=trainable, resume_unfinished=True, resume_errored=False)

    param_space: dict = {}
    if space.searcher == "optuna":
        search_alg = OptunaSearch(
            space.define_by_run,
            metric=METRIC,
            mode=MODE,
            sampler=TPESampler(seed=space.seed),
            points_to_evaluate=space.points_to_evaluate or None,
        )
        num_samples = space.num_samples
    else:
        param_space = space.param_space()
        search_alg = BasicVariantGenerator(points_to_evaluate=space.points_to_evaluate or None, random_state=space.seed)
        num_samples = 1 if space.searcher == "grid" else space.num_samples
    if space.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=space.max_epochs(), **space.asha)
    else:
        scheduler = FIFOScheduler()
    reporter = tune.CLIReporter(
        parameter_columns=list(param_space or _searched_names(space)),
        metric_columns=["epoch", METRIC, "total_loss"],
        max_report_frequency=30,
        sort_by_metric=False,  # Ray's sort fails on trials stopped before their first report (time budget)
    )
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=space.max_concurrent,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            trial_name_creator=lambda t: t.trial_id,
            time_budget_s=time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=folder.name,
            storage_path=str(folder.parent),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
            ),  # the best checkpoint; Ray always keeps the latest too
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            sync_config=tune.SyncConfig(sync_artifacts=True),  # trial.log from each trial's working folder
            progress_reporter=reporter,
            callbacks=[*callbacks, TrainerStatePruner()],  # the best checkpoint keeps weights, not optimizer state
            verbose=1,
        ),
    )


def _searched_names(space: Space) -> list[str]:
    return (
        [n for n in space.params if n != "decay"]
        + ([f"decay_{i}" for i in range(1, space.params["decay"].count[1] + 1)] if "decay" in space.params else [])
        + (["seed"] if space.trial_seeds == "per_trial" else [])
    )


def start_ray(address: str | None, folder: Path) -> None:
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


def start_tracking(args, space: Space, settings: Settings, folder: Path, num_train: int):
    """(tracker, parent run id, callbacks); MLflow off or unreachable -> no callbacks, the sweep goes on."""
    from search import tracking
    from trainable.data import dataset_fingerprint

    saved = json.loads((folder / SETTINGS_FILE).read_text())
    uri = saved.get("mlflow_uri")
    if uri == "off":
        return None, None, []
    tracker = tracking.Tracker(uri, artifact_root=folder.parent / "mlartifacts" if uri.startswith("sqlite") else None)
    parent = saved.get("mlflow_parent_run_id")
    if parent is None:
        tags = {
            "data_fingerprint": dataset_fingerprint(settings.data),
            "git_commit": tracking.git_commit(),
            "ray_address": args.address or "local",
            "space": str(Path(args.space).resolve()),
        }
        parent = tracker.start_parent(folder.name, tags, [folder / SPACE_COPY, folder / SETTINGS_FILE])
        if parent is None:
            return tracker, None, []
        saved["mlflow_parent_run_id"] = parent
        (folder / SETTINGS_FILE).write_text(json.dumps(saved, indent=1))
    else:
        tracker.safe("reopening the sweep's run", tracker.client.update_run, parent, "RUNNING")
    print(f"mlflow: {uri} (sweep run {parent})", flush=True)
    return tracker, parent, [tracking.MLflowCallback(tracker, parent, space, num_train)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        space, settings, folder = resolve(args)
        num_train = check_data(settings)
    except (SpaceError, UsageError, ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.resume:
        folder.mkdir(parents=True)
        shutil.copyfile(args.space, folder / SPACE_COPY)
        overrides = {k: getattr(space, k) for k in ("searcher", "scheduler", "num_samples", "max_concurrent", "seed")}
        overrides["resources"] = space.resources
        sweep = {
            "settings": settings.__dict__,
            "overrides": overrides,
            "address": args.address,
            "mlflow_uri": args.mlflow_uri or f"sqlite:///{folder.parent / 'mlflow.db'}",
        }
        (folder / SETTINGS_FILE).write_text(json.dumps(sweep, indent=1))
    print(f"sweep {folder.name}: {space.num_samples} trial(s), searcher {space.searcher}, scheduler {space.scheduler}")
    print(describe(space), flush=True)
    tracker, parent, callbacks = start_tracking(args, space, settings, folder, num_train)

    import ray

    start = time.perf_counter()
    start_ray(args.address, folder)
    fit_error = None
    try:
        tuner = build_tuner(space, settings, folder, args.resume, callbacks, time_budget_s=args.time_budget_s)
        try:
            tuner.fit()
        except Exception as e:  # a failure of Ray Tune itself: the trials' results on disk still make a leaderboard
            fit_error = f"{type(e).__name__}: {e}"
        wall = time.perf_counter() - start
        table = leaderboard.build(folder, space)
    finally:
        ray.shutdown()
    table.to_csv(folder / "leaderboard.csv", index=False)
    print(f"\nleaderboard: {folder / 'leaderboard.csv'}")
    print(leaderboard.summary(table, space, wall))
    if fit_error:
        print(f"error: Ray Tune stopped with {fit_error}", file=sys.stderr)
    expected = len(table) if space.searcher == "grid" else space.num_samples
    ended = table["status"].isin(["finished", "stopped_early", "failed", "error"]).sum() if len(table) else 0
    if parent:
        from search import tracking

        tracking.close_sweep(tracker, parent, folder, space, complete=ended >= expected)
        if tracker.failures:
            print(
                f"warning: {tracker.failures} MLflow call(s) failed; Ray's results in {folder} hold every metric",
                file=sys.stderr,
            )
    if ended < expected:
        print(
            f"error: sweep interrupted: {ended} of {expected} trials ended; continue with "
            f"python -m search.run --resume --name {folder.name}",
            file=sys.stderr,
        )
        return 1
    if not table["status"].isin(["finished", "stopped_early"]).any():
        reasons = "; ".join(f"{r.trial_id}: {r.failure_reason}" for r in table.itertuples())
        print(f"error: no trial finished ({reasons})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
