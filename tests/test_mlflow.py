"""MLflow: a real tracking server on loopback; after a small sweep its REST API and its UI show every trial."""

import shutil
import subprocess

from search.ui import sweep_page
from tests.conftest import ROOT
from tests.conftest import api as _api


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_parent_and_children_with_metrics_and_artifacts(mlflow_server, swept):
    _, runs, _ = swept
    parents = [r for r in runs if "mlflow.parentRunId" not in _tags(r)]
    assert len(parents) == 1
    parent = parents[0]
    assert _tags(parent)["nucleitune.sweep"] == "ml" and _tags(parent)["data_fingerprint"]
    children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) == 2
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    for child in children:
        run_id = child["info"]["run_id"]
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["backbone"] == "R18-FPN" and "brightness" in params and params["epochs"] == "2"
        assert params["seed"] == "0" and params["gamma"] == "0.1"  # every hyperparameter, defaults included
        for key in ("val_map50", "total_loss", "lr", "sec_per_iter"):
            hist = _api(mlflow_server, f"metrics/get-history?run_id={run_id}&metric_key={key}")["metrics"]
            assert sorted(m["step"] for m in hist) == [1, 2], key
        files = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={run_id}")["files"]}
        assert {"learning_curve.png", "lr_schedule.png", "best_checkpoint"} <= files
        best = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={run_id}&path=best_checkpoint")["files"]}
        assert {"best_checkpoint/val_overlay.png", "best_checkpoint/config.yaml"} <= best
    files = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={parent['info']['run_id']}")["files"]}
    assert {"leaderboard.csv", "space.yaml", "sweep.json", "plots"} <= files


def test_runs_page_renders_the_trials(mlflow_server, swept, tmp_path):
    _, runs, _ = swept
    parent = next(r for r in runs if "mlflow.parentRunId" not in _tags(r))
    url = sweep_page(mlflow_server, parent["info"]["run_id"])  # what `python -m search.ui` prints
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000",
    ]
    assert shutil.which("chromium"), "Debian's chromium is missing: make test installs it (make browser)"
    dom = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    names = [r["info"]["run_name"] for r in runs if r is not parent]
    assert all(name in dom for name in names), names


def test_the_ui_command_starts_without_torch_ray_or_detectron2():
    """search.ui only reads a sweep's folder and starts MLflow: importing the trial stack cost it ~12 s."""
    import sys

    code = "import sys, search.ui; print(sorted(m for m in ('torch', 'ray', 'detectron2') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
