"""Benchmark: the sweep driver at cluster scale. A sweep on a 64-GPU cluster runs hundreds of trials through one
driver; here the driver's own machinery (Optuna TPE, ASHA, the MLflow callback, the checkpoint pruner, Ray Tune's
controller, the leaderboard and the sweep's files) runs 10, 100 and 1,000 trials of a stand-in trainable that reports
constructed learning curves instead of training, so that the driver is what is measured. Target: the driver's cost
per trial stays flat (1,000 trials cost <= 1.2x per trial what 10 cost).

    .venv/bin/python bench/driver_scale.py [--trials 10 100 1000] [--workdir DIR] [--no-mlflow] [--budget-s S]
        [--profile] [--reuse] [--s3]

Each size runs in a fresh driver process, as search.run does: the space file (default spaces/maskrcnn.yaml, with
num_samples, max_concurrent and resources overridden), its settings, the sweep folder and saved settings, a local Ray,
the sweep's MLflow run (SQLite store beside the sweep), search.run.build_tuner (Optuna TPE + ASHA, search.tuning's
RunConfig: best + latest checkpoint, TrainerStatePruner, progress table), leaderboard.build, Sweep.write_board and
tracking.close_sweep. Only the trainable is replaced: `stand_in_trial` reports at the iterations a real trial reports
(every eval_every epochs, ASHA's rungs, the end; 20 iterations per epoch as the course data's 20 training tiles),
with the keys a real report has and a small checkpoint (model.pth and trainer.pth of a few KB, config.yaml,
state.json, a tiny val_overlay.png), and sleeps a few ms per report.

Driver CPU is the driver process's own (time.process_time: every thread of the driver, not Ray's workers, raylet or
GCS), from the sweep's MLflow run to the end of close_sweep; Python imports and ray.init are left out (fixed, and
reported as "setup"). The parts come from timers around the methods each part runs in the driver's main thread
(thread CPU time, exclusive of the timed parts they call): the searcher, ASHA, the MLflow callback, the pruner, Ray's
experiment snapshot (TuneController.save_to_dir) and the rest of Ray's controller step. --profile also writes a
cProfile of the driver's main thread during fit (WORKDIR/profile-N.pstats) and prints its top functions.

--budget-s stops each sweep's fit as search.run --time-budget-s does: the figures are then those of the trials that
started (the last max_concurrent of them unfinished, part of their cost not spent yet).
On a machine that runs other work beside the benchmark, the figures are noisy: compare sizes measured together.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "sample_data" / "nuclei"  # settings.data: the sweep's MLflow run fingerprints it
TRAIN_TILES = 20  # the real space's split of the course data: 20 training tiles, batch 1 -> 20 iterations per epoch


# ---------------------------------------------------------------------------------------------------------------
# The stand-in trainable (runs in Ray's workers: imports only light modules)


def tiny_png(path: Path, rng, size: int = 48) -> None:
    """A grey noise PNG of a few KB (the place of a report's validation overlay)."""
    import struct
    import zlib

    rows = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(size)) for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def learning_curve(hp: dict, rng) -> tuple[float, float]:
    """(plateau val_map50, rate) of a configuration: best near lr 0.01, a little better from COCO weights."""
    import math

    lr_fit = math.exp(-(math.log10(float(hp.get("lr", 0.01)) / 0.01) ** 2) / 0.3)
    plateau = 0.5 + 0.25 * lr_fit + (0.03 if hp.get("weights") == "coco" else 0.0) - 0.1 * float(hp.get("stain", 0))
    return min(0.95, max(0.05, plateau + rng.gauss(0, 0.02))), 2.0 + 4.0 * lr_fit


