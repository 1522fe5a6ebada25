"""Confirm a sweep's best configurations on other folds: is the winner still the winner?

    python -m search.confirm [--name SWEEP] [--top K] [--folds N] [--address auto]

The sweep's tiles (its training and validation tiles) are split into N folds; fold 0 is the sweep's own validation
tiles, the others share its training tiles (a seeded shuffle, dealt in turn). Each of the K best trials of the sweep
is re-trained, with its hyperparameters and seed, on every other fold's complement and scored on the fold, as Ray Tune
trials with the sweep's resources; its fold-0 score is its sweep score (a trial that ASHA stopped early is re-trained
on fold 0 too, on the sweep's own training tiles: its sweep checkpoint covers only part of its schedule, and this one
is what ships). Ranked by mean val_map50_best over folds 1..N-1, with its standard deviation: fold 0 chose the K, so
its scores carry the winner's curse and are shown beside them, not averaged in. The ranking (confirm_mean,
confirm_std, confirm_folds) lives in the confirmation's folder beside the jobs it came from; the leaderboard and
MLflow show it under the same names (MLflow: runs of role `confirm` under the sweep's run). Run it again to continue
an interrupted confirmation.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass

import pandas as pd

from search import outcome, reruns
from search.outcome import CONFIRM_FOLDS, CONFIRM_MEAN, CONFIRM_STD
from search.space import SpaceError
from search.sweep import Sweep, UsageError, ranked
from trainable.cli import OneLineParser
from trainable.config import ConfigError
from trainable.data import DatasetError, Split, load_train_records
from trainable.metrics import SCORE


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m search.confirm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", help="sweep name (default: the latest in --results)")
    p.add_argument(
        "--results", default="results", help="folder or s3:// gs:// location of sweeps (default: %(default)s)"
    )
    p.add_argument("--top", type=int, help="how many of the best trials to confirm (default: the space's confirm.top)")
    p.add_argument("--folds", type=int, help="folds of the labelled tiles (default: the space's confirm.folds)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' or host:port (default: start a local Ray)")
    p.add_argument("--data", help="the sweep's dataset, if it has moved since the sweep (default: the sweep's)")
    return p


def make_folds(ids: list[str], val_ids: list[str], n: int, seed: int) -> list[list[str]]:
    """N folds of the sweep's tiles `ids`: fold 0 is `val_ids` (the sweep's validation), folds 1..N-1 deal the rest
    in a shuffle seeded by `seed`. Refused when a fold would be empty."""
    rest = sorted(set(ids) - set(val_ids))
    if n < 2 or n - 1 > len(rest):
        raise UsageError(
            f"--folds {n}: needs 2 to {len(rest) + 1} folds (the sweep's {len(val_ids)} validation tiles are one, its "
            f"other {len(rest)} tiles make the others: no fold may be empty)"
        )
    random.Random(seed).shuffle(rest)
    return [sorted(val_ids)] + [sorted(rest[i :: n - 1]) for i in range(n - 1)]


def candidates(board: pd.DataFrame, top: int) -> pd.DataFrame:
    """The `top` best scored trials of the leaderboard, best first."""
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    scored = ranked(board)
    if top > len(scored):
        raise UsageError(
            f"--top {top}: the sweep has {len(scored)} scored trial(s) (finished or stopped early) to confirm"
        )
    return scored.head(top)


@dataclass(frozen=True)
class Plan:
    """A confirmation, checked before anything is written: its rerun (jobs, space, settings) and the trials chosen."""

    rerun: reruns.Rerun
    chosen: pd.DataFrame
    folds: int


def plan(sweep: Sweep, top: int | None, folds: int | None, data: str | None = None) -> Plan:
    """Every check and the confirmation's jobs, before anything is written."""
    space, settings = sweep.as_ran(data)
    board = sweep.board()
    if not outcome.complete(board["status"], space.trial_count()):
        raise UsageError(
            f"{sweep.folder}: the sweep is unfinished: continue it first (python -m search.run --resume --name "
            f"{sweep.name} --results {sweep.results})"
        )
    top = space.confirm["top"] if top is None else top
    folds = space.confirm["folds"] if folds is None else folds
    chosen = candidates(board, top)
    records, _ = load_train_records(settings.data, settings.cache_dir)
    split = Split.from_dict(settings.split)
    sweep_train, sweep_val = split.apply([r["image_id"] for r in records])
    pool = sorted({*sweep_train, *sweep_val})  # the tiles the sweep used: fold 0 trains on sweep_train exactly
    tiles = make_folds(pool, sweep_val, folds, split.seed)
    jobs = []
    for row in chosen.to_dict("records"):
        config = sweep.trial_config(row, space)
        for f in range(0 if row["status"] != "finished" else 1, folds):
            train = [i for i in pool if i not in set(tiles[f])]
            jobs.append(reruns.job("confirm", row, config, tiles[f], len(train), train, fold=f, folds=folds))
    done = reruns.read_jobs(sweep.confirmation)
    if done is not None and done != jobs:
        trials, n = len({j["trial_id"] for j in done}), done[0]["folds"] if done else 0
        raise UsageError(
            f"{sweep.confirmation.folder}: holds a confirmation of other trials or folds ({trials} trials, {n} "
            "folds): delete that folder to confirm anew"
        )
    return Plan(reruns.Rerun(sweep, sweep.confirmation, jobs, space, settings), chosen, folds)


