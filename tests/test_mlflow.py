"""MLflow: a real tracking server on loopback; after a small sweep its REST API and its UI show every trial."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from search.ui import sweep_pages
from tests.conftest import ROOT
from tests.conftest import api as _api
from trainable.metrics import MEASURE_KEYS


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_parent_and_children_with_metrics_and_artifacts(mlflow_server, swept):
    _, runs, folder = swept
    board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
    parents = [r for r in runs if "mlflow.parentRunId" not in _tags(r)]
    assert len(parents) == 1
    parent = parents[0]
    assert _tags(parent)["nucleitune.sweep"] == "ml" and _tags(parent)["data_fingerprint"]
    children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) == 2
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    for child in children:
        run_id, tags = child["info"]["run_id"], _tags(child)
        row = board[board["trial_id"] == tags["nucleitune.trial_id"]].iloc[0]
        # Named for people: the trial's number and its searched value; the sweep's tag; the leaderboard's summary.
        assert child["info"]["run_name"] == f"{row['trial']:02d} brightness {row['hp.brightness']:.4g}"
        assert tags["nucleitune.sweep"] == "ml" and tags["status"] == row["status"] == "finished"
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["backbone"] == "R18-FPN" and "brightness" in params and params["epochs"] == "2"
        assert params["seed"] == "0" and params["gamma"] == "0.1"  # every hyperparameter, defaults included
        assert params["decay_epochs"] == "none" and params["lr"] == "0.01"  # read as people write them
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert metrics["val_map50_best"] == pytest.approx(row["val_map50_best"])
        assert metrics["best_epoch"] == row["best_epoch"] and metrics["cpu_hours"] == pytest.approx(row["device_hours"])
        for key in ("val_map50", "val_map50_best", "total_loss", "lr", "sec_per_iter", "val_pq", "val_aji", "val_f1"):
            hist = _api(mlflow_server, f"metrics/get-history?run_id={run_id}&metric_key={key}")["metrics"]
            assert sorted(m["step"] for m in hist) == [1, 2], key
        # The nuclei measures of the trial's best report, in the leaderboard (its reports have them per epoch).
        reports = [json.loads(line) for line in (Path(row["path"]) / "result.json").read_text().splitlines()]
        at_best = next(r for r in reports if r["epoch"] == row["best_epoch"])
        assert all(0 <= row[k] <= 1 and row[k] == pytest.approx(at_best[k]) for k in MEASURE_KEYS)
        files = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={run_id}")["files"]}
        assert {"learning_curve.png", "lr_schedule.png", "val_overlay.png", "best_checkpoint"} <= files
        best = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={run_id}&path=best_checkpoint")["files"]}
        assert {"best_checkpoint/config.yaml", "best_checkpoint/state.json"} <= best
    # The parent summarises the sweep.
    run = _api(mlflow_server, f"runs/get?run_id={parent['info']['run_id']}")["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["val_map50_best"] == pytest.approx(board["val_map50_best"].max())
    assert metrics["trials_finished"] == 2 and metrics["trials_stopped_early"] == 0 and metrics["wall_s"] > 0
    assert metrics["cpu_hours"] == pytest.approx(board["device_hours"].sum())
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["fixed.backbone"] == "R18-FPN" and params["searcher"] == "optuna"
    note = _tags(run)["mlflow.note.content"]
    best = board.sort_values("val_map50_best", ascending=False).iloc[0]
    assert f"[{best['trial']:02d} ({best['trial_id']})](#/experiments/" in note  # the best trial, linked
    assert "python -m search.export --best" in note and "--name ml" in note
    files = {f["path"] for f in _api(mlflow_server, f"artifacts/list?run_id={parent['info']['run_id']}")["files"]}
    assert {"leaderboard.csv", "space.yaml", "sweep.json", "plots"} <= files


def _grid(html: str) -> tuple[list[str], list[dict[str, str]]]:
    """MLflow's runs table in a dumped DOM: column ids, and the rows (column id -> text) in display order."""

    class Grid(HTMLParser):
        def __init__(self):
            super().__init__()
            self.headers, self.cells, self.row, self.cell, self.depth = [], [], None, None, 0

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("role") == "row" and "row-index" in a:
                self.row = int(a["row-index"])
            if self.cell is None and a.get("role") in ("columnheader", "gridcell") and a.get("col-id"):
                self.cell, self.depth = {"role": a["role"], "col": a["col-id"], "row": self.row, "text": []}, 0
            if self.cell is not None and tag not in ("br", "img", "input", "meta", "link", "hr", "path"):
                self.depth += 1

        def handle_endtag(self, tag):
            if self.cell is not None:
                self.depth -= 1
                if self.depth == 0:
                    (self.headers if self.cell["role"] == "columnheader" else self.cells).append(self.cell)
                    self.cell = None

        def handle_data(self, data):
            if self.cell is not None and data.strip():
                self.cell["text"].append(data.strip())

    g = Grid()
    g.feed(html)
    rows: dict[int, dict[str, str]] = {}
    for c in g.cells:
        rows.setdefault(c["row"], {})[c["col"]] = " ".join(c["text"])
    return [h["col"] for h in g.headers], [rows[i] for i in sorted(rows)]


