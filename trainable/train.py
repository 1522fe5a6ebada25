"""One trial: Detectron2 Mask R-CNN training that evaluates and reports every `eval_every` epochs.

In a sweep, Ray Tune calls `tune_trial`; for debugging the same trial runs alone:

    python -m trainable.train --config trial.yaml --data ../shared/data/nuclei --out results/debug-trial
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, hooks
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter
from detectron2.utils.logger import setup_logger

from trainable import overlay, rescore
from trainable.augment import NucleiTrainMapper, build_augmentations, inference_augmentations, with_images
from trainable.checkpoints import TRAINER_STATE, best_checkpoint, strip_trainer_state
from trainable.cli import OneLineParser
from trainable.config import ConfigError, build_cfg, schedule, validate
from trainable.data import DatasetError, Split, crop_record, default_cache_dir, load_train_records
from trainable.evaluate import COURSE_MAX_DETS, MaskAPEvaluator
from trainable.files import check_folder, read_document
from trainable.metrics import LOSS_KEYS, METRIC, PROGRESS, SCORE, STEP, progress_step, report_iterations
from trainable.settings import Settings

logger = logging.getLogger("nucleitune")

ReportFn = Callable[[dict, "str | None"], None]


# ---------------------------------------------------------------------------------------------------------------
# Data of one trial


@dataclass
class TrialData:
    train: list[dict]
    val: list[dict]


def prepare_data(settings: Settings) -> TrialData:
    """Load (cached) records, split them, crop validation tiles if asked, and register both with Detectron2."""
    cpus = None if settings.num_workers is None else settings.num_workers + 1  # a sweep's trial: its CPUs
    records, stats = load_train_records(settings.data, settings.cache_dir, workers=cpus)
    split = Split.from_dict(settings.split)
    train_ids, val_ids = split.apply([r["image_id"] for r in records])
    by_id = {r["image_id"]: r for r in records}
    train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    if settings.val_crop:
        crop_dir = Path(settings.cache_dir or default_cache_dir()) / "crops"
        val = [crop_record(r, int(settings.val_crop), crop_dir) for r in val]
    # Ray workers do not share Detectron2's catalog: (re-)register inside this process.
    for name, recs in (("nuclei_train", train), ("nuclei_val", val)):
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda recs=recs: recs)
        MetadataCatalog.get(name).set(thing_classes=["nucleus"], evaluator_type="coco")
    logger.info(
        "data: %d train / %d val images (%d instances; %d image(s) converted, rest cached)",
        len(train),
        len(val),
        stats.instances,
        len(stats.converted),
    )
    return TrialData(train, val)


# ---------------------------------------------------------------------------------------------------------------
# Trainer and its reporting hook


def train_loader(cfg, hp: dict, records: list[dict]):
    """Detectron2's train loader over the records, images decoded once per trial, augmented by NucleiTrainMapper;
    the sampler's order, like everything random in a trial, follows cfg.SEED."""
    records = with_images(records, cfg.INPUT.FORMAT)
    return build_detection_train_loader(
        dataset=records,
        mapper=NucleiTrainMapper(build_augmentations(hp, cfg.INPUT.FORMAT)),
        sampler=TrainingSampler(len(records), seed=cfg.SEED),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


class NucleiTrainer(DefaultTrainer):
    """DefaultTrainer with the nuclei mapper, no file writers, and hooks that report per epoch (build_hooks)."""

    def __init__(
        self,
        cfg,
        hp: dict,
        data: TrialData,
        report: ReportFn,
        eval_every: int,
        workdir: Path,
        val_detections: int = COURSE_MAX_DETS,
        amp_dtype: torch.dtype | None = None,
        report_at: list[int] | None = None,
    ):
        self.hp, self.data, self.report_fn, self.eval_every, self.workdir = hp, data, report, eval_every, workdir
        self.val_detections = val_detections
        self.report_at = list(report_at or [])  # progress steps to report at besides eval_every (ASHA's rungs)
        self.pending: Report | None = None  # the report the hooks are making after this iteration
        self.evaluator: MaskAPEvaluator | None = None  # built at the first validation
        super().__init__(cfg)  # AMPTrainer when cfg.SOLVER.AMP.ENABLED (build_cfg sets it from amp_dtype)
        if isinstance(self._trainer, AMPTrainer):
            self._trainer.precision = amp_dtype
            if amp_dtype == torch.bfloat16:  # bf16 has fp32's range: no loss scaling
                self._trainer.grad_scaler = torch.amp.GradScaler("cuda", enabled=False)
        # Validation ranks and keeps detections as export will (trainable.predict): one rule, rescore.Ranking.
        self.ranking = rescore.Ranking(self.model, rescoring=hp["mask_rescore"])

    def build_train_loader(self, cfg):
        return train_loader(cfg, self.hp, self.data.train)

    def build_hooks(self):
        """Timing and the LR schedule, then a report's hooks in order (each after_step): what to measure and when,
        the trial score, the validation overlay, the checkpoint and the report itself; then the metric printer."""
        ipe = schedule(self.hp, len(self.data.train))["iters_per_epoch"]
        self.score = BestScoreHook()  # the trial score so far: self.score.best
        return [
            hooks.IterationTimer(warmup_iter=1),  # the first iteration (lazy init) is not timed
            hooks.LRScheduler(),
            MeasureHook(ipe, self.eval_every, self.report_at),
            self.score,
            OverlayHook(),
            CheckpointReportHook(),
            hooks.PeriodicWriter([CommonMetricPrinter(self.max_iter)], period=20),
        ]

    def validate(self) -> dict:
        mapper = DatasetMapper(self.cfg, is_train=False, augmentations=inference_augmentations(self.hp))
        loader = build_detection_test_loader(self.data.val, mapper=mapper)
        if self.evaluator is None or self.evaluator.max_dets != self.val_detections:  # its ground truth, built once
            self.evaluator = MaskAPEvaluator(
                self.data.val, uncapped=self.val_detections > COURSE_MAX_DETS, max_dets=self.val_detections
            )
        evaluator = self.evaluator
        # The best k of the model's ranked detections are the best k of a longer list: val_map50 is unchanged.
        self.ranking.keep_best(self.val_detections)
        try:
            metrics = inference_on_dataset(self.model, loader, evaluator)
        finally:
            self.ranking.keep_best(None)
        self.last_predictions = evaluator.results
        return metrics

    def save_checkpoint(self, report: Report) -> str:
        """A checkpoint folder: model.pth (weights), trainer.pth (optimizer, scheduler, iteration and the hooks'
        state: what resuming needs, dropped from all but the latest checkpoint, see strip_trainer_state),
        config.yaml, state.json and the report's files."""
        ckpt_dir = tempfile.mkdtemp(prefix="ckpt-", dir=self.workdir)
        DetectionCheckpointer(self.model, ckpt_dir).save("model")
        torch.save({"trainer": self.state_dict()}, Path(ckpt_dir, TRAINER_STATE))
        Path(ckpt_dir, "config.yaml").write_text(self.cfg.dump())
        images = {"train": [r["image_id"] for r in self.data.train], "val": [r["image_id"] for r in self.data.val]}
        m = report.metrics
        state = {"epoch": m["epoch"], "iteration": m["iteration"], "metrics": m, "hparams": self.hp, "images": images}
        Path(ckpt_dir, "state.json").write_text(json.dumps(state, indent=1))
        for name, write in report.files.items():
            write(Path(ckpt_dir, name))
        return ckpt_dir


@dataclass
class Report:
    """One report of a trial, made by the hooks after the iteration it follows: its metrics and the files its
    checkpoint gets besides the model's ({name: function writing that file})."""

    metrics: dict
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)


