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


# A tiny model trained on one sample tile and validated on a copy of that tile: trials that start from it have
# clearly non-zero val_map50 after one iteration, so scheduler decisions in tests do not hinge on luck.
DUP_TILE = "TCGA-21-5784-01Z-00-DX1"
CPU_HEADS = {
    "proposals_train": 500,
    "roi_batch_size": 128,
    "rpn_batch_size": 256,
    "proposals_test": 500,
    "detections_per_image": 300,
    "box_head_fc_dim": 256,
}


@pytest.fixture(scope="session")
def dup_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dup-data")
    src = SAMPLE_DATA / "train" / DUP_TILE
    (root / "train").mkdir()
    (root / "train" / DUP_TILE).symlink_to(src)
    copy = root / "train" / "copy"
    (copy / "images").mkdir(parents=True)
    (copy / "images" / "copy.png").symlink_to(src / "images" / f"{DUP_TILE}.png")
    (copy / "masks").symlink_to(src / "masks")
    shutil.copytree(SAMPLE_DATA / "test", root / "test")
    shutil.copy(SAMPLE_DATA / "test_img_ids.json", root / "test_img_ids.json")
    return root


@pytest.fixture(scope="session")
def pretrained(dup_data, cache_dir, tmp_path_factory) -> Path:
    """model.pth of 15 iterations of R18-FPN from scratch on one tile (~1 min on 2 cores)."""
    from trainable.train import LocalReporter, Settings, run_trial

    out = tmp_path_factory.mktemp("pretrained")
    hp = {
        "backbone": "R18-FPN",
        "weights": "scratch",
        "epochs": 15,
        "warmup_epochs": 2,
        "decay_epochs": [],
        "crop_size": 256,
        "hflip": 0.0,
        "vflip": 0.0,
        "brightness": 0.0,
        **CPU_HEADS,
    }
    settings = Settings(data=str(dup_data), split={"val_ids": ["copy"]}, eval_every=15, cache_dir=str(cache_dir))
    reporter = LocalReporter(out)
    run_trial(hp, settings, reporter, out / "work")
    value, best = reporter.best
    assert value > 0.05, f"pretraining reached only val_map50 {value}"
    return best / "model.pth"
