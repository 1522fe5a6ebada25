"""A corpus of malformed inputs to the project's commands, each run as a real process: one line on stderr that names
the problem and the file (or flag), exit code 2, no traceback, no Ray started, nothing written to the results folder."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import ROOT

SPACE = {
    "name": "t",
    "settings": {"split": {"val": 1}},
    "fixed": {"backbone": "R18-FPN", "weights": "scratch", "warmup_epochs": 0.5},
    "params": {"lr": {"loguniform": [0.001, 0.1]}, "epochs": {"int": [2, 4]}},
}


def _dataset(root: Path, n_images: int = 2) -> Path:
    """A tiny dataset in the course layout: train/<id>/{images,masks}, test/, test_img_ids.json."""
    for k in range(n_images):
        d = root / "train" / f"img{k}"
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
        Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(d / "images" / f"img{k}.png")
        for i in range(2):
            m = np.zeros((48, 48), np.uint8)
            m[5 * i : 5 * i + 4, 5:9] = 255
            Image.fromarray(m).save(d / "masks" / f"m{i}.png")
    (root / "test").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "test" / "t.png")
    (root / "test_img_ids.json").write_text(json.dumps([{"file_name": "t.png", "id": 3, "height": 40, "width": 50}]))
    return root


def _space(path: Path, data: Path, **top) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(SPACE))
    doc["settings"]["data"] = str(data)
    for k, v in top.items():
        if k == "params":
            doc["params"].update(v)
        else:
            doc[k] = v
    path.write_text(yaml.safe_dump(doc))
    return path


def _sweep(results: Path, name: str, board: bool = True) -> Path:
    """A finished-looking sweep folder: sweep.json, space.yaml and (optionally) a one-row leaderboard."""
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"settings": {"data": "/nowhere"}, "overrides": {}}))
    if board:
        (folder / "leaderboard.csv").write_text("trial_id,status,val_map50_best\nabc123,finished,0.1\n")
    return folder


def _ended_sweep(results: Path, name: str, space: Path, data: Path, **damage: str | bytes) -> Path:
    """A sweep that ran to its end as search.run leaves it (one finished trial with its params.json and a
    checkpoint's state.json: confirm and export read it back), then `damage`: {path in the folder: its new content}."""
    folder = results / name
    doc = {**yaml.safe_load(space.read_text()), "num_samples": 1, "confirm": {"top": 1, "folds": 2}}
    settings = {"data": str(data), "split": {"val": 1}}
    files = {
        "space.yaml": yaml.safe_dump(doc),
        "sweep.json": json.dumps({"settings": settings, "overrides": {}, "mlflow_uri": "off"}),
        "leaderboard.csv": "trial_id,trial,status,val_map50_best\nabc123,1,finished,0.1\n",
        "trial_abc123/params.json": json.dumps({"lr": 0.01, "epochs": 2}),
        "trial_abc123/checkpoint_000000/state.json": json.dumps({"metrics": {"val_map50": 0.1}}),
        **damage,
    }
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        write = (folder / path).write_bytes if isinstance(content, bytes) else (folder / path).write_text
        write(content)
    return folder


def _corpus(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    """(id, argv after `python -m`, substrings the stderr line must hold). Files are created here."""
    good = _dataset(tmp / "good")
    space = _space(tmp / "space.yaml", good)
    cases = []

    def add(case_id, argv, *expect):
        cases.append((case_id, argv, list(expect)))

    def results(case_id):
        return ["--results", str(tmp / f"results-{case_id}")]

    def bad_data(case_id, damage) -> Path:
        root = _dataset(tmp / f"data-{case_id}")
        damage(root)
        return root

    def run(case_id, *args, expect):
        add(case_id, ["search.run", *args, *results(case_id)], *expect)

    # --- space files
    run("space-missing", "--space", str(tmp / "nope.yaml"), expect=[str(tmp / "nope.yaml"), "file not found"])
    (tmp / "broken.yaml").write_text("params: {lr: [\n")
    run("space-yaml", "--space", str(tmp / "broken.yaml"), expect=["broken.yaml", "not valid YAML"])
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    run("space-list", "--space", str(tmp / "list.yaml"), expect=["list.yaml", "expected a mapping"])
    p = _space(tmp / "s-backbone.yaml", good, params={"backbone": {"choice": ["R34-C4"]}})
    run("space-backbone", "--space", str(p), expect=["s-backbone.yaml", "params.backbone", "R34-C4"])
    p = _space(tmp / "s-range.yaml", good, params={"lr": {"uniform": [0.1, 0.01]}})
    run("space-range", "--space", str(p), expect=["s-range.yaml", "params.lr", "inverted range"])
    p = _space(tmp / "s-unsafe.yaml", good)
    p.write_text(p.read_text() + "extra: !!python/object/apply:os.system ['touch /tmp/nucleitune-pwned']\n")
    run("space-unsafe-tag", "--space", str(p), expect=["s-unsafe.yaml", "not valid YAML"])
    p = _space(tmp / "s-setting.yaml", good, settings={"data": str(good), "eval_every": 0})
    run("space-setting", "--space", str(p), expect=["s-setting.yaml", "eval_every"])

    # --- whole-space checks: what could only fail in a trial
    scratch = {"backbone": "R18-FPN", "weights": "scratch"}
    p = _space(tmp / "s-warmup.yaml", good, fixed=scratch, params={"warmup_epochs": {"uniform": [1.0, 6.0]}})
    run("space-warmup", "--space", str(p), expect=["s-warmup.yaml", "params.warmup_epochs", "as few as 2 epochs"])
    gn = {"backbone": "R50-FPN", "weights": "imagenet", "norm": "GN", "warmup_epochs": 0.5}
    p = _space(tmp / "s-gn.yaml", good, fixed=gn)
    run("space-gn-imagenet", "--space", str(p), expect=["s-gn.yaml", "norm GN does not fit weights imagenet"])
    p = _space(tmp / "s-frozen.yaml", good, fixed={**SPACE["fixed"], "norm": "FrozenBN"})
    run("space-frozenbn-scratch", "--space", str(p), expect=["s-frozen.yaml", "FrozenBN cannot train from scratch"])
    p = _space(tmp / "s-decay.yaml", good, params={"decay": {"milestones": [0.85, 0.95]}, "epochs": {"int": [2, 3]}})
    run("space-dropped-decays", "--space", str(p), expect=["s-decay.yaml", "params.decay", "no trial would decay"])

    # --- the machine, the weights, the cluster: refused before Ray starts
    run("machine-cpus", "--space", str(space), "--cpus-per-trial", "4096", expect=["asks 4096 CPU(s)", "machine has"])
    zoo = {"backbone": "R50-FPN", "weights": "imagenet", "warmup_epochs": 0.5}
    p = _space(tmp / "s-imagenet.yaml", good, fixed=zoo)
    run("weights-offline", "--space", str(p), expect=["s-imagenet.yaml", "weights imagenet", "cannot fetch"])
    run("address-dead", "--space", str(space), "--address", "127.0.0.1:9", expect=["--address 127.0.0.1:9"])
    run("address-format", "--space", str(space), "--address", "nowhere", expect=["--address nowhere", "HOST:PORT"])
    run("data-default", "--space", str(ROOT / "spaces" / "maskrcnn.yaml"), expect=["data/nuclei", "--data"])

    # --- CLI flags of search.run
    run("flag-type", "--space", str(space), "--num-samples", "abc", expect=["--num-samples", "invalid int value"])
    run("flag-unknown", "--space", str(space), "--num-trials", "3", expect=["unrecognized arguments: --num-trials"])
    run("flag-zero", "--space", str(space), "--num-samples", "0", expect=["--num-samples must be > 0"])
    run("flag-gpus", "--space", str(space), "--gpus-per-trial", "-1", expect=["--gpus-per-trial must be >= 0"])
    run("flag-budget", "--space", str(space), "--time-budget-s", "0", expect=["--time-budget-s must be > 0"])
    run("flag-searcher", "--space", str(space), "--searcher", "bayes", expect=["searcher: 'bayes' is not one of"])
    run("flag-name", "--space", str(space), "--name", "../outside", expect=["--name must be a plain folder name"])
    run("flag-no-space", expect=["--space is required"])
    run("resume-nothing", "--resume", expect=["no sweep found"])

    # --- dataset folders
    run("data-missing", "--space", str(space), "--data", str(tmp / "none"), expect=["none", "dataset folder not found"])
    (tmp / "empty").mkdir()
    run("data-no-train", "--space", str(space), "--data", str(tmp / "empty"), expect=["empty", "missing train folder"])

    def _non_binary(root):
        m = np.zeros((48, 48), np.uint8)
        m[0, :3] = [0, 100, 255]
        Image.fromarray(m).save(root / "train" / "img1" / "masks" / "m0.png")

    d = bad_data("nonbinary", _non_binary)
    run("data-non-binary", "--space", str(space), "--data", str(d), expect=["img1/masks/m0.png", "not binary"])
    d = bad_data("size", lambda r: Image.fromarray(np.full((8, 8), 255, np.uint8)).save(r / "train/img0/masks/m1.png"))
    run("data-mask-size", "--space", str(space), "--data", str(d), expect=["img0/masks/m1.png", "differs from image"])
    d = bad_data("trunc", lambda r: (r / "train/img0/masks/m0.png").write_bytes(b"\x89PNG\r\n\x1a\n cut"))
    run("data-truncated-png", "--space", str(space), "--data", str(d), expect=["m0.png", "unreadable PNG"])
    d = bad_data("noimage", lambda r: (r / "train/img1/images/img1.png").unlink())
    run("data-no-image", "--space", str(space), "--data", str(d), expect=["img1"])
    p = _space(tmp / "s-split.yaml", good, settings={"data": str(good), "split": {"val_ids": ["img7"]}})
    run("data-split-id", "--space", str(p), expect=["img7"])

    # --- search.export: arguments, test_img_ids.json, checkpoints
    ckpt_dir = tmp / "ckpt-empty"
    ckpt_dir.mkdir()

    def export(case_id, *args, expect):
        add(case_id, ["search.export", *args, *results(case_id)], *expect)

    export("export-no-mode", expect=["one of the arguments --best --trial --checkpoint --score is required"])
    export("export-two-modes", "--best", "--trial", "x", expect=["not allowed with argument"])
    export("export-threshold", "--best", "--score-threshold", "1.5", expect=["--score-threshold must be in [0, 1)"])
    export("export-score-no-gt", "--score", str(tmp / "a.json"), expect=["--score needs --gt"])
    export("export-no-sweep", "--best", expect=["no sweep found"])
    export("export-name", "--best", "--name", "../../etc", expect=["--name must be a plain folder name"])
    export("export-ckpt-missing", "--checkpoint", str(tmp / "gone"), "--data", str(good), expect=["gone", "not found"])
    export(
        "export-ckpt-no-model", "--checkpoint", str(ckpt_dir), "--data", str(good), expect=["ckpt-empty", "model.pth"]
    )
    bad_ckpt = tmp / "ckpt-corrupt"
    bad_ckpt.mkdir()
    from trainable.config import build_cfg

    cfg = build_cfg({"backbone": "R18-FPN", "weights": "scratch", "box_head_fc_dim": 64}, num_train_images=1)
    (bad_ckpt / "config.yaml").write_text(cfg.dump())
    (bad_ckpt / "model.pth").write_bytes(b"not a checkpoint")
    export(
        "export-ckpt-corrupt", "--checkpoint", str(bad_ckpt), "--data", str(good), expect=["model.pth", "unreadable"]
    )
    tagged = tmp / "ckpt-tag"
    tagged.mkdir()
    (tagged / "model.pth").write_bytes(b"never read")
    tag = "OUTPUT_DIR: !!python/object/apply:os.system ['touch /tmp/nucleitune-pwned']\n"
    (tagged / "config.yaml").write_text(cfg.dump() + tag)
    export("export-ckpt-yaml-tag", "--checkpoint", str(tagged), "--data", str(good), expect=["config.yaml", "refused"])

    def index_case(case_id, content, *expect):
        root = _dataset(tmp / f"data-{case_id}", n_images=1)
        (root / "test_img_ids.json").write_text(content)
        export(case_id, "--checkpoint", str(ckpt_dir), "--data", str(root), expect=["test_img_ids.json", *expect])

    index_case("index-json", "{not json", "not valid JSON")
    index_case("index-empty", "[]", "non-empty list")
    index_case("index-keys", json.dumps([{"file_name": "t.png", "height": 40, "width": 50}]), "entry 0 needs")
    index_case("index-file", json.dumps([{"file_name": "u.png", "id": 1, "height": 40, "width": 50}]), "no file")
    index_case("index-size", json.dumps([{"file_name": "t.png", "id": 1, "height": 50, "width": 50}]), "the file is")
    dup = [{"file_name": "t.png", "id": 1, "height": 40, "width": 50}] * 2
    index_case("index-dup", json.dumps(dup), "duplicate id 1")

    sweeps = tmp / "results-sweeps"
    _sweep(sweeps, "unfinished", board=False)
    _sweep(sweeps, "done")
    add(
        "export-unfinished",
        ["search.export", "--best", "--results", str(sweeps), "--name", "unfinished"],
        "unfinished",
        "no leaderboard.csv",
    )
    add(
        "export-trial",
        ["search.export", "--trial", "zzz", "--results", str(sweeps), "--name", "done"],
        "leaderboard.csv",
        "no trial 'zzz'",
    )
    add(
        "export-no-checkpoint",
        ["search.export", "--best", "--results", str(sweeps), "--name", "done"],
        "trial_abc123",
        "has no checkpoint",
    )
    add(
        "run-exists",
        ["search.run", "--space", str(space), "--results", str(sweeps), "--name", "done"],
        "already exists",
    )

    # --- one trial outside Ray
    add(
        "trial-config",
        ["trainable.train", "--config", str(tmp / "no.yaml"), "--out", str(tmp / "results-trial")],
        "no.yaml",
        "file not found",
    )

    # --- a file where a command expects a folder: --results, --name, --data, --gt, --out, settings.cache_dir
    a_file = tmp / "a-file"
    a_file.write_text("not a folder\n")
    (sweeps / "name-file").write_text("not a sweep\n")
    (tmp / "a.json").write_text("[]")
    trial = tmp / "trial.yaml"
    trial_hp = {"backbone": "R18-FPN", "weights": "scratch", "epochs": 1, "warmup_epochs": 0.5}
    trial.write_text(yaml.safe_dump({"hparams": trial_hp, "settings": {"data": str(good), "split": {"val": 1}}}))
    is_file = "is a file, not a folder"

    def train(case_id, *args, expect):
        add(case_id, ["trainable.train", *args, "--out", str(tmp / f"results-{case_id}")], *expect)

    in_file = str(a_file / "sub")
    add("run-results-file", ["search.run", "--space", str(space), "--results", str(a_file)], "a-file", is_file)
    add("run-results-in-file", ["search.run", "--space", str(space), "--results", in_file], "a-file", is_file)
    add("resume-results-file", ["search.run", "--resume", "--results", str(a_file)], "a-file", is_file, "--results")
    add("confirm-results-file", ["search.confirm", "--results", str(a_file)], "a-file", is_file, "--results")
    add("export-results-file", ["search.export", "--best", "--results", str(a_file)], "a-file", is_file, "--results")
    add("ui-results-file", ["search.ui", "--results", str(a_file)], "a-file", is_file, "--results")
    in_sweeps = ["--results", str(sweeps), "--name", "name-file"]
    add("run-name-file", ["search.run", "--space", str(space), *in_sweeps], "name-file", is_file, "--name")
    add("resume-name-file", ["search.run", "--resume", *in_sweeps], "name-file", is_file, "--name")
    add("confirm-name-file", ["search.confirm", *in_sweeps], "name-file", is_file, "--name")
    add("export-name-file", ["search.export", "--best", *in_sweeps], "name-file", is_file, "--name")
    add("ui-name-file", ["search.ui", *in_sweeps], "name-file", is_file, "--name")
    run("run-data-file", "--space", str(space), "--data", str(a_file), expect=["a-file", is_file, "--data"])
    _ended_sweep(sweeps, "ended", space, good)
    add(
        "confirm-data-file",
        ["search.confirm", "--results", str(sweeps), "--name", "ended", "--data", str(a_file)],
        "a-file",
        is_file,
        "--data",
    )
    export("export-data-file", "--checkpoint", str(ckpt_dir), "--data", str(a_file), expect=["a-file", is_file])
    export("score-gt-file", "--score", str(tmp / "a.json"), "--gt", str(a_file), expect=["a-file", is_file, "--gt"])
    out_in_file = str(a_file / "answer.json")
    ckpt_args = ["--checkpoint", str(ckpt_dir), "--data", str(good)]
    export("export-out-in-file", *ckpt_args, "--out", out_in_file, expect=["a-file", is_file, "--out"])
    export("export-out-folder", *ckpt_args, "--out", str(tmp / "empty"), expect=["empty", "is a folder, not a file"])
    p = _space(tmp / "s-cache.yaml", good, settings={"data": str(good), "split": {"val": 1}, "cache_dir": str(a_file)})
    run("run-cache-file", "--space", str(p), expect=["a-file", is_file, "settings.cache_dir"])
    train("train-data-file", "--config", str(trial), "--data", str(a_file), expect=["a-file", is_file])
    cache_trial = tmp / "trial-cache.yaml"
    cache_settings = {"data": str(good), "split": {"val": 1}, "cache_dir": str(a_file)}
    cache_trial.write_text(yaml.safe_dump({"hparams": trial_hp, "settings": cache_settings}))
    train("train-cache-file", "--config", str(cache_trial), expect=["a-file", is_file, "settings.cache_dir"])
    for case_id, out in (("train-out-file", a_file), ("train-out-in-file", a_file / "sub")):
        add(case_id, ["trainable.train", "--config", str(trial), "--out", str(out)], "a-file", is_file, "--out")

    # --- a sweep's saved files, damaged: every command that reads them back
    def damaged(case_id, command, name, *expect, flags=(), **damage):
        """A case on sweep `name` in `sweeps`: an ended sweep with `damage`, made by its first case."""
        if not (sweeps / name).exists():
            _ended_sweep(sweeps, name, space, good, **damage)
        add(case_id, [command, *flags, "--results", str(sweeps), "--name", name], *expect)

    unreadable = ["unreadable"]
    resume, best, refit = ("--resume",), ("--best",), ("--best", "--refit")
    confirm_flags = ("--top", "1", "--folds", "2")
    bad_json = {"sweep.json": "{not json"}
    for command, flags in (("search.run", resume), ("search.confirm", ()), ("search.export", best), ("search.ui", ())):
        case_id = f"{command.split('.')[1]}-sweep-json"
        damaged(case_id, command, "sj-json", "sweep.json", *unreadable, "not JSON", flags=flags, **bad_json)
    for command, flags in (("search.run", resume), ("search.ui", ())):
        case_id = f"{command.split('.')[1]}-sweep-json-list"
        damaged(case_id, command, "sj-list", "sweep.json", *unreadable, flags=flags, **{"sweep.json": "[1, 2]"})
    no_overrides = {"sweep.json": json.dumps({"settings": {"data": str(good)}})}
    for command, flags in (("search.run", resume), ("search.confirm", ())):
        case_id = f"{command.split('.')[1]}-sweep-json-keys"
        damaged(case_id, command, "sj-keys", "sweep.json", *unreadable, "overrides", flags=flags, **no_overrides)
    no_data = {"sweep.json": json.dumps({"settings": {}, "overrides": {}})}
    damaged("export-sweep-json-data", "search.export", "sj-data", "sweep.json", *unreadable, flags=best, **no_data)
    typo = {"sweep.json": json.dumps({"settings": {"data": str(good), "eval_evry": 1}, "overrides": {}})}
    eval_every = "did you mean 'eval_every'"
    damaged("resume-sweep-json-setting", "search.run", "sj-set", "sweep.json", eval_every, flags=resume, **typo)

    empty_board = {"leaderboard.csv": ""}
    damaged("confirm-board-empty", "search.confirm", "lb-empty", "leaderboard.csv", *unreadable, **empty_board)
    damaged("export-board-empty", "search.export", "lb-empty", "leaderboard.csv", *unreadable, flags=best)
    columns = {"leaderboard.csv": "a,b\n1,2\n"}
    damaged("confirm-board-columns", "search.confirm", "lb-cols", "leaderboard.csv", "status", **columns)
    damaged("export-board-columns", "search.export", "lb-cols", "leaderboard.csv", "trial_id", flags=("--trial", "x"))
    binary = {"leaderboard.csv": b"\xff\xfe\x00\x81 not text"}
    damaged("export-board-binary", "search.export", "lb-bin", "leaderboard.csv", *unreadable, flags=best, **binary)
    score = {"leaderboard.csv": "trial_id,trial,status,val_map50_best\nabc123,1,finished,high\n"}
    damaged("export-board-score", "search.export", "lb-score", "leaderboard.csv", "val_map50_best", flags=best, **score)

    confirmed = "trial,trial_id,confirm_mean,confirm_std,confirm_folds\n1,abc123,0.1,,1\n"
    bad_jobs = {"confirm/jobs.json": "{oops", "confirm/confirm.csv": confirmed}
    damaged("confirm-jobs-json", "search.confirm", "cj", "jobs.json", *unreadable, flags=confirm_flags, **bad_jobs)
    damaged("export-confirm-jobs-json", "search.export", "cj", "jobs.json", *unreadable, flags=best)
    shape = {"confirm/jobs.json": json.dumps({"trial_id": "abc123"})}
    damaged("confirm-jobs-shape", "search.confirm", "cj-shape", "jobs.json", *unreadable, flags=confirm_flags, **shape)
    job = {"role": "confirm", "trial": 1, "trial_id": "abc123", "config": {}, "split": {}, "fold": 1, "folds": 2}
    ranking = {"confirm/jobs.json": json.dumps([job]), "confirm/confirm.csv": b"\x00\xff\xfe"}
    damaged("confirm-ranking-binary", "search.confirm", "cc-bin", "confirm.csv", *unreadable, **ranking)
    damaged("export-ranking-binary", "search.export", "cc-bin", "confirm.csv", *unreadable, flags=best)
    ranking = {"confirm/jobs.json": json.dumps([job]), "confirm/confirm.csv": "trial_id\nabc123\n"}
    damaged("export-ranking-columns", "search.export", "cc-cols", "confirm.csv", "confirm_mean", flags=best, **ranking)
    stopped = {
        "leaderboard.csv": "trial_id,trial,status,val_map50_best\nabc123,1,stopped_early,0.1\n",
        "confirm/jobs.json": json.dumps([{**job, "fold": 0}]),
        "confirm/confirm.csv": confirmed,
        "confirm/trial_x0/params.json": "{",
    }
    damaged("export-confirm-params", "search.export", "cp", "trial_x0/params.json", *unreadable, flags=best, **stopped)

    params = {"trial_abc123/params.json": "{"}
    damaged("confirm-params", "search.confirm", "pj", "params.json", *unreadable, flags=confirm_flags, **params)
    damaged("refit-params", "search.export", "pj", "params.json", *unreadable, flags=refit)
    partial = {"trial_abc123/params.json": json.dumps({"lr": 0.01})}  # no epochs: not a trial of this space
    damaged("refit-params-config", "search.export", "pj-cfg", "params.json", *unreadable, flags=refit, **partial)
    refit_jobs = {"refit/jobs.json": "nope"}
    damaged("refit-jobs-json", "search.export", "rj", "refit/jobs.json", *unreadable, flags=refit, **refit_jobs)
    state = {"trial_abc123/checkpoint_000000/state.json": "{"}
    damaged("export-state-json", "search.export", "st", "state.json", *unreadable, flags=best, **state)
    damaged("export-trial-state-json", "search.export", "st", "state.json", *unreadable, flags=("--trial", "abc123"))

    epoch = sweeps / "trial-out" / "checkpoints" / "epoch_0001"
    epoch.mkdir(parents=True)
    (epoch / "state.json").write_text("{")
    add(
        "train-resume-state-json",
        ["trainable.train", "--config", str(trial), "--out", str(sweeps / "trial-out"), "--resume"],
        "epoch_0001/state.json",
        *unreadable,
    )
    gt = _dataset(tmp / "data-gt-index", n_images=1)
    (gt / "test_img_ids.json").write_text("{")
    export("score-gt-index", "--score", str(tmp / "a.json"), "--gt", str(gt), expect=["test_img_ids.json", "not valid"])
    (tmp / "b.json").write_text("[1, 2]")
    export("score-not-detections", "--score", str(tmp / "b.json"), "--gt", str(good), expect=["b.json", "detections"])

    # --- an unknown name: its closest match, never every known name (cases named unknown-*: under 200 characters)
    p = _space(tmp / "s-lr.yaml", good, params={"lerning_rate": {"uniform": [0.1, 0.2]}})
    run("unknown-param", "--space", str(p), expect=["s-lr.yaml", "params.lerning_rate", "did you mean 'lr'?"])
    p = _space(tmp / "s-far.yaml", good, params={"zzzz": {"uniform": [0.1, 0.2]}})
    run("unknown-param-far", "--space", str(p), expect=["s-far.yaml", "params.zzzz", "see spaces/README.md"])
    p = _space(tmp / "s-top.yaml", good, num_sample=2)
    run("unknown-top-key", "--space", str(p), expect=["s-top.yaml", "did you mean 'num_samples'?"])
    p = _space(tmp / "s-fixed.yaml", good, fixed={**SPACE["fixed"], "bakbone": "R18-FPN"})
    run("unknown-fixed", "--space", str(p), expect=["s-fixed.yaml", "fixed.bakbone", "did you mean 'backbone'?"])
    p = _space(tmp / "s-set.yaml", good, settings={"data": str(good), "split": {"val": 1}, "eval_evry": 2})
    run("unknown-setting", "--space", str(p), expect=["s-set.yaml", "'eval_evry'", "did you mean 'eval_every'?"])
    p = _space(tmp / "s-split-key.yaml", good, settings={"data": str(good), "split": {"vals": 1}})
    run("unknown-split-key", "--space", str(p), expect=["s-split-key.yaml", "'vals'", "did you mean 'val'?"])
    for case_id, section, typo in (
        ("unknown-trial-hparam", "hparams", {"lerning_rate": 0.1}),
        ("unknown-trial-setting", "settings", {"eval_evry": 2}),
    ):
        f = tmp / f"{case_id}.yaml"
        doc = {"hparams": trial_hp, "settings": {"data": str(good), "split": {"val": 1}}}
        doc[section] = {**doc[section], **typo}
        f.write_text(yaml.safe_dump(doc))
        hint = "did you mean 'lr'?" if section == "hparams" else "did you mean 'eval_every'?"
        train(case_id, "--config", str(f), expect=[f.name, hint])
    return cases


def _ray_sessions() -> set[str]:
    found = set()
    for base in (Path("/tmp") / f"ray-{os.getuid()}", Path("/tmp/ray")):
        found |= {str(p) for p in base.glob("session_2*")}
    return found


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_malformed_inputs_one_line_exit_2_no_ray_nothing_written(tmp_path):
    cases = _corpus(tmp_path)
    assert len(cases) >= 25
    sweeps_before = _tree(tmp_path / "results-sweeps")
    sessions_before = _ray_sessions()
    # Downloads go through a proxy that refuses them, into an empty cache: "offline" on any machine.
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "FVCORE_CACHE": str(tmp_path / "weights-cache"),
    }

    def call(case):
        case_id, argv, _ = case
        return subprocess.run(
            [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(call, cases))

    problems = []
    for (case_id, _, expect), p in zip(cases, done, strict=True):
        err = p.stderr.strip()
        lines = err.splitlines()
        if p.returncode != 2:
            problems.append(f"{case_id}: exit {p.returncode}: {err[-500:]}")
        elif len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in err:
            problems.append(f"{case_id}: not one 'error:' line: {err[-800:]!r}")
        elif missing := [e for e in expect if e not in lines[0]]:
            problems.append(f"{case_id}: {missing} not in {lines[0]!r}")
        elif len(lines[0]) > 400 or any(lines[0].count(w) > 1 for w in lines[0].split() if "/" in w and len(w) > 20):
            problems.append(f"{case_id}: not short (a path named twice, or over 400 characters): {lines[0]!r}")
        elif case_id.startswith("unknown-") and len(lines[0]) - len(str(tmp_path)) > 200:  # the path aside
            problems.append(f"{case_id}: over 200 characters, not one closest match: {lines[0]!r}")
        if (tmp_path / f"results-{case_id}").exists():
            problems.append(f"{case_id}: wrote {tmp_path / f'results-{case_id}'}")
    assert not problems, "\n".join(problems)
    assert _tree(tmp_path / "results-sweeps") == sweeps_before  # nothing added to existing sweeps
    assert _ray_sessions() == sessions_before  # no command started Ray
    assert not Path("/tmp/nucleitune-pwned").exists()  # YAML tags are not executed (safe_load)


@pytest.fixture(autouse=True)
def _no_pwned_file():
    Path("/tmp/nucleitune-pwned").unlink(missing_ok=True)
    yield
    Path("/tmp/nucleitune-pwned").unlink(missing_ok=True)


def test_a_dead_cluster_address_fails_in_seconds_and_writes_nothing(tmp_path):
    space = _space(tmp_path / "space.yaml", _dataset(tmp_path / "data"))
    results = tmp_path / "results"
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--address", "127.0.0.1:9"]
    p = subprocess.run(
        [*cmd, "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.perf_counter() - start < 15
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "error: --address 127.0.0.1:9: no Ray cluster answers there (Connection refused)"
    ]
    assert not results.exists()  # no sweep folder, no MLflow database


def test_a_sweep_warns_of_a_missing_test_index_and_refuses_trials_larger_than_the_machine(tmp_path):
    data = _dataset(tmp_path / "data")
    (data / "test_img_ids.json").unlink()
    space = _space(tmp_path / "space.yaml", data, resources={"cpu": 1, "gpu": 64})
    p = subprocess.run(
        [sys.executable, "-m", "search.run", "--space", str(space), "--results", str(tmp_path / "results")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warning, error = p.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and str(data / "test_img_ids.json") in warning
    assert p.returncode == 2 and error.startswith(f"error: {space}: resources: a trial asks 1 CPU(s) and 64 GPU(s)")
    assert "this machine has" in error and "--gpus-per-trial" in error and "--address" in error
    assert not (tmp_path / "results").exists()