class MeasureHook(HookBase):
    """When a trial reports (report_iterations) and what it measured: the training losses of the iterations since the
    last report and, where there is validation data, the trainer's validation (as Detectron2's EvalHook)."""

    def __init__(self, iters_per_epoch: int, eval_every: int, steps: list[int]):
        self.ipe, self.eval_every, self.steps = iters_per_epoch, eval_every, steps

    def before_train(self) -> None:
        self.at = report_iterations(self.trainer.max_iter, self.ipe, self.eval_every, self.steps)
        self.last_reported = self.trainer.start_iter

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done not in self.at:
            return
        self.trainer.pending = Report(self.measure(done, window=done - self.last_reported))
        self.last_reported = done

    def measure(self, done: int, window: int) -> dict:
        trainer, storage = self.trainer, self.trainer.storage
        metrics: dict = {
            "epoch": math.ceil(done / self.ipe),
            "iteration": done,
            PROGRESS: done / trainer.max_iter,
            STEP: progress_step(done, trainer.max_iter),
        }
        for key in (*LOSS_KEYS, "lr"):
            if key in storage.histories():
                h = storage.history(key)
                metrics[key] = float(h.latest() if key == "lr" else h.avg(window))
        if "time" in storage.histories():
            metrics["sec_per_iter"] = float(storage.history("time").avg(window))
        if trainer.data.val:  # else a refit on every labelled tile: losses and a checkpoint, nothing to score
            start = time.perf_counter()
            metrics.update(trainer.validate())
            metrics["val_seconds"] = time.perf_counter() - start
            if trainer.evaluator.measure_seconds:
                metrics["val_measure_seconds"] = trainer.evaluator.measure_seconds  # within val_seconds
        return metrics


