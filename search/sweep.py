"""A sweep: the one module that knows its folder and the files in it. Every command (run, resume, confirm, export,
refit, ui, score) and the benchmarks open a sweep here; light to import: no Ray, no torch.

    RESULTS/                    --results: a folder or s3:// gs:// (trainable.storage: one pyarrow filesystem, the
                                one Ray Tune writes with); many sweeps, and on a folder their MLflow store (SQLite:
                                mlflow.db, mlartifacts/; object storage: a tracking server keeps them)
      NAME/                     one sweep (a Ray Tune experiment)
        space.yaml              the space file as given
        sweep.json              resolved trial settings, the CLI's overrides, the MLflow run
        leaderboard.csv         one row per trial, best first (search.leaderboard.build)
        trial_<id>/             Ray Tune's trial folder: result.json, params.json, error.txt, checkpoint_*/
        confirm/                search.confirm's Ray Tune experiment: jobs.json, confirm.csv, trial_<id>/
        refit/                  the refit's (search.export --refit): jobs.json, trial_<id>/, submission/
        submission/             search.export's answer.json and its zip (and overlays/ on a folder)

The ranking rules live here too: `ranked` (scored trials, best first: one function picks the best) and
`Sweep.winner` (what `export --best` ships).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search import outcome
from trainable import checkpoints, storage
from trainable.files import check_folder
from trainable.metrics import SCORE
from trainable.storage import Store

if TYPE_CHECKING:
    import pandas as pd

    from search.space import Space
    from trainable.settings import Settings

EXPERIMENT = "nucleitune"  # the MLflow experiment of every sweep
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # an MLflow UI saved view, stored as an experiment tag
_SPACE, _SETTINGS, _BOARD = "space.yaml", "sweep.json", "leaderboard.csv"
_TRIAL, _JOBS, _CONFIRMED = "trial_", "jobs.json", "confirm.csv"
# Columns of a table that older versions named otherwise: read under today's names (one name per figure).
_RENAMED = {"best_val_map50": SCORE, "mean_val_map50": outcome.CONFIRM_MEAN, "std_val_map50": outcome.CONFIRM_STD}
_RENAMED |= {"folds_scored": outcome.CONFIRM_FOLDS}


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


def latest_sweep(results: Store) -> str:
    spaces = [f for d in results.children() if (f := d / _SPACE).is_file()]
    if not spaces:
        raise UsageError(f"{results}: no sweep found")
    return max(spaces, key=Store.mtime).parent.name


def location(results: str | Path | Store, what: str = "--results") -> Store:
    """The results location given as --results (a folder, or s3:// gs:// storage), checked: one UsageError naming it
    where it cannot be used (a file, a bucket that does not exist, an endpoint that does not answer, refused
    credentials, an unknown scheme). Reads only: nothing is written."""
    try:
        place = results if isinstance(results, Store) else storage.parse(results)
        if place.remote:
            place.check(what)
    except storage.StorageError as e:
        raise UsageError(str(e)) from None
    if not place.remote:
        check_folder(place.local(), UsageError, what)
    return place


# sweep.json's `overrides`: the space's settings the CLI replaced (search.run.save_sweep), with their types.
OVERRIDES = dict(searcher=str, scheduler=str, num_samples=int, max_concurrent=int, seed=int, resources=dict)


def _read_settings(path: Store, needs: Iterable[str]) -> dict:
    """sweep.json (resolved settings, CLI overrides, MLflow run), with the keys in `needs`; one UsageError naming the
    file where it is damaged."""
    if not path.is_file():
        raise UsageError(f"{path.parent}: no sweep there (missing {path.name})")
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


def data_location(data: str) -> str:
    """--data as trials get it: a local folder resolved, or an s3:// gs:// URI as given."""
    return data if storage.is_remote(data) else str(Path(data).expanduser().resolve())


def check_data_location(data: str, given: str, missing: str) -> None:
    """One UsageError where the dataset at `data` (a folder or object storage) is not there (`missing`: what to say
    then); reads only."""
    if storage.is_remote(data):
        try:
            place = storage.parse(data)
            place.check(given)
        except storage.StorageError as e:
            raise UsageError(str(e)) from None
        if not (place / "train").is_dir():
            raise UsageError(f"{data}: {given}: no train/ there (README: Data)")
        return
    check_folder(data, UsageError, given)
    if not Path(data).is_dir():
        raise UsageError(f"{data}: {missing}")


def unreadable(path: Path | Store, why: str) -> UsageError:
    """A file a command wrote and reads back, damaged: `error: FILE: unreadable (why)`."""
    return UsageError(f"{path}: unreadable ({why})")


def _read(path: Path | Store) -> bytes:
    return path.read_bytes() if isinstance(path, Store) else Path(path).read_bytes()


def read_json(path: Path | Store, kind: type = dict, keys: Iterable[str] = ()) -> Any:
    """A JSON file a command wrote and reads back (sweep.json, a rerun's jobs.json, a trial's params.json): a `kind`
    (dict or list) with `keys` (a list: every entry a mapping with them), else one UsageError naming the file."""
    try:
        doc = json.loads(_read(path).decode())
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


def read_table(path: Path | Store, columns: Iterable[str], numbers: Iterable[str] = ()):
    """A CSV file a command wrote and reads back (leaderboard.csv, confirm.csv) as a DataFrame (trial_id as text),
    with `columns`, those in `numbers` numeric, under today's column names; else one UsageError naming the file."""
    import pandas as pd

    try:
        table = pd.read_csv(io.BytesIO(_read(path)), dtype={"trial_id": str})
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise unreadable(path, "not CSV: not even text") from None
    except (OSError, ValueError) as e:  # pandas' EmptyDataError and ParserError are ValueErrors
        reason = " ".join(str(e).split())[:80] or type(e).__name__
        raise unreadable(path, f"not CSV: {reason}") from None
    table = table.rename(columns={old: new for old, new in _RENAMED.items() if new not in table})
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise unreadable(path, f"no column{'s' * (len(missing) > 1)} {', '.join(missing)}"[:120])
    for c in numbers:
        try:
            table[c] = pd.to_numeric(table[c])
        except (ValueError, TypeError):
            raise unreadable(path, f"column {c}: not numbers") from None
    return table


def ranked(board: pd.DataFrame) -> pd.DataFrame:
    """The scored trials of a leaderboard (finished or stopped early, with a score), best first; ties keep the
    leaderboard's order. The top K and the best trial are its first rows: one rule for confirm, export and MLflow."""
    scored = board[board["status"].isin(outcome.SCORED) & board[SCORE].notna()]
    return scored.sort_values(SCORE, ascending=False, kind="stable")


class Experiment:
    """A Ray Tune experiment folder: a sweep, its confirmation or its refit. Its trials are trial_<id>/."""

    def __init__(self, folder: str | Path | Store):
        self.folder = folder if isinstance(folder, Store) else storage.parse(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r})"

    @staticmethod
    def trial_dirname(trial) -> str:
        """A Ray trial's folder name (Ray Tune's `trial_dirname_creator`): trial_<id>."""
        return f"{_TRIAL}{trial.trial_id}"

    def trial_dir(self, trial_id: str) -> Store:
        return self.folder / f"{_TRIAL}{trial_id}"

    def trial_dirs(self) -> list[Store]:
        """Every trial folder, in name order."""
        return [p for p in self.folder.children(_TRIAL) if p.is_dir()]

    @staticmethod
    def trial_id(trial_dir: Path | Store) -> str:
        return trial_dir.name.removeprefix(_TRIAL)

    def reports(self, trial_id: str) -> list[dict]:
        """Every report of a trial, in order, from Ray's result.json ([] before its first report)."""
        return reports(self.trial_dir(trial_id))

    def params_file(self, trial_id: str) -> Store:
        """The trial's Ray config (params.json): its searched values, or a rerun's job."""
        return self.trial_dir(trial_id) / "params.json"

    def error(self, trial_id: str) -> str:
        """Ray's traceback of a trial that raised ('' if none)."""
        try:
            return (self.trial_dir(trial_id) / "error.txt").read_text()
        except OSError:
            return ""

    # A rerun's jobs (search.reruns): written when it starts, read back to continue it or to refuse other jobs.
    @property
    def jobs_file(self) -> Store:
        return self.folder / _JOBS

    def read_jobs(self, keys: Iterable[str] = ()) -> list[dict] | None:
        return read_json(self.jobs_file, list, keys) if self.jobs_file.is_file() else None

    def write_jobs(self, jobs: list[dict]) -> None:
        self.jobs_file.write_text(json.dumps(jobs, indent=1))

    def remove(self) -> None:
        self.folder.rmtree()

    def tune_storage(self) -> dict:
        """Ray Tune's name, storage_path and storage_filesystem for this experiment (RunConfig, restore, analysis)."""
        return {"name": self.name, "storage_path": self.folder.parent.path, "storage_filesystem": self.folder.fs}

    def analysis(self, **kwargs):
        """Ray Tune's ExperimentAnalysis of this folder, read through its filesystem."""
        from ray.tune import ExperimentAnalysis

        return ExperimentAnalysis(self.folder.path, storage_filesystem=self.folder.fs, **kwargs)

    def can_restore(self) -> bool:
        from ray import tune

        return tune.Tuner.can_restore(self.folder.path, storage_filesystem=self.folder.fs)


