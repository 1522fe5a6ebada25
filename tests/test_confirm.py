"""From sweep to submission: confirmation on other folds (search.confirm) and the refit (search.export --refit), with
real Ray Tune trials of Detectron2 on CPU."""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from search.confirm import make_folds
from search.sweep import UsageError
from tests.conftest import DUP_TILE, ROOT, SAMPLE_DATA, sweep_space
from trainable.metrics import SCORE


def _cli(module: str, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_folds_keep_the_sweeps_validation_and_deal_the_rest():
    ids = [f"t{i:02d}" for i in range(24)]
    folds = make_folds(ids, ["t03", "t07", "t11", "t19"], 5, seed=0)
    assert folds[0] == ["t03", "t07", "t11", "t19"]
    assert [len(f) for f in folds] == [4, 5, 5, 5, 5]
    assert sorted(sum(folds, [])) == ids  # a partition of the labelled tiles
    assert folds == make_folds(ids, ["t03", "t07", "t11", "t19"], 5, seed=0)  # seeded
    assert folds != make_folds(ids, ["t03", "t07", "t11", "t19"], 5, seed=1)
    with pytest.raises(UsageError, match="--folds 22: needs 2 to 21 folds"):
        make_folds(ids, ["t03", "t07", "t11", "t19"], 22, seed=0)


OTHER_TILES = ["TCGA-18-5592-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1", "TCGA-G9-6356-01Z-00-DX1"]


@pytest.fixture(scope="module")
def four_tiles(tmp_path_factory) -> Path:
    """Four distinct sample tiles (the pretrained model's and three others; the sweep trains on two, validates on one
    and leaves one out), and the sample's test tiles: a fold that leaked into its own training, or a ranking on the
    wrong folds, changes the scores."""
    root = tmp_path_factory.mktemp("four-tiles")
    (root / "train").mkdir()
    for name in [DUP_TILE, *OTHER_TILES]:
        (root / "train" / name).symlink_to(SAMPLE_DATA / "train" / name)
    shutil.copytree(SAMPLE_DATA / "test", root / "test")
    shutil.copy(SAMPLE_DATA / "test_img_ids.json", root / "test_img_ids.json")
    return root


def test_confirm_ranks_by_mean_over_folds_and_refit_trains_on_every_tile(four_tiles, cache_dir, pretrained, tmp_path):
    three_tiles = four_tiles  # the name the refit's checks below use for the data folder
    val_tile, left_out = OTHER_TILES[0], OTHER_TILES[2]
    sweep_tiles = {DUP_TILE, OTHER_TILES[0], OTHER_TILES[1]}  # the sweep's training and validation tiles
    space = sweep_space(
        tmp_path,
        four_tiles,
        cache_dir,
        scheduler="fifo",
        num_samples=2,
        max_concurrent=2,
        resources={"cpu": 1},
        confirm={"top": 2, "folds": 3},
        settings={
            "data": str(four_tiles),
            "split": {"val_ids": [val_tile], "train_ids": [DUP_TILE, OTHER_TILES[1]]},
            "eval_every": 1,
            "val_crop": 256,  # validation on a 256 px centre crop: seconds, not tens of seconds, per trial
            "cache_dir": str(cache_dir),
        },
        fixed={"weights": str(pretrained), "lr": 1e-4, "epochs": 2},
    )
    results = tmp_path / "results"
    p = _cli("search.run", "--space", str(space), "--results", str(results), "--name", "s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    folder = results / "s"
    before = _listing(folder)

    # Bad input: one line, exit 2, nothing written.
    for args, expected in (
        (["--top", "3"], "--top 3: the sweep has 2 scored trial(s)"),
        (["--folds", "4"], "--folds 4: needs 2 to 3 folds"),
    ):
        bad = _cli("search.confirm", "--results", str(results), "--name", "s", *args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and expected in bad.stderr, bad.stderr
    unfinished = results / "u"
    unfinished.mkdir()
    for name in ("space.yaml", "sweep.json"):
        shutil.copy(folder / name, unfinished / name)
    board = pd.read_csv(folder / "leaderboard.csv")
    board.loc[1, "status"] = "unfinished"
    board.to_csv(unfinished / "leaderboard.csv", index=False)
    bad = _cli("search.confirm", "--results", str(results), "--name", "u")
    assert bad.returncode == 2 and "the sweep is unfinished" in bad.stderr and bad.stderr.count("\n") == 1
    assert _listing(folder) == before and not (unfinished / "confirm").exists()

    # Confirmation with the space's defaults: 2 trials x the 2 folds other than the sweep's = 4 real trials. Ctrl-C
    # once the first has a checkpoint: exit 1 with what to do; the same command again continues it.
    cmd = [sys.executable, "-m", "search.confirm", "--results", str(results), "--name", "s"]
    log = open(tmp_path / "confirm.log", "w")
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and not list((folder / "confirm").glob("trial_*/checkpoint_*")):
        assert driver.poll() is None, (tmp_path / "confirm.log").read_text()[-3000:]
        time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=300) == 1, (tmp_path / "confirm.log").read_text()[-3000:]
    assert "confirmation interrupted" in (tmp_path / "confirm.log").read_text()
    assert not (folder / "confirm.csv").exists()
    p = _cli("search.confirm", "--results", str(results), "--name", "s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    reruns = sorted((folder / "confirm").glob("trial_*"))
    assert len(reruns) == 4
    fold_scores: dict[str, dict[int, float]] = {}
    for trial_dir in reruns:
        job = json.loads((trial_dir / "params.json").read_text())["job"]
        reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        fold_scores.setdefault(job["trial_id"], {})[job["fold"]] = reports[-1][SCORE]
        state = json.loads((sorted(trial_dir.glob("checkpoint_*"))[-1] / "state.json").read_text())
        assert state["images"]["val"] == job["split"]["val_ids"] and state["images"]["val"] != [val_tile]
        # The fold's complement among the sweep's tiles: never its own validation tile, never the left-out one.
        assert set(state["images"]["train"]) == sweep_tiles - set(job["split"]["val_ids"])
    assert sum(len(f) for f in fold_scores.values()) == 4  # each (trial, fold) once, across the two launches
    confirm = pd.read_csv(folder / "confirm" / "confirm.csv", dtype={"trial_id": str})
    from search.sweep import Sweep

    board = Sweep(folder).board()
    assert set(confirm["trial_id"]) == set(board["trial_id"]) == set(fold_scores)
    for row in confirm.itertuples():
        sweep_score = board.loc[board["trial_id"] == row.trial_id, "val_map50_best"].item()
        unseen = [fold_scores[row.trial_id][1], fold_scores[row.trial_id][2]]  # the folds that did not choose it
        assert [row.fold_0, row.fold_1, row.fold_2] == pytest.approx([sweep_score, *unseen])
        assert row.confirm_mean == pytest.approx(statistics.mean(unseen))
        assert row.confirm_std == pytest.approx(statistics.stdev(unseen))
        assert board.loc[board["trial_id"] == row.trial_id, "confirm_mean"].item() == pytest.approx(row.confirm_mean)
    assert confirm["confirm_mean"].is_monotonic_decreasing
    assert "confirm_mean" not in pd.read_csv(folder / "leaderboard.csv").columns  # read from confirm/, never copied

    # A trial that ASHA had stopped early is re-trained on fold 0 on the sweep's own training tiles.
    from search.confirm import plan
    from trainable.data import Split

    stopped = results / "stopped"
    shutil.copytree(folder, stopped, ignore=shutil.ignore_patterns("confirm", "refit", "checkpoint_*"))
    board_csv = pd.read_csv(stopped / "leaderboard.csv", dtype={"trial_id": str})
    board_csv.loc[0, "status"] = "stopped_early"
    board_csv.to_csv(stopped / "leaderboard.csv", index=False)
    jobs = plan(Sweep(stopped), 1, 3).rerun.jobs
    ids = [DUP_TILE, *OTHER_TILES]
    assert [j["fold"] for j in jobs] == [0, 1, 2]
    for j in jobs:
        train, val = Split.from_dict(j["split"]).apply(ids)
        assert not set(train) & set(val) and left_out not in train
        if j["fold"] == 0:
            assert (train, val) == ([DUP_TILE, OTHER_TILES[1]], [val_tile])  # the sweep's split, exactly
    shutil.rmtree(stopped)
    winner = confirm.iloc[0]
    assert f"({winner.trial_id})" in p.stdout.splitlines()[-1]
    assert p.stdout.splitlines()[-1].startswith(("winner confirmed: ", "winner changed: "))

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("nucleitune").experiment_id], max_results=100)
    parent = json.loads((folder / "sweep.json").read_text())["mlflow_parent_run_id"]
    confirm_runs = [r for r in runs if r.data.tags.get("nucleitune.role") == "confirm"]
    assert len(confirm_runs) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent and r.info.status == "FINISHED" for r in confirm_runs)
    assert {r.data.tags["nucleitune.of_trial"] for r in confirm_runs} == set(fold_scores)
    # The sweep's view in the MLflow UI (search.ui opens it) now shows the confirmed mean and spread as columns.
    import base64
    import zlib

    from search.sweep import VIEW_TAG_PREFIX, view_key

    experiment = client.get_experiment_by_name("nucleitune")
    view = json.loads(experiment.tags[f"{VIEW_TAG_PREFIX}{view_key(parent)}"])
    columns = json.loads(zlib.decompress(base64.b64decode(view["state"].removeprefix("deflate;"))))["selectedColumns"]
    assert {"metrics.`confirm_mean`", "metrics.`confirm_std`"} <= set(columns)
    trial_runs = [r for r in runs if r.data.tags.get("nucleitune.role") == "trial"]
    for r in trial_runs:
        mean = confirm.loc[confirm["trial_id"] == r.data.tags["nucleitune.trial_id"], "confirm_mean"].item()
        assert r.data.metrics["confirm_mean"] == pytest.approx(mean)

    # Refit: the confirmed winner on every labelled tile (the left-out one too), no validation, then a submission.
    all_tiles = {DUP_TILE, *OTHER_TILES}
    p = _cli("search.export", "--best", "--refit", "--results", str(results), "--name", "s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert f"({winner.trial_id}), confirmed winner" in p.stdout and "no validation data is left" in p.stdout
    (refit_dir,) = (folder / "refit").glob("trial_*")
    job = json.loads((refit_dir / "params.json").read_text())["job"]
    assert job["trial_id"] == winner.trial_id and job["role"] == "refit"
    state = json.loads((sorted(refit_dir.glob("checkpoint_*"))[-1] / "state.json").read_text())
    assert set(state["images"]["train"]) == all_tiles and state["images"]["val"] == []
    assert state["hparams"]["seed"] == board.loc[board["trial_id"] == winner.trial_id, "hp.seed"].item()
    submission = json.loads((folder / "refit" / "submission" / "answer.json").read_text())
    assert 0 < len(submission) <= 200 and {d["image_id"] for d in submission} == {
        e["id"] for e in json.loads((three_tiles / "test_img_ids.json").read_text())
    }
    refit_runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("nucleitune").experiment_id], max_results=100)
        if r.data.tags.get("nucleitune.role") == "refit"
    ]
    assert len(refit_runs) == 1 and "total_loss" in refit_runs[0].data.metrics
    assert refit_runs[0].data.params["train_tiles"] == "4"

    # A second refit reuses the model; a moved data folder is refused before anything is written.
    refit_listing = _listing(folder / "refit" / refit_dir.name)
    p = _cli("search.export", "--best", "--refit", "--results", str(results), "--name", "s")
    assert p.returncode == 0 and "refit: reusing" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert len(list((folder / "refit").glob("trial_*"))) == 1
    assert _listing(folder / "refit" / refit_dir.name) == refit_listing
    moved = three_tiles.with_name(three_tiles.name + "-moved")
    three_tiles.rename(moved)
    try:
        bad = _cli("search.export", "--best", "--refit", "--results", str(results), "--name", "s")
    finally:
        moved.rename(three_tiles)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert f"{three_tiles}: the sweep's data folder" in bad.stderr and "moved?" in bad.stderr
    assert _listing(folder / "refit" / refit_dir.name) == refit_listing


