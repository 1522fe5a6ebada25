"""The names of what a trial reports, in one place (the trial writes them; the search, MLflow and plots read them)."""

LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
METRIC = "val_map50"  # mask AP@0.5 at the course scorer's 100 detections, this report's model
# The trial's score: the best val_map50 of its reports so far, 0 once its loss has diverged. Searcher, scheduler,
# leaderboard, MLflow and `export --best` rank trials by it (spaces/README.md, "Trial score").
SCORE = "val_map50_best"
PROGRESS = "progress"  # iterations done / the trial's iterations: ASHA's time axis (1.0 = the whole schedule)
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
    "val_seconds",
)
