"""The names of what a trial reports, in one place (the trial writes them; the search, MLflow and plots read them)."""

LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
METRIC = "val_map50"  # mask AP@0.5 at the course scorer's 100 detections, this report's model
COURSE_MAX_DETS = 100  # the course scorer's cap: detections per image that count
# The trial's score: the best val_map50 of its reports so far, 0 once its loss has diverged. Searcher, scheduler,
# leaderboard, MLflow and `export --best` rank trials by it (spaces/README.md, "Trial score").
SCORE = "val_map50_best"
PROGRESS = "progress"  # iterations done / the trial's iterations (1.0 = the whole schedule)
# ASHA's time axis and Optuna's step: the iterations done in whole thousandths of the trial's own schedule, rounded
# down. Whole numbers keep the rungs exact (in floats 0.1 x 3 is 0.30000000000000004, which put the 30 % rung of a
# 100-epoch trial at epoch 31), and one step is the same fraction of every trial's schedule, whatever its epochs.
STEP = "progress_step"
STEPS = 1000  # the step of a trial that has run its whole schedule
# The nuclei field's measures (trainable.measures), reported as val_<name> where validation is uncapped.
MEASURES = ("precision", "recall", "f1", "sq", "pq", "aji", "dice")
MEASURE_KEYS = tuple(f"val_{m}" for m in MEASURES)
# Per-report metrics worth a curve in MLflow (val_detections_per_image, capped at 100, is logged once per trial).
METRIC_KEYS = (
    *LOSS_KEYS,
    "lr",
    "sec_per_iter",
    METRIC,
    SCORE,
    "val_map50_all",
    "val_map",
    "val_map_all",
    *MEASURE_KEYS,
    "val_seconds",
)


def progress_step(done: int, total: int) -> int:
    """`done` of `total` iterations as a STEP: exact integer arithmetic, so a rung at 300 is reached at exactly 30 %."""
    return done * STEPS // total


def report_iterations(max_iter: int, iters_per_epoch: int, eval_every: int, steps: list[int]) -> set[int]:
    """The iterations after which a trial reports: the end of every `eval_every`-th epoch, the end of the first epoch
    at or past each progress step (ASHA's rungs, so that every trial is compared at the same point of its own
    schedule), and the last iteration."""
    epochs = max_iter // iters_per_epoch
    done = {e * iters_per_epoch for e in range(eval_every, epochs + 1, eval_every)}
    for f in steps:
        # The same expression as the reported step, so that the report's step >= f holds exactly.
        e = next((e for e in range(1, epochs + 1) if progress_step(e * iters_per_epoch, max_iter) >= f), None)
        if e is not None:
            done.add(e * iters_per_epoch)
    return done | {max_iter}
