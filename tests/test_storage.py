"""Sweeps on object storage: a real S3 API server (moto's, on 127.0.0.1) holds the results and the dataset; Ray Tune,
MLflow (a tracking server whose artifacts go to the bucket), search.confirm and search.export work against it."""

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pandas as pd
import pytest

from search.ui import free_port
from tests.conftest import BUCKET, CREDENTIALS, ROOT, api, keys, kill_driver, run_mlflow_server, uri
from tests.conftest import sweep_space as _space
from trainable import storage


@pytest.fixture(scope="module")
def s3_mlflow(s3, tmp_path_factory):
    """An MLflow tracking server whose artifacts go to the bucket (--artifacts-destination s3://...)."""
    env = {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": f"http://{s3}"}  # the server writes the artifacts
    yield from run_mlflow_server(tmp_path_factory.mktemp("mlflow-s3"), f"s3://{BUCKET}/mlartifacts", env)


def _cli(module: str, *args, cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **CREDENTIALS, **(env or {})},
    )


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def s3_sweep(s3, s3_data, s3_mlflow, tmp_path_factory):
    """A 2-trial FIFO sweep of 3 epochs with --results and --data in the bucket, logged to the S3-backed MLflow
    server, run from an empty working folder; its driver is killed (SIGKILL) once the second trial has a checkpoint,
    then --resume continues it from the bucket: (working folder, its listing before, the resume's run, node cache)."""
    work = tmp_path_factory.mktemp("s3-work")
    node_cache = tmp_path_factory.mktemp("s3-node-cache")  # the node's own cache: the dataset is fetched into it
    space = _space(work.parent, s3_data, node_cache, scheduler="fifo", num_samples=2, fixed={"epochs": 3})
    space = space.rename(tmp_path_factory.mktemp("s3-space") / "space.yaml")
    before = _tree(work)
    results = uri(s3, "sweeps")
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", results, "--name", "s3"]
    log_path = tmp_path_factory.mktemp("s3-logs") / "driver.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **CREDENTIALS}
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [*cmd, "--mlflow-uri", s3_mlflow],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 600
    while time.time() < deadline:  # both trials have a checkpoint in the bucket: one done, one (likely) mid-way
        trials = {k.split("/")[2] for k in keys(s3, "sweeps/s3/trial_") if k.endswith("/model.pth")}
        if len(trials) >= 2:
            break
        assert driver.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.5)
    kill_driver(driver)
    assert "sweeps/s3/leaderboard.csv" not in keys(s3, "sweeps/s3/")
    p = _cli("search.run", "--resume", "--results", results, "--name", "s3", cwd=work)
    return work, before, p, node_cache