def _chromium(url: str, out: Path, profile: Path) -> str:
    """The page's DOM after it rendered, and a screenshot of it kept at `out` (a file a person can open)."""
    assert shutil.which("chromium"), "Debian's chromium is missing: make test installs it (make browser)"
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
        "--virtual-time-budget=40000",  # the charts load their plotting library late
        "--window-size=1800,1000",
    ]
    shot = [*cmd, f"--user-data-dir={profile}-shot", f"--screenshot={out}", url]
    subprocess.run(shot, capture_output=True, timeout=180)
    dump = [*cmd, f"--user-data-dir={profile}", "--dump-dom", url]
    dom = subprocess.run(dump, capture_output=True, text=True, timeout=180)
    out.with_suffix(".html").write_text(dom.stdout)
    return dom.stdout


def test_the_printed_page_shows_which_trial_is_best_and_why(mlflow_server, swept, tmp_path):
    """What `python -m search.ui` prints, in a real browser: the model-training view of the sweep's trials, best first,
    with its score, epoch, status and searched hyperparameter as columns; the charts page too."""
    _, runs, folder = swept
    board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
    parent = next(r for r in runs if "mlflow.parentRunId" not in _tags(r))
    table, charts = sweep_pages(mlflow_server, parent["info"]["run_id"])
    assert "workflowType=machine_learning" in table and charts

    dom = _chromium(table, tmp_path / "runs.png", tmp_path / "profile")
    assert "Model training" in dom and "Observability" not in dom  # the training view, not the GenAI one
    columns, rows = _grid(dom)
    for column in ("metrics.`val_map50_best`", "metrics.`best_epoch`", "tags.`status`", "params.`brightness`"):
        assert any(c.startswith(column) for c in columns), (column, columns)
    score = next(c for c in columns if c.startswith("metrics.`val_map50_best`"))
    best = board.sort_values("val_map50_best", ascending=False).iloc[0]
    assert len(rows) == 2 and float(rows[0][score]) == pytest.approx(best["val_map50_best"])  # best first
    assert float(rows[0][score]) >= float(rows[1][score])
    # Named for people: the first row is a trial with the best score (equal scores come in MLflow's own order).
    tied = board[board["val_map50_best"] == best["val_map50_best"]]
    first = [r for r in tied.itertuples() if f"{r.trial:02d} brightness" in rows[0]["attributes.`Run Name`"]]
    assert len(first) == 1, (rows[0]["attributes.`Run Name`"], list(tied["trial"]))
    assert rows[0]["tags.`status`"] == "finished" and rows[0]["metrics.`best_epoch`"] == str(first[0].best_epoch)
    assert (tmp_path / "runs.png").stat().st_size > 10_000

    dom = _chromium(charts, tmp_path / "charts.png", tmp_path / "profile-charts")
    assert "val_map50" in dom and (tmp_path / "charts.png").stat().st_size > 10_000


def test_the_ui_command_starts_without_torch_ray_or_detectron2():
    """search.ui only reads a sweep's folder and starts MLflow: importing the trial stack cost it ~12 s."""
    import sys

    code = "import sys, search.ui; print(sorted(m for m in ('torch', 'ray', 'detectron2') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