def rank(chosen: pd.DataFrame, rows: list[dict], folds: int) -> pd.DataFrame:
    """One row per confirmed trial: sweep score, the score on each fold, mean and standard deviation over the folds
    that took no part in choosing it (1..N-1) and scored, best mean first (ties: the sweep's order). Fold 0 is shown:
    for a finished trial it is its sweep score, the very number it was chosen by."""
    out = []
    for order, c in enumerate(chosen.to_dict("records")):
        per_fold = {0: c[SCORE]} if c["status"] == "finished" else {}
        for r in rows:
            if r["job"]["trial_id"] == c["trial_id"] and r["status"] in outcome.SCORED + ("failed",):
                per_fold[r["job"]["fold"]] = r["score"]
        scores = pd.Series([per_fold[f] for f in sorted(per_fold) if f > 0], dtype=float)
        out.append(
            {
                "trial": int(c["trial"]),
                "trial_id": c["trial_id"],
                "sweep_status": c["status"],
                f"sweep_{SCORE}": c[SCORE],
                **{f"fold_{f}": per_fold.get(f) for f in range(folds)},
                CONFIRM_MEAN: scores.mean(),
                CONFIRM_STD: scores.std(),  # sample standard deviation (ddof=1); NaN from one fold
                CONFIRM_FOLDS: len(scores),
                "sweep_rank": order + 1,
            }
        )
    table = pd.DataFrame(out).sort_values([CONFIRM_MEAN, "sweep_rank"], ascending=[False, True])
    return table.reset_index(drop=True)


def verdict(table: pd.DataFrame) -> str:
    """The line that says whether confirmation changed the winner."""

    def who(r) -> str:
        return f"trial {int(r['trial']):02d} ({r['trial_id']})"

    def score(r) -> str:
        return f"{CONFIRM_MEAN} {r[CONFIRM_MEAN]:.4f} ± {r[CONFIRM_STD]:.4f} over {r[CONFIRM_FOLDS]} folds"

    first = table.iloc[0]
    sweep_best = table.sort_values("sweep_rank").iloc[0]
    if first["trial_id"] == sweep_best["trial_id"]:
        line = f"winner confirmed: {who(first)}, {score(first)} (sweep score {first[f'sweep_{SCORE}']:.4f})"
        other = table.iloc[1] if len(table) > 1 else None
    else:
        line = f"winner changed: {who(first)}, {score(first)}, replaces {who(sweep_best)}, {score(sweep_best)}"
        other = sweep_best
    if other is not None and abs(first[CONFIRM_MEAN] - other[CONFIRM_MEAN]) < max(
        first[CONFIRM_STD], other[CONFIRM_STD]
    ):
        line += f"; {who(other)} is within one standard deviation"
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = Sweep.open(args.results, args.name)
        p = plan(sweep, args.top, args.folds, args.data)
        from search import preflight

        if args.address:
            preflight.probe_address(args.address)
        else:
            preflight.check_machine(p.rerun.space, sweep.space_file)
    except (UsageError, SpaceError, ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    space, jobs, confirmation = p.rerun.space, p.rerun.jobs, sweep.confirmation.folder
    print(
        f"confirming {len(p.chosen)} trial(s) of {sweep.name} on {p.folds} folds: {len(jobs)} trial(s) to train "
        f"({space.resources['cpu']:g} CPU, {space.resources['gpu']:g} GPU each)",
        flush=True,
    )
    start = time.perf_counter()
    try:
        rows = reruns.run(p.rerun, args.address)
    except UsageError as e:  # Ray did not start
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    crashed = [r for r in rows if r["status"] == "error"]
    if crashed:
        which = ", ".join(f"trial {r['job']['trial']:02d} fold {r['job']['fold']}" for r in crashed)
        print(
            f"error: {len(crashed)} confirmation trial(s) raised ({which}; see their error.txt in {confirmation}): "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return 1
    if not outcome.complete([r["status"] for r in rows], len(jobs)):
        ended = sum(r["status"] in outcome.ENDED for r in rows)
        print(
            f"error: confirmation interrupted: {ended} of {len(jobs)} trials ended; run the same command again to "
            "continue",
            file=sys.stderr,
        )
        return 1
    table = rank(p.chosen, rows, p.folds)
    sweep.write_confirmed(table)  # beside the confirmation's jobs; the leaderboard reads it from there
    hours = sum(r["device_hours"] for r in rows)
    unit = "GPU-hours" if space.resources.get("gpu") else "CPU-hours"
    line = verdict(table)
    print(f"\n{table.to_string(index=False, float_format=lambda v: f'{v:.4f}')}\n")
    print(f"confirmation: {sweep.confirmed_file} ({len(jobs)} trials, wall {wall:.0f} s, {hours:.3f} {unit})")
    print(line)
    tracking = sweep.mlflow_run()
    if tracking:
        from search import tracking as mlflow_tracking

        tracker = mlflow_tracking.Tracker(tracking["uri"])
        mlflow_tracking.log_confirmation(tracker, tracking["parent"], space, sweep.name, table, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
