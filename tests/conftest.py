"""Shared fixtures: the course dataset beside the project, small subsets of it, and a per-session annotation cache."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from search.ui import free_port, server_command, server_env, wait_ready  # noqa: E402
from trainable import storage  # noqa: E402

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


def dup_tiles(root: Path, copies: list[str]) -> Path:
    """A dataset of the sample tile DUP_TILE and copies of it under other ids (symlinks), with the sample's tests."""
    src = SAMPLE_DATA / "train" / DUP_TILE
    (root / "train").mkdir()
    (root / "train" / DUP_TILE).symlink_to(src)
    for name in copies:
        (root / "train" / name / "images").mkdir(parents=True)
        (root / "train" / name / "images" / f"{name}.png").symlink_to(src / "images" / f"{DUP_TILE}.png")
        (root / "train" / name / "masks").symlink_to(src / "masks")
    shutil.copytree(SAMPLE_DATA / "test", root / "test")
    shutil.copy(SAMPLE_DATA / "test_img_ids.json", root / "test_img_ids.json")
    return root


@pytest.fixture(scope="session")
def dup_data(tmp_path_factory) -> Path:
    return dup_tiles(tmp_path_factory.mktemp("dup-data"), ["copy"])


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


def sweep_space(tmp_path: Path, data: Path, cache: Path, **over) -> Path:
    doc = {
        "name": "t",
        "searcher": "optuna",
        "scheduler": "asha",
        "num_samples": 3,
        "max_concurrent": 1,
        "resources": {"cpu": 2},
        "asha": {"grace_period": 0.3, "reduction_factor": 2},  # rungs at 30 % and 60 %: epochs 1 and 2 of 3
        "max_failures": 0,
        "settings": {
            "data": str(data),
            "split": {"val_ids": ["copy"], "train_ids": [DUP_TILE]},
            "eval_every": 1,
            "cache_dir": str(cache),
        },
        "fixed": {
            "backbone": "R18-FPN",
            "weights": "scratch",
            "epochs": 3,
            "warmup_epochs": 0,
            "decay_epochs": [],
            "crop_size": 128,
            "hflip": 0.0,
            "vflip": 0.0,
            **CPU_HEADS,
        },
        "params": {"brightness": {"uniform": [0.0, 0.1]}},
    }
    for k, v in over.items():
        doc[k] = {**doc[k], **v} if isinstance(v, dict) and k in ("fixed", "params") else v
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def run_mlflow_server(root: Path, artifacts: str | Path, env: dict | None = None):
    """A tracking server on loopback (SQLite store in `root`, artifacts at `artifacts`: a folder or s3://...), for
    a fixture to yield from: its URL, the server stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            server_command(f"sqlite:///{root / 'mlflow.db'}", "127.0.0.1", port, artifacts),
            env={**server_env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, proc, timeout=120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    yield from run_mlflow_server(root, root / "artifacts")


@pytest.fixture(scope="session")
def swept(mlflow_server, dup_data, cache_dir, tmp_path_factory):
    """A 2-trial FIFO sweep of 2 epochs, logged to the server, whose validation keeps 300 detections (uncapped: the
    nuclei measures too): (experiment id, runs, sweep folder)."""
    tmp = tmp_path_factory.mktemp("mlflow-sweep")
    space = sweep_space(tmp, dup_data, cache_dir, scheduler="fifo", num_samples=2, fixed={"epochs": 2})
    doc = yaml.safe_load(space.read_text())
    doc["settings"]["val_detections"] = 300
    space.write_text(yaml.safe_dump(doc))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.run",
            "--space",
            str(space),
            "--results",
            str(tmp / "results"),
            "--name",
            "ml",
            "--mlflow-uri",
            mlflow_server,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exp = api(mlflow_server, "experiments/get-by-name?experiment_name=nucleitune")["experiment"]
    runs = api(mlflow_server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    return exp["experiment_id"], runs, tmp / "results" / "ml"


# Object storage: moto's S3 server on loopback (a real S3 API; what Ray's own tests use), one bucket.
BUCKET = "nucleitune-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server on loopback with one bucket: its endpoint (host:port)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request in a failure's report
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def uri(endpoint: str, key: str, bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{key}?endpoint_override={endpoint}&scheme=http"


def keys(endpoint: str, prefix: str = "", bucket: str = BUCKET) -> list[str]:
    client = boto3.client("s3", endpoint_url=f"http://{endpoint}")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_data(s3, dup_data):
    """The one-tile dataset of the sweep tests, uploaded to the bucket."""
    place = storage.parse(uri(s3, "data/dup"))
    place.upload(dup_data)
    assert "data/dup/test_img_ids.json" in keys(s3, "data/")
    return uri(s3, "data/dup")


def kill_driver(driver: subprocess.Popen) -> None:
    """SIGKILL a driver started with start_new_session=True, then whatever Ray left of its session (its group)."""
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