class BestScoreHook(HookBase):
    """The trial score (SCORE): the best val_map50 of its reports so far, added to each scored report. It lives in
    this hook's state_dict, which Detectron2 saves with the trainer (trainer.pth) and restores on resume."""

    def __init__(self):
        self.best: float | None = None

    def after_step(self) -> None:
        report = self.trainer.pending
        if report is not None and METRIC in report.metrics:
            self.best = max(report.metrics[METRIC], self.best if self.best is not None else -1.0)
            report.metrics[SCORE] = self.best

    def state_dict(self) -> dict:
        return {} if self.best is None else {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state.get("best")


class OverlayHook(HookBase):
    """A scored report's checkpoint gets val_overlay.png: the first validation tile, ground truth beside prediction."""

    def after_step(self) -> None:
        report, trainer = self.trainer.pending, self.trainer
        if report is None or METRIC not in report.metrics:
            return
        first, metrics = trainer.data.val[0], report.metrics
        dets = [r for r in getattr(trainer, "last_predictions", []) if r["image_id"] == first["image_id"]]
        shown = [d["segmentation"] for d in overlay.confident(dets)] if dets else []
        truth = [a["segmentation"] for a in first["annotations"]]
        caption = (
            f"{first['image_id']}, epoch {metrics['epoch']}: val_map50 {metrics[METRIC]:.4f} over the validation "
            f"tiles. Left: ground truth ({len(truth)} nuclei); right: prediction ({len(shown)} of {len(dets)} shown)"
        )
        report.files["val_overlay.png"] = lambda path: overlay.save_comparison(
            first["file_name"], truth, shown, caption, path
        )


class CheckpointReportHook(HookBase):
    """Logs the report, writes its checkpoint (NucleiTrainer.save_checkpoint) and hands both to the trial's report
    function (Ray Tune's, or LocalReporter outside Ray)."""

    def after_step(self) -> None:
        trainer, report = self.trainer, self.trainer.pending
        if report is None:
            return
        trainer.pending = None
        m = report.metrics
        if METRIC in m:
            uncapped = f" (uncapped {m['val_map50_all']:.4f})" if "val_map50_all" in m else ""
            if "val_pq" in m:
                uncapped += f", F1 {m['val_f1']:.4f}, PQ {m['val_pq']:.4f}, AJI {m['val_aji']:.4f}"
            logger.info(
                "epoch %d (iter %d/%d): loss %.3f, val_map50 %.4f%s (best %.4f), validation %.1f s",
                m["epoch"],
                m["iteration"],
                trainer.max_iter,
                m.get("total_loss", float("nan")),
                m[METRIC],
                uncapped,
                m[SCORE],
                m["val_seconds"],
            )
        else:
            logger.info(
                "epoch %d (iter %d/%d): loss %.3f (no validation data)",
                m["epoch"],
                m["iteration"],
                trainer.max_iter,
                m.get("total_loss", float("nan")),
            )
        trainer.report_fn(m, trainer.save_checkpoint(report))


FAULT_ENV = "NUCLEITUNE_FAIL_ONCE_AT_ITER"


class InjectedFault(HookBase):
    """Fault drill: raise at iteration N of a trial started from scratch, so that a retry from a checkpoint passes.

    Enabled by the environment variable NUCLEITUNE_FAIL_ONCE_AT_ITER=N (tests and chaos drills; never set by default).
    """

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self.iteration:
            raise RuntimeError(f"injected fault at iteration {self.iteration} ({FAULT_ENV})")


SLEEP_ENV = "NUCLEITUNE_SLEEP_AT_ITER"


class InjectedSleep(HookBase):
    """Time drill: once iteration N of a trial is done (its report at N, checkpoint included, already made), sleep S
    seconds, so that a time budget shorter than S ends with the trial unfinished however fast the machine trains.
    A trial resumed from a checkpoint at or after iteration N does not sleep again.

    Enabled by the environment variable NUCLEITUNE_SLEEP_AT_ITER=N:S (tests; never set by default).
    """

    def __init__(self, iteration: int, seconds: float):
        self.iteration, self.seconds = iteration, seconds

    @classmethod
    def from_env(cls) -> InjectedSleep | None:
        value = os.environ.get(SLEEP_ENV)
        if not value:
            return None
        iteration, _, seconds = value.partition(":")
        return cls(int(iteration), float(seconds))

    def after_step(self) -> None:
        if self.trainer.iter + 1 == self.iteration:
            logger.info("sleeping %g s after iteration %d (%s)", self.seconds, self.iteration, SLEEP_ENV)
            time.sleep(self.seconds)


# ---------------------------------------------------------------------------------------------------------------
# One trial, with or without Ray


def _setup_logging(log_file: str | None = None) -> None:
    """INFO to stdout (and to log_file), Detectron2 quiet but for its periodic metric lines. Idempotent."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(name)s: %(message)s")
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    setup_logger()  # same arguments as DefaultTrainer's call, so its lru_cache makes that one a no-op
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("detectron2.utils.events").setLevel(logging.INFO)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        root.addHandler(handler)
        logging.getLogger("detectron2").addHandler(handler)  # detectron2's logger does not propagate to the root


def run_trial(
    hparams: dict,
    settings: Settings,
    report: ReportFn,
    workdir: str | Path,
    resume_from: str | Path | None = None,
    reserved_gpus: float | None = None,
) -> dict:
    """Train one Mask R-CNN; `report(metrics, checkpoint_dir)` is called after every evaluation.

    `reserved_gpus`: the GPUs Ray reserved for the trial, which decide its device (trial_device); None outside Ray.
    Returns a summary dict. A NaN/Inf loss does not raise: it is reported as `failure_reason` (with a score of 0, so
    that searchers learn the configuration is bad) and ends the trial.
    """
    _setup_logging()
    hp = validate(hparams)
    device = settings.resolved_device(reserved_gpus)
    amp_dtype = settings.amp_dtype(device)
    settings.configure_torch(device)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(settings)  # dataset errors surface here, before any model is built
    cfg = build_cfg(
        hp,
        len(data.train),
        output_dir=workdir,
        device=device,
        num_workers=settings.num_workers or 0,
        amp=amp_dtype is not None,
    )
    # Python, NumPy and torch from the trial's seed: model init, the sampler's order (cfg.SEED), the augmentations
    # (loader workers are seeded from torch's generator by Detectron2's worker_init_reset_seed) and ROI sampling.
    seed_all_rng(cfg.SEED)
    trainer = NucleiTrainer(
        cfg,
        hp,
        data,
        report,
        settings.eval_every,
        workdir,
        settings.val_detections,
        amp_dtype=amp_dtype,
        report_at=settings.report_at,
    )
    if resume_from:
        path, state = Path(resume_from) / "model.pth", Path(resume_from) / TRAINER_STATE
        saved = Path(resume_from, "state.json")
        if not path.is_file():
            raise ConfigError(f"checkpoint not found: {path}")
        if not (state.is_file() or saved.is_file()):
            raise ConfigError(f"{resume_from}: neither {TRAINER_STATE} nor state.json: no iteration to resume at")
        trainer.checkpointer.load(str(path))
        if state.is_file():
            trainer.load_state_dict(torch.load(state, map_location="cpu", weights_only=True)["trainer"])
        else:
            # Weights without optimizer state (stripped, see trainable.checkpoints): rather than fail on every retry,
            # go on from the checkpoint's iteration with a fresh optimizer (SGD momentum restarts from zero) and the
            # LR schedule where it was. At a report after iteration `done` the trainer's iter was done - 1 and its
            # scheduler had stepped `done` times (hooks.LRScheduler steps after each iteration, before the report).
            import warnings

            done = int(json.loads(saved.read_text())["iteration"])
            logger.warning(
                "%s: no %s (optimizer and LR scheduler state): resuming its weights at iteration %d with a fresh "
                "optimizer (momentum restarts), the LR schedule positioned there",
                resume_from,
                TRAINER_STATE,
                done,
            )
            trainer.iter = done - 1
            trainer.scheduler.last_epoch = done - 1
            with warnings.catch_warnings():  # torch's "lr_scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                trainer.scheduler.step()  # last_epoch = done, and the optimizer's LR set from the schedule there
        trainer.start_iter = trainer.iter + 1
        if (
            trainer.score.best is None and saved.is_file()
        ):  # a checkpoint without the hook's state (weights only, older)
            trainer.score.best = json.loads(saved.read_text())["metrics"].get(SCORE)
        logger.info("resumed from %s at iteration %d", path, trainer.start_iter)
    else:
        try:
            trainer.resume_or_load(resume=False)
        except Exception as e:
            raise ConfigError(f"could not load weights {cfg.MODEL.WEIGHTS!r}: {type(e).__name__}: {e}") from None
    fail_at = os.environ.get(FAULT_ENV)
    if fail_at and trainer.start_iter == 0:
        trainer.register_hooks([InjectedFault(int(fail_at))])
    if sleep := InjectedSleep.from_env():
        trainer.register_hooks([sleep])  # after the report hook: the report at N comes first
    start = time.perf_counter()
    summary = {"start_iter": trainer.start_iter, "max_iter": trainer.max_iter, "failure_reason": None}
    try:
        trainer.train()
    except FloatingPointError as e:
        ipe = schedule(hp, len(data.train))["iters_per_epoch"]
        reason = f"loss became NaN/Inf at iteration {trainer.iter} (epoch {trainer.iter // ipe + 1})"
        logger.error("trial diverged: %s (%s)", reason, str(e).splitlines()[0])
        summary["failure_reason"] = reason
        report(
            {
                "epoch": trainer.iter // ipe + 1,
                "iteration": trainer.iter,
                PROGRESS: trainer.iter / trainer.max_iter,
                STEP: progress_step(trainer.iter, trainer.max_iter),
                METRIC: 0.0,
                SCORE: 0.0,  # an unstable configuration scores nothing (search.outcome)
                "diverged": 1,
                "failure_reason": reason,
            },
            None,
        )
    summary["train_seconds"] = time.perf_counter() - start
    summary["end_iter"] = trainer.iter + 1
    return summary


def tune_trial(config: dict, settings: dict) -> None:
    """The Ray Tune trainable: hyperparameters in `config`, fixed settings via tune.with_parameters."""
    import ray
    from ray import tune

    context = ray.get_runtime_context()
    node_id = context.get_node_id()  # which node ran each epoch (node_ip is the same on loopback)
    # What Ray reserved for this trial decides its device: Ray does not hide GPUs from a trial that reserves none.
    reserved_gpus = float(context.get_assigned_resources().get("GPU", 0.0))

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        metrics = {**metrics, "node_id": node_id}
        if ckpt_dir is None:
            tune.report(metrics)
            return
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # Ray has copied it to the trial's storage

    checkpoint = tune.get_checkpoint()
    # The log goes to the trial's working folder, which Ray syncs into the sweep folder (sync_artifacts); a restarted
    # trial may get a fresh working folder, so it writes a log of its own instead of replacing the first one.
    _setup_logging("trial.log" if checkpoint is None else f"trial-resumed-{time.strftime('%Y%m%d-%H%M%S')}.log")
    # Checkpoints are staged outside the working folder, which Ray syncs to storage.
    with (
        checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as ckpt_dir,
        tempfile.TemporaryDirectory(prefix="nucleitune-trial-") as workdir,
    ):
        run_trial(
            config,
            Settings.from_dict(settings),
            report,
            workdir=workdir,
            resume_from=ckpt_dir,
            reserved_gpus=reserved_gpus,
        )


# ---------------------------------------------------------------------------------------------------------------
# Standalone runs


class LocalReporter:
    """Outside Ray: metrics to <out>/metrics.jsonl, checkpoints to <out>/checkpoints: the latest, and the best by
    trainable.checkpoints.best_checkpoint (the rule export and MLflow follow)."""

    def __init__(self, out: Path):
        self.out = out
        self.ckpts = out / "checkpoints"
        self.ckpts.mkdir(parents=True, exist_ok=True)
        self.best_checkpoint()  # a resumed run's checkpoints must be readable before it trains

    def best_checkpoint(self) -> Path | None:
        return best_checkpoint(self.ckpts.glob("epoch_*"), lambda path, why: ConfigError(f"{path}: unreadable ({why})"))

    @property
    def best(self) -> tuple[float, Path] | None:
        """(val_map50, checkpoint folder) of the best checkpoint, or None."""
        d = self.best_checkpoint()
        return None if d is None else (json.loads((d / "state.json").read_text())["metrics"][METRIC], d)

    def __call__(self, metrics: dict, ckpt_dir: str | None) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if ckpt_dir is None:
            return
        dest = self.ckpts / f"epoch_{metrics['epoch']:04d}"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(ckpt_dir, dest)
        best = self.best_checkpoint()
        for old in self.ckpts.iterdir():
            if old not in (dest, best):
                shutil.rmtree(old, ignore_errors=True)
        strip_trainer_state(list(self.ckpts.iterdir()), latest=dest)

    def latest(self) -> Path | None:
        dirs = sorted(self.ckpts.glob("epoch_*"))
        return dirs[-1] if dirs else None


def load_trial_file(path: str | Path) -> tuple[dict, dict]:
    """A trial YAML: {hparams: {...}, settings: {...}} -> (hparams, settings dict)."""
    doc = read_document(path, ConfigError) or {}
    if not isinstance(doc, dict) or set(doc) - {"hparams", "settings"}:
        raise ConfigError(f"{path}: expected top-level keys 'hparams' and 'settings'")
    return dict(doc.get("hparams") or {}), dict(doc.get("settings") or {})


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m trainable.train",
        description="Run one Mask R-CNN trial outside Ray (debugging): train, evaluate every eval_every epochs, "
        "checkpoint. Metrics go to OUT/metrics.jsonl, checkpoints to OUT/checkpoints (best and latest).",
    )
    p.add_argument("--config", required=True, help="trial YAML with 'hparams' and 'settings' sections")
    p.add_argument("--data", help="dataset root in the course layout (overrides settings.data)")
    p.add_argument("--out", default="results/trial", help="output folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUT")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides settings.device")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        check_folder(out, ConfigError, "--out")
        hparams, sdict = load_trial_file(args.config)
        if args.data:
            sdict["data"] = args.data
        if args.device:
            sdict["device"] = args.device
        if "data" not in sdict:
            raise ConfigError(f"{args.config}: no dataset: give --data or settings.data")
        sdict["data"] = str(Path(sdict["data"]).resolve())
        check_folder(sdict["data"], ConfigError, "--data" if args.data else f"settings.data of {args.config}")
        try:
            settings = Settings.from_dict(sdict)
            hparams = validate(hparams)  # a bad value is one line before OUT is made
        except (ConfigError, DatasetError) as e:
            raise ConfigError(f"{args.config}: {e}") from None
        records, _ = load_train_records(settings.data, settings.cache_dir)  # and a bad dataset (then cached)
        Split.from_dict(settings.split).apply([r["image_id"] for r in records])
        del records
        reporter = LocalReporter(out)
        resume = reporter.latest() if args.resume else None
        if args.resume and resume is None:
            raise ConfigError(f"{out / 'checkpoints'}: no checkpoint to resume from")
        if not args.resume:
            (out / "metrics.jsonl").unlink(missing_ok=True)
        summary = run_trial(hparams, settings, reporter, workdir=out / "work", resume_from=resume)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shutil.rmtree(out / "work", ignore_errors=True)
    summary["best"] = {"val_map50": reporter.best[0], "checkpoint": str(reporter.best[1])} if reporter.best else None
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 1 if summary["failure_reason"] else 0


if __name__ == "__main__":
    sys.exit(main())
