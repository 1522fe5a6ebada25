"""Reading the project's small input documents (space, trial and index files) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def read_document(path: str | Path, error: type[Exception]) -> Any:
    """Parse a .json file (json) or anything else (YAML, safe_load); `error` names the file and the problem."""
    path = Path(path)
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