def stand_in_trial(config: dict, space, settings: dict) -> None:
    """A trial that reports a constructed learning curve at a real trial's report iterations, each report with the
    keys and the kind of checkpoint a real one has; no training."""
    import json
    import math
    import random
    import shutil
    import tempfile
    import time
    from pathlib import Path

    import ray
    from ray import tune

    from trainable.metrics import LOSS_KEYS, METRIC, PROGRESS, SCORE, STEP, progress_step, report_iterations

    hp = space.hparams(config)
    ipe = settings["iters_per_epoch"]
    max_iter = int(round(float(hp["epochs"]) * ipe))
    node_id = ray.get_runtime_context().get_node_id()
    rng = random.Random(json.dumps(config, sort_keys=True, default=str))
    plateau, rate = learning_curve(hp, rng)
    best = -1.0
    log = Path("trial.log").open("a")  # the trial's working folder, which Ray syncs into the sweep (trial.log)
    for done in sorted(report_iterations(max_iter, ipe, settings["eval_every"], settings["report_at"])):
        t = done / max_iter
        loss = 0.3 + 1.5 * math.exp(-rate * t) + abs(rng.gauss(0, 0.02))
        share = (0.25, 0.2, 0.3, 0.1, 0.15)
        m: dict = {"epoch": math.ceil(done / ipe), "iteration": done, PROGRESS: t, STEP: progress_step(done, max_iter)}
        m.update({"total_loss": loss, **{k: loss * s for k, s in zip(LOSS_KEYS[1:], share, strict=True)}})
        m.update(lr=float(hp.get("lr", 0.01)) * (0.5 + 0.5 * math.cos(math.pi * t)), sec_per_iter=0.5)
        m[METRIC] = min(1.0, max(0.0, plateau * (1 - math.exp(-rate * t)) + rng.gauss(0, 0.01)))
        m.update(val_map=0.6 * m[METRIC], val_detections_per_image=100.0, val_seconds=0.01)
        best = max(best, m[METRIC])
        m[SCORE] = best
        ckpt = Path(tempfile.mkdtemp(prefix="ckpt-"))
        (ckpt / "model.pth").write_bytes(rng.randbytes(4096))
        (ckpt / "trainer.pth").write_bytes(rng.randbytes(4096))
        (ckpt / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in sorted(hp.items())))
        state = {"epoch": m["epoch"], "iteration": done, "metrics": m, "hparams": hp, "images": {}}
        (ckpt / "state.json").write_text(json.dumps(state, indent=1, default=str))
        tiny_png(ckpt / "val_overlay.png", rng)
        log.write(f"epoch {m['epoch']} (iter {done}/{max_iter}): loss {loss:.3f}, val_map50 {m[METRIC]:.4f}\n")
        log.flush()
        time.sleep(settings["report_ms"] / 1000)
        tune.report({**m, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
        shutil.rmtree(ckpt, ignore_errors=True)
    log.close()


# ---------------------------------------------------------------------------------------------------------------
# Timers on the driver's parts


# (part, class, method): the methods each part of the driver runs in
PARTS_TIMED = [
    ("searcher: suggest (Optuna TPE ask)", "ScoredOptunaSearch", "suggest"),
    ("searcher: on_trial_result (report)", "ScoredOptunaSearch", "on_trial_result"),
    ("searcher: on_trial_complete (tell)", "ScoredOptunaSearch", "on_trial_complete"),
    ("searcher: state pickle (snapshot)", "ScoredOptunaSearch", "save"),
    ("ASHA: on_trial_result", "ASHAScheduler", "on_trial_result"),
    ("ASHA: on_trial_complete", "ASHAScheduler", "on_trial_complete"),
    ("ASHA: choose_trial_to_run", "ASHAScheduler", "choose_trial_to_run"),
    ("MLflow: trial start (run, params)", "MLflowCallback", "on_trial_start"),
    ("MLflow: find_child (search_runs)", "Tracker", "find_child"),
    ("MLflow: on_trial_result (metrics)", "MLflowCallback", "on_trial_result"),
    ("MLflow: close (summary, status)", "MLflowCallback", "close"),
    ("MLflow: plots + artifacts", "MLflowCallback", "_pictures"),
    ("pruner: on_checkpoint", "TrainerStatePruner", "on_checkpoint"),
    ("Ray: experiment snapshot", "TuneController", "save_to_dir"),
    ("Ray: controller step, rest", "TuneController", "step"),
]
UPLOAD = "Ray: snapshot upload (background)"
PARTS: dict[str, list] = {}  # part -> [thread CPU seconds, exclusive of the timed parts it calls; calls; wall s]
_LOCAL = threading.local()  # per thread: CPU seconds of timed parts called by each open timed call
_LOCK = threading.Lock()


def _timed(owner, attr: str, part: str) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        stack = _LOCAL.__dict__.setdefault("open", [])
        stack.append(0.0)
        start, wall = time.thread_time(), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent, inner = time.thread_time() - start, stack.pop()
            with _LOCK:
                record = PARTS.setdefault(part, [0.0, 0, 0.0])
                record[0] += spent - inner
                record[1] += 1
                record[2] += time.perf_counter() - wall
            if stack:
                stack[-1] += spent

    setattr(owner, attr, timed)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process so far, summed by thread name (the main thread: "main")."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = "main" if task.name == str(os.getpid()) else (task / "comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def instrument() -> None:
    """Timers on the methods the driver's parts run in (in this process only; the classes' code is unchanged)."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.schedulers import ASHAScheduler

    from search import tracking
    from search.checkpoints import TrainerStatePruner
    from search.searchers import ScoredOptunaSearch

    for part, module, attr in PARTS_TIMED:
        cls = {
            "ScoredOptunaSearch": ScoredOptunaSearch,
            "ASHAScheduler": ASHAScheduler,
            "TuneController": TuneController,
            "MLflowCallback": tracking.MLflowCallback,
            "Tracker": tracking.Tracker,
            "TrainerStatePruner": TrainerStatePruner,
        }[module]
        _timed(cls, attr, part)
    # The experiment snapshot's upload from the driver's staging folder to the sweep folder: a background thread
    # per snapshot (wall time; its CPU is in pyarrow's threads, see "driver's other threads").
    from ray.train._internal import storage

    _timed(storage, "_upload_to_fs_path", UPLOAD)


# ---------------------------------------------------------------------------------------------------------------
# One sweep of N trials (a driver process of its own)


def _size(path) -> int:
    """Bytes of a local file or folder, or of a folder on the sweep's storage (trainable.storage.Store)."""
    from trainable.storage import Store

    if isinstance(path, Store):
        return sum(info.size for _, info in path.files())  # 0 where there is no such folder
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def driver_staging(ray, name: str) -> dict:
    """Files and bytes in Ray's driver staging folder of the experiment, which every experiment snapshot uploads
    whole to the sweep folder: the experiment state, the searcher's state and each trial's driver-side logs
    (result.json, progress.csv, params, TensorBoard events)."""
    try:
        session = Path(ray._private.worker.global_worker.node.get_session_dir_path())  # Ray's own, not public
    except AttributeError:
        return {}
    files = [p for d in session.glob(f"artifacts/*/{name}/driver_artifacts") for p in d.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def one_sweep(n: int, args: argparse.Namespace) -> dict:
    t_start, cpu_start = time.perf_counter(), time.process_time()
    import resource

    from search import leaderboard, tuning  # tuning: Ray's and MLflow's environment defaults, before Ray loads
    from search import run as search_run
    from search.space import load_space
    from search.sweep import Sweep
    from trainable.settings import Settings

    results = Path(args.workdir) / f"trials-{n}"
    results.mkdir(parents=True)
    doc = yaml.safe_load(Path(args.space).read_text())
    doc.update(name=f"scale-{n}", num_samples=n, max_concurrent=args.concurrent, seed=0)
    doc["resources"] = {"cpu": args.cpus_per_trial, "gpu": 0}
    doc["settings"]["data"] = str(SAMPLE)
    space_file = results / f"scale-{n}.yaml"  # the space file as given (the sweep keeps its own copy)
    space_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    space = load_space(space_file)
    settings = Settings.from_dict(space.settings)
    search_run.fit_to_resources(settings, space, str(space_file))
    settings.report_at = space.rungs()
    if args.results_uri:  # the sweep's folder on object storage (search.run --results s3://...)
        from trainable import storage

        folder = storage.parse(args.results_uri) / f"trials-{n}" / space.name
    else:
        folder = results / space.name  # the sweep's folder here
    sweep = Sweep(folder)
    overrides = {k: getattr(space, k) for k in ("searcher", "scheduler", "num_samples", "max_concurrent", "seed")}
    saved = {
        "settings": settings.__dict__,
        "overrides": {**overrides, "resources": space.resources},
        "address": None,
        "space": str(space_file),
        "mlflow_uri": "off" if args.no_mlflow else sweep.default_mlflow_uri(),
    }
    sweep.create(space_file, saved)
    # What only the stand-in reads, beside the trial settings that tune_trainable hands to every trial.
    settings.iters_per_epoch, settings.report_ms = TRAIN_TILES // int(space.fixed.get("batch_size", 1)), args.report_ms
    search_run.sweep_trial = stand_in_trial  # build_tuner's trainable; everything else is search.run's own
    tuning.start_ray(None)
    instrument()
    from search import tracking

    setup = {"wall": time.perf_counter() - t_start, "cpu": time.process_time() - cpu_start}

    cpu, wall = {}, {}

    def phase(name: str, fn, *a):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*a)
        wall[name], cpu[name] = time.perf_counter() - w0, time.process_time() - c0
        return out

    callback = phase(
        "tracking", search_run.start_tracking, argparse.Namespace(address=None), space, settings, sweep, TRAIN_TILES
    )
    tuner = phase("build", search_run.build_tuner, space, settings, sweep, False, [callback] if callback else [])
    log = results / "tune-output.log"
    with log.open("w") as out:
        stdout, sys.stdout = sys.stdout, out  # Ray Tune's progress table, every 30 s
        try:
            profile = None
            if args.profile:
                import cProfile

                profile = cProfile.Profile()
            thread0, threads0 = time.thread_time(), thread_cpu()
            if profile:
                profile.enable()
            timer = search_run.interrupt_after(args.budget_s) if args.budget_s else None
            phase("fit", tuner.fit)
            if timer:
                timer.cancel()
            if profile:
                profile.disable()
            fit_thread = time.thread_time() - thread0
            threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu().items()}
        finally:
            sys.stdout = stdout
    fit_parts = {k: list(v) for k, v in PARTS.items()}
    table = phase("board", leaderboard.build, sweep, space)
    import ray

    staging = driver_staging(ray, sweep.name)
    ray.shutdown()
    phase("write_board", sweep.write_board, table)
    if callback:
        from search import outcome

        complete = outcome.complete(table["status"] if len(table) else [], n)
        phase("close", tracking.close_sweep, callback, sweep, space, table, complete, wall["fit"])
    reports = sum(len(sweep.reports(sweep.trial_id(d))) for d in sweep.trial_dirs())
    if profile:
        import pstats

        path = Path(args.workdir) / f"profile-{n}.pstats"
        profile.dump_stats(str(path))
        print(f"profile of the driver's main thread in fit, {n} trials: {path}")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)
    states = sweep.folder.glob("experiment_state-*.json")
    step_parts = sum(v[0] for k, v in fit_parts.items() if k != UPLOAD)
    threads.pop("main", None)
    threads = {k: v for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return {
        "asked": n,
        "trials": len(table),  # trials that started: fewer than asked where the driver was stopped (Ctrl-C)
        "ended": int(table["status"].isin(("finished", "stopped_early")).sum()) if len(table) else 0,
        "statuses": table["status"].value_counts().to_dict() if len(table) else {},
        "reports": reports,
        "setup": setup,
        "wall": wall,
        "cpu": cpu,
        "fit_main_thread_cpu": fit_thread,
        "fit_outside_parts_cpu": fit_thread - step_parts,
        "parts": fit_parts,
        "threads": threads,  # the driver's other threads in fit, by name (those alive at its end)
        "mlflow_db_bytes": sum(_size(results / f) for f in ("mlflow.db", "mlflow.db-wal", "mlflow.db-journal")),
        "artifacts_bytes": _size(results / "mlartifacts"),
        "sweep_bytes": _size(sweep.folder),
        "state_bytes": states[0].fs.get_file_info(states[0].path).size if states else 0,
        "staging": staging,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ---------------------------------------------------------------------------------------------------------------
# The table


def driver_cpu(r: dict) -> float:
    """The sweep's driver CPU: its MLflow run, the tuner, fit, leaderboard, board file and MLflow close."""
    return sum(r["cpu"].values())


def print_rows(rows: list[dict]) -> None:
    def line(label: str, fn, fmt: str = "{:>12}") -> None:
        print(f"{label:<40}" + "".join(fmt.format(fn(r)) for r in rows))

    print()
    line("trials asked", lambda r: r.get("asked", r["trials"]))
    line("trials started", lambda r: r["trials"])
    line("trials ended (finished + stopped early)", lambda r: r["ended"])
    line("reports", lambda r: r["reports"])
    line("reports per trial", lambda r: f"{r['reports'] / r['trials']:.1f}")
    line("wall s, fit", lambda r: f"{r['wall']['fit']:.1f}")
    line("wall s, whole sweep (after ray.init)", lambda r: f"{sum(r['wall'].values()):.1f}")
    line("driver CPU s (sweep)", lambda r: f"{driver_cpu(r):.1f}")
    line("driver CPU s, fit only", lambda r: f"{r['cpu']['fit']:.1f}")
    line("driver CPU s per trial", lambda r: f"{driver_cpu(r) / r['trials']:.3f}")
    line("driver CPU s per trial, fit only", lambda r: f"{r['cpu']['fit'] / r['trials']:.3f}")
    line("driver CPU ms per report, fit only", lambda r: f"{1000 * r['cpu']['fit'] / max(1, r['reports']):.1f}")
    line("leaderboard.build s (wall)", lambda r: f"{r['wall']['board']:.2f}")
    line("leaderboard.build CPU s", lambda r: f"{r['cpu']['board']:.2f}")
    line("close_sweep CPU s", lambda r: f"{r['cpu'].get('close', 0.0):.2f}")
    line("MLflow DB MB", lambda r: f"{r['mlflow_db_bytes'] / 1e6:.2f}")
    line("MLflow artifacts MB", lambda r: f"{r['artifacts_bytes'] / 1e6:.1f}")
    line("sweep folder MB", lambda r: f"{r['sweep_bytes'] / 1e6:.1f}")
    line("experiment_state JSON MB", lambda r: f"{r['state_bytes'] / 1e6:.2f}")
    line("snapshot upload at the end, files", lambda r: r.get("staging", {}).get("files", ""))
    line("snapshot upload at the end, MB", lambda r: f"{r.get('staging', {}).get('bytes', 0) / 1e6:.1f}")
    line("driver peak RSS MB", lambda r: f"{r['rss_mb']:.0f}")
    line("setup CPU s (imports, ray.init)", lambda r: f"{r['setup']['cpu']:.1f}")
    print("\ndriver main-thread CPU ms per trial, by part (exclusive)")
    order = [name for name, _, _ in PARTS_TIMED]
    names = sorted({k for r in rows for k in r["parts"]}, key=lambda k: order.index(k) if k in order else len(order))
    for name in (n for n in names if n != UPLOAD):
        line(f"  {name}", lambda r, name=name: f"{1000 * r['parts'].get(name, [0.0])[0] / r['trials']:.1f}")
    line("  fit outside Ray's step (setup, end)", lambda r: f"{1000 * r['fit_outside_parts_cpu'] / r['trials']:.1f}")
    line(
        "  driver's other threads in fit",
        lambda r: f"{1000 * (r['cpu']['fit'] - r['fit_main_thread_cpu']) / r['trials']:.1f}",
    )
    print("driver's other threads in fit, CPU ms per trial (alive at its end, by name; the rest ended before)")
    for name in list(dict.fromkeys(k for r in rows for k in r["threads"]))[:8]:
        line(f"  {name}", lambda r, name=name: f"{1000 * r['threads'].get(name, 0.0) / r['trials']:.1f}")
    line(
        "  threads that ended during fit",
        lambda r: (
            f"{1000 * (r['cpu']['fit'] - r['fit_main_thread_cpu'] - sum(r['threads'].values())) / r['trials']:.1f}"
        ),
    )
    line(f"  {UPLOAD}, wall ms/trial", lambda r: f"{1000 * r['parts'].get(UPLOAD, [0, 0, 0.0])[2] / r['trials']:.1f}")
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        print(f"\nper call, {small['trials']} -> {big['trials']} trials (ms per call; growth)")
        for name in names:
            a, b = small["parts"].get(name, [0.0, 0]), big["parts"].get(name, [0.0, 0])
            if a[1] and b[1]:
                pa, pb = 1000 * a[0] / a[1], 1000 * b[0] / b[1]
                print(f"  {name:<38}{pa:>10.2f}{pb:>10.2f}   x{pb / pa if pa else float('nan'):.1f}  ({b[1]} calls)")
        ratio = (driver_cpu(big) / big["trials"]) / (driver_cpu(small) / small["trials"])
        fit_ratio = (big["cpu"]["fit"] / big["trials"]) / (small["cpu"]["fit"] / small["trials"])
        verdict = "met" if ratio <= 1.2 else "not met"
        stopped = f" (stopped at {big['trials']} of {big['asked']})" if big["trials"] < big.get("asked", 0) else ""
        print(
            f"\ndriver CPU per trial, {big['trials']}{stopped} vs {small['trials']} trials: x{ratio:.2f} "
            f"(fit only x{fit_ratio:.2f}); target <= 1.2: {verdict}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[10, 100, 1000], help="sweep sizes, one driver each")
    p.add_argument("--workdir", help="folder for the sweeps (default: a temporary one, removed at the end)")
    p.add_argument("--no-mlflow", action="store_true", help="MLflow off (the sweep's mlflow_uri 'off')")
    p.add_argument("--space", default=str(ROOT / "spaces" / "maskrcnn.yaml"), help="space file")
    p.add_argument("--concurrent", type=int, default=8, help="trials running at once (max_concurrent)")
    p.add_argument("--cpus-per-trial", type=float, default=0.25, help="CPUs Ray reserves per stand-in trial")
    p.add_argument("--report-ms", type=float, default=5.0, help="the stand-in's sleep before each report")
    p.add_argument(
        "--budget-s",
        type=float,
        help="stop each sweep's fit after this many seconds, as search.run --time-budget-s does (trials still "
        "running stay unfinished); the figures are then those of the trials started",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the driver's main thread during fit")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="read back the figures of sizes already measured in --workdir (trials-N.json) instead of running them",
    )
    p.add_argument(
        "--s3",
        action="store_true",
        help="the sweeps' folders on object storage: moto's S3 server on 127.0.0.1, started here (MLflow off: "
        "object-storage results log to a tracking server only)",
    )
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a driver process: one sweep of this many trials
    p.add_argument("--results-uri", help=argparse.SUPPRESS)  # its sweep folder's storage (--s3)
    args = p.parse_args()
    if args.one:
        result = one_sweep(args.one, args)
        (Path(args.workdir) / f"trials-{args.one}.json").write_text(json.dumps(result, indent=1))
        return
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="bench-driver-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows, server, results_uri = [], None, None
    if args.s3:
        server, results_uri = s3_server(env)
        args.no_mlflow = True
    try:
        for n in args.trials:
            if args.reuse and (workdir / f"trials-{n}.json").is_file():
                rows.append(json.loads((workdir / f"trials-{n}.json").read_text()))
                continue
            cmd = [sys.executable, __file__, "--one", str(n), "--workdir", str(workdir), "--space", args.space]
            cmd += ["--concurrent", str(args.concurrent), "--cpus-per-trial", str(args.cpus_per_trial)]
            cmd += (
                ["--report-ms", str(args.report_ms)] + ["--no-mlflow"] * args.no_mlflow + ["--profile"] * args.profile
            )
            cmd += ["--budget-s", str(args.budget_s)] if args.budget_s else []
            cmd += ["--results-uri", results_uri] if results_uri else []
            t0 = time.perf_counter()
            with (workdir / f"driver-{n}.log").open("w") as out:
                code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if code:
                sys.exit(f"{n} trials: the driver exited {code}; see {workdir / f'driver-{n}.log'}")
            r = json.loads((workdir / f"trials-{n}.json").read_text())
            rows.append(r)
            print(
                f"{n} trials: {r['trials']} started, {r['reports']} reports, {r['ended']} ended, driver CPU "
                f"{driver_cpu(r):.1f} s ({driver_cpu(r) / max(1, r['trials']):.3f} s per trial), fit "
                f"{r['wall']['fit']:.0f} s wall, command {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
        print_rows(rows)
    finally:
        if server:
            server.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def s3_server(env: dict):
    """moto's S3 server on 127.0.0.1 with a bucket `bench`, its test credentials put in `env`: (server, the
    results URI of the sweeps)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    env.update(keys)
    os.environ.update(keys)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="bench")
    return server, f"s3://bench/driver?endpoint_override={host}:{port}&scheme=http"


if __name__ == "__main__":
    main()
