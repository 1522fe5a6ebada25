"""A sweep's folder under --results: its name, its saved settings, the latest one. Shared by the commands (run,
export, ui) and light to import: no Ray, no torch."""

from __future__ import annotations

import json
from pathlib import Path

SPACE_COPY, SETTINGS_FILE = "space.yaml", "sweep.json"
BOARD, CONFIRMED = "leaderboard.csv", "confirm.csv"  # a sweep's trials, ranked; its confirmation (search.confirm)
CONFIRM_DIR, REFIT_DIR = "confirm", "refit"  # Ray experiments inside the sweep's folder (search.reruns)
EXPERIMENT = "nucleitune"  # the MLflow experiment of every sweep
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # an MLflow UI saved view, stored as an experiment tag


def view_key(parent_run_id: str) -> str:
    """The key of a sweep's saved runs-table view (tracking.Tracker.save_view writes it, search.ui opens it)."""
    return f"nucleitune-{parent_run_id}"


class UsageError(ValueError):
    """A flag or folder a command cannot use; printed as one `error:` line."""


def check_name(name: str | None) -> str | None:
    """--name is a folder directly under --results (no path: nothing is read or written outside the results tree)."""
    if name is not None and (not name or Path(name).name != name or name in (".", "..")):
        raise UsageError(f"--name must be a plain folder name under --results, got {name!r}")
    return name


def latest_sweep(results: Path) -> str:
    sweeps = sorted((p for p in results.glob(f"*/{SPACE_COPY}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise UsageError(f"{results}: no sweep found")
    return sweeps[-1].parent.name


def read_settings(folder: Path) -> dict:
    """The sweep's sweep.json (resolved settings, CLI overrides, MLflow run)."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise UsageError(f"{folder}: no sweep there (missing {SETTINGS_FILE})")
    return json.loads(path.read_text())