def test_a_confirmed_winner_ships_its_fold_0_checkpoint_and_a_stale_ranking_ships_nothing(tmp_path):
    """Sweep.winner: the confirmed winner's checkpoint must come from its whole schedule on the sweep's split;
    a ranking lives with the jobs it came from (deleting confirm/ deletes it); a winner whose checkpoint to ship is
    missing, or a ranking of other jobs, is one error, never a silent fallback to a checkpoint ASHA cut short."""
    from search.sweep import Sweep

    winner = Sweep(tmp_path).winner
    board = pd.DataFrame(
        [
            {"trial_id": "aaa", "trial": 1, "status": "finished", "val_map50_best": 0.30},
            {"trial_id": "bbb", "trial": 2, "status": "stopped_early", "val_map50_best": 0.20},
        ]
    )
    assert winner(board)[0]["trial_id"] == "aaa"  # no confirmation: the highest score
    confirm = tmp_path / "confirm"
    jobs = []
    for name, trial_id, fold in (("trial_x1", "bbb", 1), ("trial_x0", "bbb", 0), ("trial_y0", "aaa", 1)):
        (confirm / name).mkdir(parents=True)
        jobs.append({"trial_id": trial_id, "fold": fold})
        (confirm / name / "params.json").write_text(json.dumps({"job": jobs[-1]}))
    (confirm / "jobs.json").write_text(json.dumps(jobs))
    means = (("bbb", 0.25), ("aaa", 0.2))
    ranking = pd.DataFrame([{"trial_id": t, "confirm_mean": m, "confirm_folds": 2} for t, m in means])
    ranking.to_csv(confirm / "confirm.csv", index=False)
    row, why, trial_dir = winner(board)
    assert row["trial_id"] == "bbb" and "confirmed winner" in why
    assert Path(trial_dir) == confirm / "trial_x0"  # not the sweep's trial_bbb, cut short by ASHA
    board.loc[1, "status"] = "finished"
    assert Path(winner(board)[2]) == tmp_path / "trial_bbb"
    board.loc[1, "status"] = "stopped_early"

    shutil.rmtree(confirm / "trial_x0")  # the fold-0 retrain to ship is gone
    missing = r"trial 02 \(bbb\), was stopped early in the sweep and its fold-0 retrain.*missing"
    with pytest.raises(UsageError, match=missing):
        winner(board)
    (confirm / "jobs.json").write_text(json.dumps(jobs[:1]))  # the ranking is not of the jobs beside it
    with pytest.raises(UsageError, match="does not match the confirmation jobs beside it"):
        winner(board)
    shutil.rmtree(confirm)  # what `search.confirm` says to do to confirm anew: the ranking goes with it
    ranking.to_csv(tmp_path / "confirm.csv", index=False)  # where an older version left it: not a ranking to trust
    assert Path(winner(board)[2]) == tmp_path / "trial_aaa"
