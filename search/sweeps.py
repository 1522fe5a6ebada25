"""A sweep's folder under --results: its name, its saved settings, the latest one. Shared by the commands (run,
export, ui) and light to import: no Ray, no torch."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainable.files import check_folder

SPACE_COPY, SETTINGS_FILE = "space.yaml", "sweep.json"
BOARD = "leaderboard.csv"  # a sweep's trials, ranked
CONFIRM_DIR, REFIT_DIR = "confirm", "refit"  # Ray experiments inside the sweep's folder (search.reruns)
# search.confirm's ranking, inside the confirmation's own folder beside the jobs it came from: deleting the folder to
# confirm anew deletes it too, so a ranking never outlives its jobs (the leaderboard reads it, never copies it).
CONFIRMED = f"{CONFIRM_DIR}/confirm.csv"
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


def sweep_folder(results: Path, name: str | None) -> Path:
    """The folder of sweep `name` under --results (default: the latest sweep there); one UsageError where --results,
    or the sweep, is a file."""
    check_folder(results, UsageError, "--results")
    folder = results / (check_name(name) or latest_sweep(results))
    check_folder(folder, UsageError, "--name")
    return folder


def latest_sweep(results: Path) -> str:
    sweeps = sorted((p for p in results.glob(f"*/{SPACE_COPY}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise UsageError(f"{results}: no sweep found")
    return sweeps[-1].parent.name


# sweep.json's `overrides`: the space's settings the CLI replaced (search.run.save_sweep), with their types.
OVERRIDES = dict(searcher=str, scheduler=str, num_samples=int, max_concurrent=int, seed=int, resources=dict)


def read_settings(folder: Path, needs: Iterable[str] = ("settings", "overrides")) -> dict:
    """The sweep's sweep.json (resolved settings, CLI overrides, MLflow run), with the keys in `needs`; one
    UsageError naming the file where it is damaged."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise UsageError(f"{folder}: no sweep there (missing {SETTINGS_FILE})")
    saved = read_json(path, dict, needs)
    settings = saved.get("settings", {"data": ""})
    if not (isinstance(settings, dict) and isinstance(settings.get("data"), str)):
        raise unreadable(path, "settings: expected a mapping with data, the dataset folder")
    overrides = saved.get("overrides", {})
    if not isinstance(overrides, dict):
        raise unreadable(path, "overrides: expected a mapping")
    for k, v in overrides.items():
        if k not in OVERRIDES or isinstance(v, bool) or not isinstance(v, OVERRIDES[k]):
            raise unreadable(path, f"overrides: {k} = {v!r}"[:80])
        if k == "resources" and not all(isinstance(v.get(r), (int, float)) for r in ("cpu", "gpu")):
            raise unreadable(path, f"overrides: resources = {v!r}"[:80])
    for k in ("mlflow_uri", "mlflow_parent_run_id"):
        if saved.get(k) is not None and not isinstance(saved[k], str):
            raise unreadable(path, f"{k}: expected text")
    return saved


def unreadable(path: Path, why: str) -> UsageError:
    """A file a command wrote and reads back, damaged: `error: FILE: unreadable (why)`."""
    return UsageError(f"{path}: unreadable ({why})")


def read_json(path: Path, kind: type = dict, keys: Iterable[str] = ()) -> Any:
    """A JSON file a command wrote and reads back (sweep.json, a rerun's jobs.json, a trial's params.json): a `kind`
    (dict or list) with `keys` (a list: every entry a mapping with them), else one UsageError naming the file."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise unreadable(path, f"not JSON: {e.msg} at line {e.lineno}") from None
    except UnicodeDecodeError:
        raise unreadable(path, "not JSON: not even text") from None
    except OSError as e:
        raise unreadable(path, e.strerror or type(e).__name__) from None
    name = {dict: "a mapping", list: "a list"}.get(kind, kind.__name__)
    if not isinstance(doc, kind):
        raise unreadable(path, f"expected {name}, got {type(doc).__name__}")
    for i, entry in enumerate(doc if kind is list else [doc]):
        where = f"entry {i}: " if kind is list else ""
        if not isinstance(entry, dict):
            raise unreadable(path, f"{where}expected a mapping, got {type(entry).__name__}")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise unreadable(path, f"{where}no {missing[0]!r}")
    return doc


def read_table(path: Path, columns: Iterable[str], numbers: Iterable[str] = ()):
    """A CSV file a command wrote and reads back (leaderboard.csv, confirm.csv) as a DataFrame (trial_id as text),
    with `columns`, those in `numbers` numeric; else one UsageError naming the file."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"trial_id": str})
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise unreadable(path, "not CSV: not even text") from None
    except (OSError, ValueError) as e:  # pandas' EmptyDataError and ParserError are ValueErrors
        reason = " ".join(str(e).split())[:80] or type(e).__name__
        raise unreadable(path, f"not CSV: {reason}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise unreadable(path, f"no column{'s' * (len(missing) > 1)} {', '.join(missing)}"[:120])
    for c in numbers:
        try:
            table[c] = pd.to_numeric(table[c])
        except (ValueError, TypeError):
            raise unreadable(path, f"column {c}: not numbers") from None
    return table
