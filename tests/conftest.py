"""Shared fixtures: the course dataset beside the project, small subsets of it, and a per-session annotation cache."""

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NUCLEI_DATA", ROOT.parent / "shared" / "data" / "nuclei"))
SAMPLE_DATA = ROOT / "sample_data" / "nuclei"
# The three sparsest course images: cheap to convert (294-342 nuclei each) but still over the 100-detection cap.
SMALL_IDS = ["TCGA-CH-5767-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1", "TCGA-DK-A2I6-01A-01-TS1"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "train").is_dir(), f"course dataset not found at {SHARED_DATA} (set NUCLEI_DATA)"
    return SHARED_DATA


def make_subset(shared: Path, dest: Path, ids: list[str], copy: bool = False) -> Path:
    """A dataset folder with some training images of the course data, symlinked (or copied, to modify them)."""
    for i in ids:
        target = dest / "train" / i
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copytree(shared / "train" / i, target)
        else:
            target.symlink_to(shared / "train" / i)
    return dest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("annotation-cache")


@pytest.fixture(scope="session")
def small_data(shared_data, tmp_path_factory) -> Path:
    """Three real course images (symlinked), for trials and evaluation."""
    return make_subset(shared_data, tmp_path_factory.mktemp("small-data"), SMALL_IDS)