def reports(trial_dir: Path | Store) -> list[dict]:
    """Every report of the trial in `trial_dir`, in order, from Ray's result.json ([] before its first report)."""
    f = (trial_dir if isinstance(trial_dir, Store) else storage.parse(trial_dir)) / "result.json"
    try:
        text = f.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _checkpoints(trial_dir: Path | Store) -> list[Store]:
    return (trial_dir if isinstance(trial_dir, Store) else storage.parse(trial_dir)).glob("checkpoint_*")


def best_checkpoint(trial_dir: Path | Store) -> Store | None:
    """The checkpoint folder of the trial in `trial_dir` with the highest val_map50 (trainable.checkpoints' rule)."""
    return checkpoints.best_checkpoint(_checkpoints(trial_dir), unreadable)


def latest_checkpoint(trial_dir: Path | Store) -> Store | None:
    """The newest checkpoint folder with weights of the trial in `trial_dir`."""
    done = [d for d in _checkpoints(trial_dir) if (d / "model.pth").is_file()]
    return done[-1] if done else None


class Sweep(Experiment):
    """One sweep under a results folder: its space, settings, trials, leaderboard, confirmation and refit."""

    @classmethod
    def open(cls, results: str | Path | Store, name: str | None = None) -> Sweep:
        """Sweep `name` under `results` (default: the latest there); one UsageError where --results, or the sweep,
        cannot be used (see `location`)."""
        results = location(results)
        sweep = cls(results / (check_name(name) or latest_sweep(results)))
        if not sweep.folder.remote:
            check_folder(sweep.folder.local(), UsageError, "--name")
        return sweep

    @property
    def results(self) -> Store:
        return self.folder.parent

    @property
    def space_file(self) -> Store:
        return self.folder / _SPACE

    @property
    def settings_file(self) -> Store:
        return self.folder / _SETTINGS

    @property
    def board_file(self) -> Store:
        return self.folder / _BOARD

    @property
    def plots_dir(self) -> Path | None:
        """Where the sweep's plots are drawn: its folder; None on object storage (drawn aside, they go to MLflow)."""
        return None if self.folder.remote else self.folder.local() / "plots"

    @property
    def confirmation(self) -> Experiment:
        return Experiment(self.folder / "confirm")

    @property
    def refit(self) -> Experiment:
        return Experiment(self.folder / "refit")

    @property
    def confirmed_file(self) -> Store:
        """search.confirm's ranking, inside the confirmation's own folder beside the jobs it came from: deleting the
        folder to confirm anew deletes it too, so a ranking never outlives its jobs."""
        return self.confirmation.folder / _CONFIRMED

    def is_sweep(self) -> bool:
        return self.space_file.is_file() and self.settings_file.is_file()

    # --- what it was started with
    def create(self, space_file: str | Path, saved: dict) -> None:
        """A new sweep's folder: a copy of the space file, and sweep.json."""
        self.space_file.write_bytes(Path(space_file).read_bytes())
        self.save(saved)

    def saved(self, needs: Iterable[str] = ("settings", "overrides")) -> dict:
        """sweep.json (resolved settings, CLI overrides, MLflow run), with the keys in `needs`."""
        return _read_settings(self.settings_file, needs)

    def save(self, saved: dict) -> None:
        self.settings_file.write_text(json.dumps(saved, indent=1))

    def space(self, saved: dict | None = None) -> Space:
        """The space as the sweep ran it: its copy of the space file with the CLI's overrides."""
        from search.space import load_space

        if not self.is_sweep():
            raise UsageError(f"{self.folder}: not a sweep folder (no {_SPACE} or {_SETTINGS})")
        space = load_space(self.space_file)
        for k, v in (saved or self.saved())["overrides"].items():
            setattr(space, k, v)
        return space

    def trial_settings(self, saved: dict | None = None, data: str | None = None, check_data: bool = True) -> Settings:
        """The trial settings of sweep.json; `data`: the dataset's new place (--data), if it moved since the sweep;
        `check_data`: refuse a dataset folder that is not there (one UsageError)."""
        from trainable.config import ConfigError
        from trainable.data import DatasetError
        from trainable.settings import Settings

        try:
            settings = Settings.from_dict((saved or self.saved())["settings"])
        except (ConfigError, DatasetError, TypeError) as e:
            raise unreadable(self.settings_file, f"settings: {e}"[:160]) from None
        if not check_data:
            return settings
        settings.data = data_location(data) if data else settings.data
        given = "--data" if data else f"the sweep's data folder ({self.settings_file})"
        check_data_location(settings.data, given, f"{given} not found (moved?): give --data DIR")
        return settings

    def as_ran(self, data: str | None = None, check_data: bool = True) -> tuple[Space, Settings]:
        """(space, trial settings) of the sweep as it ran, from one read of its saved settings (see trial_settings)."""
        saved = self.saved()
        return self.space(saved), self.trial_settings(saved, data, check_data)

    def mlflow_run(self, saved: dict | None = None) -> dict | None:
        """{"uri", "parent", "sweep"} of the sweep's MLflow run, or None when MLflow is off or never started."""
        saved = saved or self.saved()
        if saved.get("mlflow_uri", "off") == "off" or not saved.get("mlflow_parent_run_id"):
            return None
        return {"uri": saved["mlflow_uri"], "parent": saved["mlflow_parent_run_id"], "sweep": self.name}

    def default_mlflow_uri(self) -> str:
        """The MLflow store of the sweeps under this results folder (SQLite); on object storage there is none (a
        tracking server keeps its artifacts in the bucket: docs/cluster.md), one UsageError."""
        if self.folder.remote:
            raise UsageError(
                f"--results {self.results}: MLflow cannot keep a SQLite store in object storage: give --mlflow-uri "
                "http://HOST:PORT (a tracking server, its artifacts in the bucket: docs/cluster.md) or --mlflow-uri off"
            )
        return f"sqlite:///{self.results.local() / 'mlflow.db'}"

    def artifact_root(self, uri: str) -> Path | None:
        """Where MLflow keeps artifacts for the store at `uri`: beside a SQLite store; a server keeps its own."""
        return self.results.local() / "mlartifacts" if uri.startswith("sqlite") else None

    def trial_config(self, row: dict, space: Space | None = None) -> dict:
        """The searched values of a sweep trial (its Ray config), for re-training it; checked against `space`."""
        from trainable.config import validate

        path = self.params_file(row["trial_id"])
        if "trial" not in row or not path.is_file():
            missing = "params.json" if "trial" in row else f"number in {_BOARD}"
            raise UsageError(
                f"{self.folder}: trial {row['trial_id']} has no {missing} "
                f"(a sweep from an older version: python -m search.run --resume --name {self.name} rebuilds it)"
            )
        config = read_json(path, dict)
        try:
            if space is not None:
                validate(space.hparams(config))
        except (KeyError, TypeError, ValueError) as e:  # ConfigError is a ValueError
            why = f"not a configuration of this sweep's space: {type(e).__name__}: {e}"
            raise unreadable(path, why[:160]) from None
        return config

    # --- what it found
    def write_board(self, table: pd.DataFrame) -> None:
        self.board_file.write_text(table.to_csv(index=False))

    def board(self) -> pd.DataFrame:
        """The leaderboard, with the confirmation's figures of each trial where one ran (read from the confirmation's
        own folder each time: never a copy that could outlive it); a sweep without one has not ended."""
        if not self.board_file.is_file():
            raise UsageError(f"{self.folder}: no {_BOARD} (the sweep has not ended; resume it first)")
        board = read_table(self.board_file, ("trial_id", "status", SCORE), numbers=(SCORE,))
        confirm = (outcome.CONFIRM_MEAN, outcome.CONFIRM_STD, outcome.CONFIRM_FOLDS)
        board = board.drop(columns=[c for c in confirm if c in board])  # written by older versions
        confirmed = self.confirmed()
        if confirmed is None:
            return board
        return board.merge(confirmed[["trial_id", *(c for c in confirm if c in confirmed)]], on="trial_id", how="left")

    def write_confirmed(self, table: pd.DataFrame) -> None:
        self.confirmed_file.write_text(table.to_csv(index=False))

    def confirmed(self) -> pd.DataFrame | None:
        """search.confirm's ranking of the sweep (best first), or None where none ran to its end. It must be the
        ranking of the jobs beside it: anything else is one error, never a ranking to trust."""
        path = self.confirmed_file
        if not path.is_file():
            return None
        numbers = (outcome.CONFIRM_MEAN, outcome.CONFIRM_FOLDS)
        table = read_table(path, ("trial_id", *numbers), numbers=numbers)
        jobs = self.confirmation.read_jobs(("trial_id",))
        if not jobs or set(table["trial_id"]) != {str(j["trial_id"]) for j in jobs}:
            raise UsageError(
                f"{path}: does not match the confirmation jobs beside it ({_JOBS}): run search.confirm again, or "
                f"delete {path.parent} to ship without confirmation"
            )
        return table

    def winner(self, board: pd.DataFrame) -> tuple[dict, str, Store]:
        """(leaderboard row, why, the trial folder whose checkpoint to ship) of the trial to ship: the winner of
        search.confirm where it ran to the end, else the first of `ranked`. A confirmed winner that ASHA stopped early
        ships the checkpoint of its confirmation on fold 0, its whole schedule on the sweep's split; where that is
        missing, one error (never the sweep's checkpoint, cut short by ASHA)."""
        confirmed = self.confirmed()
        if confirmed is None:
            best = ranked(board)
            if best.empty:
                raise UsageError(f"{self.board_file}: no finished trial")
            row = best.iloc[0].to_dict()
            return row, f"the highest {SCORE}, {row[SCORE]:.4f}", self.trial_dir(row["trial_id"])
        top = confirmed.iloc[0]
        rows = board[board["trial_id"] == top["trial_id"]]
        if rows.empty:
            raise UsageError(f"{self.confirmed_file}: its winner {top['trial_id']} is not in {self.board_file}")
        row = rows.iloc[0].to_dict()
        why = (
            f"confirmed winner: {outcome.CONFIRM_MEAN} {top[outcome.CONFIRM_MEAN]:.4f} over "
            f"{int(top[outcome.CONFIRM_FOLDS])} folds that took no part in the selection"
        )
        if row["status"] == "finished":
            return row, why, self.trial_dir(row["trial_id"])
        confirmation = self.confirmation
        for trial_dir in confirmation.trial_dirs():
            params = confirmation.params_file(confirmation.trial_id(trial_dir))
            if not params.is_file():
                continue
            job = read_json(params, dict, ("job",))["job"]
            if not isinstance(job, dict) or not {"trial_id", "fold"} <= set(job):
                raise unreadable(params, "job: expected a mapping with trial_id and fold")
            if job["trial_id"] == row["trial_id"] and job["fold"] == 0:
                why += f"; stopped early in the sweep, so its full schedule on fold 0 ({trial_dir.name})"
                return row, why, trial_dir
        raise UsageError(
            f"{confirmation.folder}: the confirmed winner, trial {int(row['trial']):02d} ({row['trial_id']}), was "
            "stopped early in the sweep and its fold-0 retrain, the checkpoint to ship, is missing: run search.confirm "
            "again to retrain it"
        )
