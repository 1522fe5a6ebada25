"""Plots for MLflow: a trial's learning curve and LR schedule; a sweep's hyperparameter importance and scatter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from search.leaderboard import trial_reports  # noqa: E402
from search.space import Space  # noqa: E402
from trainable.metrics import LOSS_KEYS  # noqa: E402


def learning_curve(trial_dir: Path, out: Path) -> Path:
    """Training losses and val_map50 / val_map50_all against epoch (one line per report)."""
    rows = trial_reports(trial_dir)
    df = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch") if rows else pd.DataFrame()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in LOSS_KEYS:
        if key in df:
            ax1.plot(df["epoch"], df[key], marker=".", label=key, linewidth=2 if key == "total_loss" else 1)
    ax1.set(xlabel="epoch", ylabel="training loss (mean over the epochs since the last report)", title="losses")
    ax1.legend(fontsize=7)
    for key, label in (("val_map50", "val_map50 (top 100, course metric)"), ("val_map50_all", "val_map50_all")):
        if key in df:
            ax2.plot(df["epoch"], df[key], marker="o", label=label)
    ax2.set(xlabel="epoch", ylabel="mask AP@0.5", title="validation", ylim=(0, 1))
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def lr_schedule(hp: dict, num_train_images: int, out: Path) -> Path:
    """The learning rate at every iteration, from Detectron2's own scheduler for this trial's config."""
    import torch
    from detectron2.solver import build_lr_scheduler

    from trainable.config import build_cfg, schedule, with_defaults

    hp = with_defaults(hp)
    cfg = build_cfg({**hp, "weights": "scratch"}, num_train_images)  # weights do not change the schedule
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ipe = schedule(hp, num_train_images)["iters_per_epoch"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([i / ipe for i in range(len(lrs))], lrs)
    ax.set(
        xlabel="epoch",
        ylabel="learning rate",
        yscale="log",
        title=f"warm-up {hp.get('warmup_epochs')} ep, decays at {hp.get('decay_epochs')}",
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def sweep_plots(leaderboard_csv: Path, space: Space, out_dir: Path) -> list[Path]:
    """Which hyperparameters matter: Optuna importance (when enough trials) and val_map50 against each one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    board = pd.read_csv(leaderboard_csv)
    board = board[board["best_val_map50"].notna()]
    names = [n for n in space.params if n != "decay"] + (["decay_epochs"] if "decay" in space.params else [])
    paths = []
    if len(board):
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            x = board[f"hp.{name}"]
            if name == "decay_epochs":
                x = x.map(lambda s: json.loads(s)[0] if isinstance(s, str) and s.startswith("[") and s != "[]" else 0)
                name = "first decay epoch"
            if x.dtype == object:
                cats = sorted(x.astype(str).unique())
                ax.scatter(x.astype(str).map(cats.index), board["best_val_map50"])
                ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=7)
            else:
                ax.scatter(x, board["best_val_map50"])
                if space.params.get(name) is not None and space.params[name].kind == "loguniform":
                    ax.set_xscale("log")
            ax.set(xlabel=name, ylabel="best val_map50")
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        fig.suptitle("best val_map50 of each trial against its hyperparameters")
        fig.tight_layout()
        paths.append(out_dir / "params_vs_val_map50.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    importance = _importance(board, names)
    if importance:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(importance)))
        items = sorted(importance.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(xlabel="importance for best val_map50 (Optuna PED-ANOVA)", title="hyperparameter importance")
        fig.tight_layout()
        paths.append(out_dir / "param_importance.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def _importance(board: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """Optuna's importance over the leaderboard rows; {} when there are too few trials to say anything."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if len(board) < 3:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in board.iterrows():
        params, dists = {}, {}
        for n in names:
            v = row[f"hp.{n}"]
            if isinstance(v, str) or n == "decay_epochs":
                params[n], dists[n] = str(v), CategoricalDistribution(sorted(board[f"hp.{n}"].astype(str).unique()))
            else:
                lo, hi = float(board[f"hp.{n}"].min()), float(board[f"hp.{n}"].max())
                params[n], dists[n] = float(v), FloatDistribution(lo, hi if hi > lo else lo + 1e-9)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=row["best_val_map50"]))
    try:
        return optuna.importance.get_param_importances(study)
    except Exception:  # noqa: BLE001 - e.g. every value equal: nothing to rank
        return {}
