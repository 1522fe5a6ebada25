"""Real sweeps: Ray Tune + Optuna + ASHA + Detectron2 on one-tile datasets, driven through the CLI."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DUP_TILE, ROOT, kill_driver
from tests.conftest import sweep_space as _space
from trainable.metrics import STEPS


def _run(*args, timeout=900, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_sweep_asha_stops_a_bad_trial_and_optuna_learns(dup_data, cache_dir, pretrained, tmp_path):
    # Trials start from a model that already finds nuclei; score_thresh_test 0.9999 keeps no detection, so that
    # trial scores 0 at epoch 1 and ASHA (rung at epoch 1, factor 2) must stop it.
    space = _space(
        tmp_path,
        dup_data,
        cache_dir,
        fixed={"weights": str(pretrained), "lr": 1e-4},
        params={"score_thresh_test": {"choice": [0.05, 0.9999]}},
        points_to_evaluate=[
            {"score_thresh_test": 0.05, "brightness": 0.0},
            {"score_thresh_test": 0.9999, "brightness": 0.0},
        ],
    )
    p = _run("--space", str(space), "--results", str(tmp_path / "results"), "--name", "asha")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    folder = tmp_path / "results" / "asha"
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(board) == 3 and board["trial_id"].is_unique
    # The third trial is TPE's pick and may land on either value; ASHA may stop a good one that ranks below the
    # rung's median, so only this is certain: a good trial ran all 3 epochs, every bad one stopped after epoch 1.
    good = board[board["hp.score_thresh_test"] == 0.05]
    bad = board[board["hp.score_thresh_test"] == 0.9999]
    finished = good[good["status"] == "finished"]
    assert len(finished) >= 1 and (finished["epochs_run"] == 3).all() and (good["val_map50_best"] > 0).all()
    assert len(bad) >= 1 and (bad["status"] == "stopped_early").all() and (bad["epochs_run"] == 1).all()
    assert bad["stopped_early"].astype(bool).all()
    assert "best: trial" in p.stdout and "leaderboard:" in p.stdout

    # Every trial wrote its log and kept at most two checkpoints (best and latest); only the latest holds the
    # training state, the best its weights. Each trial had 2 CPUs: 1 loader process beside its own.
    for row in board.itertuples():
        trial_dir = Path(row.path)
        assert (trial_dir / "trial.log").is_file()
        ckpts = sorted(trial_dir.glob("checkpoint_*"))
        assert 1 <= len(ckpts) <= 2
        assert [(c / "trainer.pth").is_file() for c in ckpts] == [False] * (len(ckpts) - 1) + [True]
        assert all((c / "model.pth").is_file() for c in ckpts)
        assert "NUM_WORKERS: 1\n" in (ckpts[-1] / "config.yaml").read_text()

    # Every trial's learning curve, drawn from the reports the driver received, shows its validation points, also a
    # trial stopped after one epoch (val_map50 in matplotlib's first colour, right-hand panel).
    import numpy as np
    from PIL import Image

    curves = sorted((tmp_path / "results" / "mlartifacts").rglob("learning_curve.png"))
    assert len(curves) == 3
    for curve in curves:
        rgb = np.asarray(Image.open(curve).convert("RGB")).astype(int)
        right = rgb[:, rgb.shape[1] // 2 :]
        assert (np.abs(right - [31, 119, 180]).sum(axis=2) < 40).sum() > 15, curve

    # The Optuna study behind the searcher: finished trials COMPLETE with their score (the leaderboard's), trials ASHA
    # stopped PRUNED with their score per epoch (TPE ranks them below finished ones).
    from optuna.trial import TrialState
    from ray.tune.search import ConcurrencyLimiter

    from search.searchers import ScoredOptunaSearch

    searcher = ConcurrencyLimiter(ScoredOptunaSearch(), max_concurrent=1)
    searcher.restore_from_dir(str(folder))
    trials = searcher.searcher._ot_study.trials
    assert len(trials) == 3
    complete = sorted(t.value for t in trials if t.state == TrialState.COMPLETE)
    assert complete == pytest.approx(sorted(board.loc[board["status"] == "finished", "val_map50_best"]))
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(pruned) == (board["status"] == "stopped_early").sum() >= 1
    # Their scores at the rungs they reached, as progress steps (thousandths of the schedule) before its end.
    assert all(t.intermediate_values and max(t.intermediate_values) < STEPS for t in pruned)
    bad = [t for t in trials if t.params["score_thresh_test"] == 0.9999]
    assert all(t.state == TrialState.PRUNED and t.intermediate_values == {300: 0.0} for t in bad)  # rung 300


def test_resume_after_driver_sigkill(dup_data, cache_dir, tmp_path):
    space = _space(tmp_path, dup_data, cache_dir, scheduler="fifo", trial_seeds="per_trial")
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", str(results), "--name", "r"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    folder = results / "r"
    deadline = time.time() + 600
    # Kill once the second trial has a checkpoint: one trial done, one mid-training, one not started.
    while time.time() < deadline and len(list(folder.glob("trial_*/checkpoint_*"))) < 4:
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        time.sleep(0.5)
    kill_driver(driver)
    assert not (folder / "leaderboard.csv").exists()

    p = _run("--resume", "--results", str(results), "--name", "r")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    board = pd.read_csv(folder / "leaderboard.csv")
    assert len(board) == 3 and board["trial_id"].is_unique
    assert (board["status"] == "finished").all() and (board["epochs_run"] == 3).all()
    logs = {r.trial_id: " ".join(p.read_text() for p in Path(r.path).glob("trial*.log")) for r in board.itertuples()}
    resumed = [t for t, text in logs.items() if "resumed from" in text]
    assert len(resumed) == 1, logs  # the trial that was mid-training continued from its checkpoint

    # MLflow (SQLite under --results): one parent, one run per trial, nothing left RUNNING, no duplicate.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nucleitune").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and sorted(r.data.tags["nucleitune.trial_id"] for r in children) == sorted(board["trial_id"])
    assert {r.info.status for r in runs} == {"FINISHED"}
    for child in children:  # every epoch once: the restarted trial's repeated epochs are not logged again
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_map50")) == [1, 2, 3]

    # trial_seeds: per_trial: three seeds, recorded alike in the leaderboard and MLflow.
    assert board["hp.seed"].nunique() == 3
    seeds = dict(zip(board["trial_id"], board["hp.seed"].astype(int), strict=True))
    assert {r.data.tags["nucleitune.trial_id"]: int(r.data.params["seed"]) for r in children} == seeds


def test_tracking_server_down_does_not_stop_the_sweep(dup_data, cache_dir, tmp_path):
    from search.ui import free_port

    space = _space(tmp_path, dup_data, cache_dir, scheduler="fifo", num_samples=1, fixed={"epochs": 1})
    p = _run(
        "--space",
        str(space),
        "--results",
        str(tmp_path / "results"),
        "--name",
        "down",
        "--mlflow-uri",
        f"http://127.0.0.1:{free_port()}",
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "warning: MLflow" in p.stderr and "the sweep goes on" in p.stderr
    board = pd.read_csv(tmp_path / "results" / "down" / "leaderboard.csv")
    assert board["status"].tolist() == ["finished"] and board["val_map50_best"].notna().all()


def test_sweep_where_every_trial_diverges_exits_non_zero_with_reasons(dup_data, cache_dir, tmp_path):
    # No warm-up and an absurd learning rate: the loss explodes, as the course report saw without warm-up.
    space = _space(
        tmp_path,
        dup_data,
        cache_dir,
        scheduler="fifo",
        num_samples=1,
        fixed={"epochs": 3, "lr": 1e6},
        params={"brightness": {"uniform": [0.0, 0.1]}},
    )
    p = _run("--space", str(space), "--results", str(tmp_path / "results"), "--name", "nan")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    assert "error: no trial finished" in p.stderr and "NaN/Inf" in p.stderr
    board = pd.read_csv(tmp_path / "results" / "nan" / "leaderboard.csv")
    assert board["status"].tolist() == ["failed"] and "NaN/Inf" in board["failure_reason"][0]


def test_raising_trial_is_retried_from_its_checkpoint_and_a_nan_trial_fails_alone(dup_data, cache_dir, tmp_path):
    # Two trials, FIFO: lr 0.01 trains normally but raises once at iteration 2 (fault drill; 1 iteration per epoch):
    # FailureConfig(max_failures=1) restarts it from its epoch-2 checkpoint. lr 1e6 without warm-up diverges.
    space = _space(
        tmp_path,
        dup_data,
        cache_dir,
        searcher="random",
        scheduler="fifo",
        num_samples=2,
        max_failures=1,
        params={"lr": {"choice": [0.01, 1e6]}},
        points_to_evaluate=[{"lr": 0.01, "brightness": 0.0}, {"lr": 1e6, "brightness": 0.0}],
    )
    results = tmp_path / "results"
    p = _run(
        "--space", str(space), "--results", str(results), "--name", "faults", env={"NUCLEITUNE_FAIL_ONCE_AT_ITER": "2"}
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    board = pd.read_csv(results / "faults" / "leaderboard.csv")
    assert len(board) == 2 and board["trial_id"].is_unique
    good = board[board["hp.lr"] == 0.01].iloc[0]
    bad = board[board["hp.lr"] == 1e6].iloc[0]
    assert good["status"] == "finished" and good["epochs_run"] == 3 and good["val_map50_best"] >= 0
    assert bad["status"] == "failed" and "NaN/Inf" in bad["failure_reason"]

    good_dir = Path(good["path"])
    assert "injected fault at iteration 2" in (good_dir / "error.txt").read_text()
    resumed = [f.read_text() for f in good_dir.glob("trial-resumed-*.log")]
    assert len(resumed) == 1 and "at iteration 2" in resumed[0]  # continued from the epoch-2 checkpoint

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nucleitune").experiment_id])
    by_id = {r.data.tags["nucleitune.trial_id"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(by_id) == {good["trial_id"], bad["trial_id"]} and len(runs) == 3
    assert by_id[good["trial_id"]].info.status == "FINISHED"
    assert by_id[bad["trial_id"]].info.status == "FAILED"
    assert "NaN/Inf" in by_id[bad["trial_id"]].data.tags["failure_reason"]
    steps = [m.step for m in client.get_metric_history(by_id[good["trial_id"]].info.run_id, "val_map50")]
    assert sorted(steps) == [1, 2, 3]  # the retry logged epoch 3 only, nothing twice


def test_time_budget_leaves_trials_unfinished_and_resume_continues_them_into_mlflow(dup_data, cache_dir, tmp_path):
    """--time-budget-s stops the sweep like Ctrl-C: unfinished trials, exit 1 with the --resume command. A resume
    honours its own budget; the last one completes the sweep and, MLflow on now, gives every trial its run.

    The budgets bite by construction, however fast the machine: under the sleep drill (NUCLEITUNE_SLEEP_AT_ITER,
    trainable.train.InjectedSleep) a trial that starts from scratch sleeps 600 s, longer than either budget, once its
    first iteration (its epoch 1, report and checkpoint made) is done, and the trials run one at a time
    (max_concurrent 1). A budget starts before the first trial of its launch, so it ends before any trial that
    started from scratch in that launch can end, and before any later trial can start: the first launch ends with
    no trial ended, the second (where trial 1 may go on from its checkpoint, past the drill, but trial 2 starts from
    scratch) with the sweep incomplete. Only the last launch runs without the drill. A slower machine only reaches
    the drill later (or not within the first budget: the trial then restarts from scratch on resume)."""
    settings = {
        "data": str(dup_data),
        "split": {"val_ids": ["copy"], "train_ids": [DUP_TILE]},
        "eval_every": 1,
        "val_crop": 256,  # validation on a 256 px centre crop: seconds, not tens of seconds, per epoch
        "cache_dir": str(cache_dir),
    }
    space = _space(tmp_path, dup_data, cache_dir, scheduler="fifo", num_samples=3, settings=settings)
    results = tmp_path / "results"
    drill = {"NUCLEITUNE_SLEEP_AT_ITER": "1:600"}
    first = _run(
        "--space",
        str(space),
        "--results",
        str(results),
        "--name",
        "b",
        "--mlflow-uri",
        "off",
        "--time-budget-s",
        "25",
        env=drill,
    )
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "python -m search.run --resume --name b" in first.stderr
    board = pd.read_csv(results / "b" / "leaderboard.csv")
    assert len(board) and (board["status"] == "unfinished").all()  # no trial can end within the budget
    reported = set(board.loc[board["epochs_run"] >= 1, "trial_id"])  # with a checkpoint to go on from
    assert not (results / "mlflow.db").exists()

    again = _run("--resume", "--results", str(results), "--name", "b", "--time-budget-s", "1", env=drill)
    assert again.returncode == 1 and "--resume --name b" in again.stderr, again.stdout[-3000:] + again.stderr[-3000:]

    uri = f"sqlite:///{results / 'mlflow.db'}"
    last = _run("--resume", "--results", str(results), "--name", "b", "--mlflow-uri", uri)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    board = pd.read_csv(results / "b" / "leaderboard.csv")
    assert len(board) == 3 and (board["status"] == "finished").all() and (board["epochs_run"] == 3).all()
    for row in board[board["trial_id"].isin(reported)].itertuples():  # went on from the first launch's checkpoint
        resumed = " ".join(p.read_text() for p in Path(row.path).glob("trial-resumed-*.log"))
        assert "resumed from" in resumed, row.trial_id

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nucleitune").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and sorted(r.data.tags["nucleitune.trial_id"] for r in children) == sorted(board["trial_id"])
    assert {r.info.status for r in runs} == {"FINISHED"}
    for child in children:  # each epoch once, those reported while MLflow was off too
        assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "val_map50")) == [1, 2, 3]
        assert "val_map50_best" in child.data.metrics and child.data.params["epochs"] == "3"


def test_the_pruner_never_strips_the_checkpoint_ray_would_restore_from(tmp_path):
    """TrainerStatePruner against Ray's bookkeeping (num_to_keep=1: the best by score and the latest): whatever
    checkpoint the experiment state on storage may name when a driver dies keeps trainer.pth; at the end only the
    latest of a finished trial does, and an errored trial (resumable) keeps its own."""
    import shutil
    from types import SimpleNamespace

    import pyarrow.fs

    from search.checkpoints import TrainerStatePruner
    from trainable.checkpoints import TRAINER_STATE

    def ckpt(folder: Path, k: int) -> Path:
        d = folder / f"checkpoint_{k:06d}"
        d.mkdir(parents=True)
        for name in ("model.pth", TRAINER_STATE):
            (d / name).write_bytes(b"x")
        return d

    pruner = TrainerStatePruner()
    folder = tmp_path / "trial"
    local = pyarrow.fs.LocalFileSystem()  # Ray's StorageContext names a trial's folder on its storage filesystem
    trial = SimpleNamespace(
        storage=SimpleNamespace(trial_fs_path=str(folder), storage_filesystem=local), checkpoint=None, status="RUNNING"
    )
    kept: dict[Path, float] = {}  # Ray's checkpoints of the trial and their val_map50
    for k, score in enumerate([0.5, 0.1, 0.7, 0.2, 0.3, 0.1, 0.8, 0.2]):
        new = ckpt(folder, k)
        pruner.on_checkpoint(iteration=k, trials=[trial], trial=trial, checkpoint=SimpleNamespace(path=str(new)))
        # Killed now, the driver resumes from the latest in the experiment state on storage: the snapshot recording
        # this checkpoint is not written yet, the one recording the previous may still be uploading.
        for j in (k, k - 1, k - 2):
            d = folder / f"checkpoint_{j:06d}"
            assert not d.exists() or (d / TRAINER_STATE).is_file(), (k, j)
        older = [d for d in folder.glob("checkpoint_*") if int(d.name.split("_")[1]) < k - 2]
        assert not any((d / TRAINER_STATE).exists() for d in older), k  # the best from before: weights only
        # Ray registers it, keeps the best and the latest, deletes the rest; its snapshot then names it.
        kept[new] = score
        best = max(kept, key=kept.get)
        for d in [d for d in kept if d not in (best, new)]:
            shutil.rmtree(d)
            del kept[d]
        trial.checkpoint = SimpleNamespace(path=str(new))
        assert all((d / "model.pth").is_file() for d in kept)
    assert sorted(kept) == sorted(folder.glob("checkpoint_*")) == [folder / "checkpoint_000006", new]
    assert (folder / "checkpoint_000006" / TRAINER_STATE).is_file()  # the best, one report back: still restorable

    errored_folder = tmp_path / "errored"
    errored_ckpts = [ckpt(errored_folder, 0), ckpt(errored_folder, 1)]
    errored = SimpleNamespace(
        storage=SimpleNamespace(trial_fs_path=str(errored_folder), storage_filesystem=local),
        checkpoint=SimpleNamespace(path=str(errored_ckpts[1])),
        status="ERROR",
    )
    trial.status = "TERMINATED"
    pruner.on_experiment_end(trials=[trial, errored])
    assert [(d / TRAINER_STATE).is_file() for d in sorted(folder.glob("checkpoint_*"))] == [False, True]
    assert all((d / TRAINER_STATE).is_file() for d in errored_ckpts)

    # The rule: the new checkpoint and the two before it in Ray's numbering (gaps: checkpoints Ray deleted).
    from search.checkpoints import restorable_checkpoints

    names = [tmp_path / f"checkpoint_{k:06d}" for k in (0, 3, 4, 5)]
    assert restorable_checkpoints(names, names[3]) == set(names[1:])
    assert restorable_checkpoints(names[:1], names[0]) == {names[0]}
