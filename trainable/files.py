"""Reading the project's small input documents (space, trial and index files) with one-line errors; writing files
atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trainable.storage import Store


def read_document(path: str | Path | Store, error: type[Exception]) -> Any:
    """Parse a .json file (json) or anything else (YAML, safe_load); `error` names the file and the problem. `path`
    may be on object storage (a Store)."""
    path = path if isinstance(path, Store) else Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise error(f"{path}: not valid JSON ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None


def folder_problem(path: str | Path) -> str | None:
    """Why `path` cannot be used or made as a folder: it, or the nearest of its parents that exists, is a file (or a
    broken link); None where it is a folder, or can be made one."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            return None
        if p.exists() or p.is_symlink():
            return f"{p}: is a file, not a folder" if p.exists() else f"{p}: is a broken link, not a folder"
    return None


def check_folder(path: str | Path, error: type[Exception], what: str) -> None:
    """One `error` naming the file where `what` (a flag or setting) needs `path` to be, or to become, a folder."""
    problem = folder_problem(path)
    if problem:
        inside = "" if problem.startswith(f"{Path(path)}:") else ", where it needs a folder"
        raise error(f"{problem} ({what}{inside})")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """write(tmp), a hidden file beside `path`, then rename it onto `path`: readers see the old file or the whole new
    one, never a part; a failed write leaves no temporary file. tmp keeps the suffix (np.savez and PIL read it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