def test_a_sweep_on_s3_keeps_its_results_and_mlflow_artifacts_in_the_bucket_nothing_local(s3, s3_sweep, s3_mlflow):
    work, before, p, node_cache = s3_sweep
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert _tree(work) == before  # nothing under the working folder (no results/, no mlflow.db)
    listed = keys(s3, "sweeps/s3/")
    names = {k.removeprefix("sweeps/s3/") for k in listed}
    assert {"leaderboard.csv", "space.yaml", "sweep.json"} <= names
    text = storage.parse(uri(s3, "sweeps/s3/leaderboard.csv")).read_text()
    board = pd.read_csv(io.StringIO(text), dtype={"trial_id": str})
    assert len(board) == 2 and (board["status"] == "finished").all()
    for t in board["trial_id"]:
        trial = [n for n in names if n.startswith(f"trial_{t}/")]
        assert f"trial_{t}/result.json" in trial and f"trial_{t}/params.json" in trial
        assert any(n.endswith("/model.pth") for n in trial), trial  # its best checkpoint, in the bucket
        reports = storage.parse(uri(s3, f"sweeps/s3/trial_{t}/result.json")).read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in reports] == [1, 2, 3]  # each epoch once, across both drivers

    # The dataset was fetched once into the node's cache, and reused (later trials and the resume fetched nothing).
    (copy,) = (node_cache / "data").glob("dup-*")
    fetches = json.loads((copy / ".fetched.json").read_text())["fetches"]
    assert len(fetches) == 1 and fetches[0]["files"] > 0

    # MLflow: the sweep's run and one per trial, their artifacts in the bucket (through the server).
    exp = api(s3_mlflow, "experiments/get-by-name?experiment_name=nucleitune")["experiment"]
    runs = api(s3_mlflow, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    # (The driver may die before Ray's experiment state, uploaded in the background, records the second trial: Ray
    # then runs its configuration again as a new trial, and the first one's run ends KILLED, outside the leaderboard.)
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    trial_runs = [r for r in runs if tags[r["info"]["run_id"]].get("nucleitune.trial_id") in set(board["trial_id"])]
    others = [r for r in runs if r not in trial_runs and r["info"]["run_name"] != "s3"]
    assert len(trial_runs) == 2 and {r["info"]["status"] for r in trial_runs} == {"FINISHED"}
    assert len(others) <= 1 and all(r["info"]["status"] == "KILLED" for r in others), others
    runs = [r for r in runs if r not in others]
    artifacts = keys(s3, "mlartifacts/")
    for run in runs:
        assert any(run["info"]["run_id"] in k for k in artifacts), run["info"]["run_name"]
        if run["info"]["run_name"] != "s3":  # a trial's run: every epoch once, though one trial ran under two drivers
            history = api(s3_mlflow, f"metrics/get-history?run_id={run['info']['run_id']}&metric_key=val_map50")
            assert sorted(m["step"] for m in history["metrics"]) == [1, 2, 3]
    assert any(k.endswith("leaderboard.csv") for k in artifacts)
    assert any(k.endswith("learning_curve.png") for k in artifacts)

    # Credentials never reach a results file, an MLflow param or the driver's output.
    secret = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    assert secret not in p.stdout + p.stderr
    for k in (k for k in listed if not k.endswith("/")):  # pickles (Ray's searcher state, trainer.pth) included
        assert secret.encode() not in storage.parse(uri(s3, k)).read_bytes(), k
    for run in runs:
        assert secret not in json.dumps(run)


def test_export_best_from_the_bucket_writes_a_valid_submission_there(s3, s3_sweep, tmp_path):
    work, _, p, _ = s3_sweep
    assert p.returncode == 0, p.stderr[-3000:]
    out = _cli("search.export", "--best", "--results", uri(s3, "sweeps"), "--name", "s3", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    local = tmp_path / "s3-submission" / "answer.json"
    dets = json.loads(local.read_text())
    assert dets and all(d["segmentation"]["counts"] for d in dets)
    copied = storage.parse(uri(s3, "sweeps/s3/submission/answer.json")).read_text()
    assert json.loads(copied) == dets
    assert "sweeps/s3/submission/answer.zip" in keys(s3, "sweeps/s3/submission/")


@pytest.mark.parametrize(
    "case",
    ["dead-endpoint", "no-bucket", "unknown-scheme", "credentials-in-uri", "no-mlflow-store", "data-missing"],
)
def test_bad_storage_is_one_error_line_exit_2_and_nothing_written(case, s3, s3_data, dup_data, cache_dir, tmp_path):
    space = _space(tmp_path, dup_data, cache_dir, num_samples=1)
    dead = f"127.0.0.1:{free_port()}"
    results, extra = {
        "dead-endpoint": (uri(dead, "sweeps"), ["--mlflow-uri", "off"]),
        "no-bucket": (uri(s3, "sweeps", bucket="no-such-bucket"), ["--mlflow-uri", "off"]),
        "unknown-scheme": ("nosuchfs://bucket/sweeps", ["--mlflow-uri", "off"]),
        "credentials-in-uri": (f"s3://AKIA:{CREDENTIALS['AWS_SECRET_ACCESS_KEY']}@{BUCKET}/sweeps", []),
        "no-mlflow-store": (uri(s3, "sweeps"), []),
        "data-missing": (uri(s3, "sweeps"), ["--mlflow-uri", "off", "--data", uri(s3, "data/none")]),
    }[case]
    before = keys(s3)
    work = tmp_path / "work"
    work.mkdir()
    p = _cli("search.run", "--space", str(space), "--results", results, "--name", "bad", *extra, cwd=work, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    expected = {
        "dead-endpoint": "does not answer",
        "no-bucket": "bucket 'no-such-bucket' does not exist",
        "unknown-scheme": "Unrecognized filesystem type",
        "credentials-in-uri": "credentials do not belong in a URI",
        "no-mlflow-store": "--mlflow-uri",
        "data-missing": "no train/ there",
    }[case]
    assert expected in lines[0], lines[0]
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in p.stderr + p.stdout
    assert keys(s3) == before and list(work.iterdir()) == []


def test_refused_credentials_are_one_error_line(tmp_path):
    """An S3 server that checks credentials (moto with authentication on) refuses unknown ones: one error line."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}  # moto's switch: authenticate every request
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        p = _cli("search.ui", "--results", uri(f"127.0.0.1:{port}", "sweeps"), cwd=tmp_path, timeout=120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "credentials were refused" in lines[0], p.stderr[-2000:]


def test_a_storage_outage_mid_sweep_fails_its_trials_and_resume_continues_them(s3, dup_data, cache_dir, tmp_path):
    """The bucket's server stops once a trial has a checkpoint there and starts again after the driver has ended:
    the trials fail as Ray's do (one retry each), the driver says storage failed and how to go on (exit 1), and
    --resume continues from the bucket: every trial ends once, with each epoch reported once."""
    from moto.server import ThreadedMotoServer

    port, bucket = free_port(), "outage"
    endpoint = f"127.0.0.1:{port}"

    def serve() -> ThreadedMotoServer:  # moto keeps its buckets in this process: a new server on the port has them
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        return server

    server = serve()
    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=bucket)
    space = _space(tmp_path, dup_data, cache_dir, scheduler="fifo", num_samples=2, fixed={"epochs": 3}, max_failures=1)
    results = uri(endpoint, "sweeps", bucket=bucket)
    cmd = ["search.run", "--space", str(space), "--results", results, "--name", "o", "--mlflow-uri", "off"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **CREDENTIALS}
    driver = subprocess.Popen(
        [sys.executable, "-m", *cmd], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 600
        while not any(k.endswith("/model.pth") for k in keys(endpoint, "sweeps/o/trial_", bucket)):
            assert driver.poll() is None and time.time() < deadline, "the driver ended (or no checkpoint in time)"
            time.sleep(0.5)
        server.stop()
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
        server = serve()
    try:
        assert driver.returncode == 1, out[-3000:] + err[-3000:]
        assert "error: storage s3://outage/sweeps/o failed" in err and "--resume --name o" in err, err[-3000:]
        p = _cli("search.run", "--resume", "--results", results, "--name", "o", "--mlflow-uri", "off", cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        text = storage.parse(uri(endpoint, "sweeps/o/leaderboard.csv", bucket)).read_text()
        board = pd.read_csv(io.StringIO(text), dtype={"trial_id": str})
        assert len(board) == 2 and (board["status"] == "finished").all(), board
        for t in board["trial_id"]:
            reports = storage.parse(uri(endpoint, f"sweeps/o/trial_{t}/result.json", bucket)).read_text().splitlines()
            assert [json.loads(r)["epoch"] for r in reports] == [1, 2, 3]
    finally:
        server.stop()


def test_confirm_and_refit_from_the_bucket(s3, s3_sweep, tmp_path):
    _, _, p, _ = s3_sweep
    assert p.returncode == 0, p.stderr[-3000:]
    results = uri(s3, "sweeps")
    confirm = _cli("search.confirm", "--results", results, "--name", "s3", "--top", "1", "--folds", "2", cwd=tmp_path)
    assert confirm.returncode == 0, confirm.stdout[-3000:] + confirm.stderr[-3000:]
    listed = keys(s3, "sweeps/s3/confirm/")
    assert {"sweeps/s3/confirm/jobs.json", "sweeps/s3/confirm/confirm.csv"} <= set(listed)
    assert any(k.endswith("/model.pth") for k in listed)  # the fold's retrain, in the bucket
    best = _cli("search.export", "--best", "--results", results, "--name", "s3", "--out", "c/answer.json", cwd=tmp_path)
    assert best.returncode == 0 and "confirmed winner" in best.stdout, best.stdout[-3000:] + best.stderr[-3000:]

    refit = _cli("search.export", "--best", "--refit", "--results", results, "--name", "s3", cwd=tmp_path)
    assert refit.returncode == 0, refit.stdout[-3000:] + refit.stderr[-3000:]
    listed = keys(s3, "sweeps/s3/refit/")
    assert any(k.endswith("/model.pth") for k in listed) and "sweeps/s3/refit/submission/answer.json" in listed
    assert json.loads((tmp_path / "s3-refit-submission" / "answer.json").read_text())
    assert {p.split("/")[0] for p in _tree(tmp_path)} == {"c", "s3-refit-submission"}  # the two local submissions
