"""Plots for MLflow: a trial's learning curve and LR schedule; a sweep's hyperparameter importance and scatter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from search.space import Space  # noqa: E402
from trainable.metrics import LOSS_KEYS, METRIC, SCORE  # noqa: E402


def learning_curve(reports: list[dict], out: Path) -> Path:
    """Training losses, val_map50 (best so far dashed) and, where validation measured them, F1, PQ, AJI and Dice
    against epoch, one point per report. `reports`: what the
    driver received (Ray writes result.json with a delay, so a file read at a trial's end can lack its last epochs)."""
    df = pd.DataFrame(reports).drop_duplicates("epoch", keep="last").sort_values("epoch") if reports else pd.DataFrame()
    df = df[df.get("diverged", pd.Series(0, index=df.index)).fillna(0) == 0] if len(df) else df
    measured = [k for k in ("val_f1", "val_pq", "val_aji", "val_dice") if k in df]
    fig, axes = plt.subplots(1, 3 if measured else 2, figsize=(16 if measured else 11, 4.2))
    ax1, ax2 = axes[0], axes[1]
    for key in LOSS_KEYS:
        if key in df:
            ax1.plot(df["epoch"], df[key], marker=".", label=key, linewidth=2 if key == "total_loss" else 1)
    ax1.set(xlabel="epoch", ylabel="training loss", title="losses (mean since the previous report)")
    for key, label, style in (
        (METRIC, "val_map50 (top 100, course metric)", "-o"),
        (SCORE, "best so far (the trial score)", "--"),
        ("val_map50_all", "val_map50, all detections", ":o"),
    ):
        if key in df:
            ax2.plot(df["epoch"], df[key], style, label=label)
    top = max([df[k].max() for k in (METRIC, "val_map50_all") if k in df] or [0.0])
    title = "validation" if METRIC in df else "validation: none (a refit learns from every labelled tile)"
    ax2.set(xlabel="epoch", ylabel="mask AP@0.5", title=title, ylim=(0, max(0.02, 1.15 * top)))
    if measured:  # the nuclei field's measures (trainable.measures), of every kept detection
        for key in measured:
            axes[2].plot(df["epoch"], df[key], "-o", label=key.removeprefix("val_"))
        axes[2].set(xlabel="epoch", ylabel="mean over validation tiles", title="nuclei measures", ylim=(0, 1))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.has_data():
            ax.legend(fontsize=7)
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
    cfg = build_cfg({**hp, "weights": "scratch", "norm": "auto"}, num_train_images)  # weights do not change it
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ipe = schedule(hp, num_train_images)["iters_per_epoch"]
    decays = hp["decay_epochs"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([i / ipe for i in range(len(lrs))], lrs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(
        xlabel="epoch",
        ylabel="learning rate",
        yscale="log",
        title=f"warm-up {hp['warmup_epochs']:.3g} epochs, decays at {', '.join(map(str, decays)) or 'none'}",
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


MIN_FOR_IMPORTANCE = 10  # finished trials; fewer say more about noise than about the hyperparameters
MARKERS = {"finished": ("o", "tab:blue"), "stopped_early": ("x", "tab:gray"), "failed": ("v", "tab:red")}


def sweep_plots(board: pd.DataFrame, space: Space, out_dir: Path) -> list[Path]:
    """Which hyperparameters matter: each trial's score against each searched hyperparameter, by status (a stopped
    trial's score comes from fewer epochs), and Optuna's importance once MIN_FOR_IMPORTANCE trials finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    board = board[board[SCORE].notna()]
    names = [n for n in space.searched_names() if f"hp.{n}" in board]
    paths = []
    if len(board) and names:
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows + 0.6), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            x = board[f"hp.{name}"]
            label = name
            if name == "decay_epochs":
                x = x.map(lambda s: json.loads(s)[0] if isinstance(s, str) and s.startswith("[") and s != "[]" else 0)
                label = "first decay epoch (0: none)"
            categorical = x.dtype == object
            cats = sorted(x.astype(str).unique()) if categorical else []
            for status, (marker, colour) in MARKERS.items():
                part = board["status"] == status
                if part.any():
                    xs = x[part].astype(str).map(cats.index) if categorical else x[part]
                    ax.scatter(xs, board.loc[part, SCORE], marker=marker, c=colour, label=status)
            if categorical:
                ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=7)
            elif getattr(space.params.get(name), "log", False):
                ax.set_xscale("log")
            ax.set(xlabel=label, ylabel="trial score")
        axes.flat[0].legend(fontsize=7)
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        counts = ", ".join(f"{n} {s}" for s, n in board["status"].value_counts().items())
        fig.suptitle(f"trial score (best val_map50) against each searched hyperparameter ({counts})")
        fig.tight_layout()
        paths.append(out_dir / "params_vs_val_map50.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    finished = board[board["status"] == "finished"]
    importance = _importance(finished, names) if len(finished) >= MIN_FOR_IMPORTANCE else {}
    if importance:
        fig, ax = plt.subplots(figsize=(6, 0.8 + 0.4 * len(importance)))
        items = sorted(importance.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items])
        ax.set(
            xlabel="importance for the trial score (Optuna)",
            title=f"hyperparameter importance over {len(finished)} finished trials",
        )
        fig.tight_layout()
        paths.append(out_dir / "param_importance.png")
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def _importance(board: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """Optuna's importance over leaderboard rows; {} when it cannot rank them."""
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
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=row[SCORE]))
    try:
        return optuna.importance.get_param_importances(study)
    except Exception:  # noqa: BLE001 - e.g. every value equal: nothing to rank
        return {}
