"""A two-node Ray cluster on loopback, started by the test with `ray start` (token authentication on), whose nodes
share no disk: each has its own cache and Ray temp folder, the results and the dataset are in object storage (moto's
S3 server on loopback). A sweep joins it with --address, runs trials on both nodes, survives the worker node being
killed mid-trial (its trial resumes on the head from the bucket), and the test tears down only the processes it
started."""

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from search.sweep import reports as trial_reports
from search.ui import free_port
from tests.conftest import CREDENTIALS, DUP_TILE, ROOT, uri
from tests.conftest import sweep_space as _space
from trainable import storage

RAY = str(Path(sys.executable).parent / "ray")


class Node:
    """One `ray start` in a process group of its own: its raylet, agents and trial workers inherit that group."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen(
            [RAY, "start", *args], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, out.decode()[-3000:]
        self.pgid = self.proc.pid  # the daemons outlive `ray start` but keep its process group

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def cluster(tmp_path):
    env = {
        **os.environ,
        **CREDENTIALS,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port = free_port()
    # Each node's own temp folder (short: Ray's unix socket paths have a length limit) and cache (trials inherit it).
    temps = {n: Path(tempfile.mkdtemp(prefix=f"nt-ray-{n}-", dir="/tmp")) for n in ("head", "worker")}
    caches = {"head": tmp_path / "head-cache", "worker": tmp_path / "worker-cache"}
    # Per-node limits: 1 CPU, 3 GiB of task memory and a 200 MB object store each (both nodes share one machine).
    common = ["--num-cpus=1", "--memory=3221225472", "--object-store-memory=200000000", "--node-ip-address=127.0.0.1"]
    nodes = []
    try:
        head_env, worker_env = ({**env, "NUCLEITUNE_CACHE": str(caches[n])} for n in ("head", "worker"))
        head_args = ["--head", f"--port={port}", f"--temp-dir={temps['head']}", "--include-dashboard=false"]
        nodes.append(Node([*head_args, *common], head_env))
        worker_args = [f"--address=127.0.0.1:{port}", f"--temp-dir={temps['worker']}", '--resources={"worker_node": 1}']
        nodes.append(Node([*worker_args, *common], worker_env))
        yield {
            "address": f"127.0.0.1:{port}",
            "env": head_env,  # the driver runs on the head's machine
            "caches": caches,
            "temps": temps,
            "worker_node_id": _worker_node_id(f"127.0.0.1:{port}", env),
            "kill_worker": nodes[1].kill,
        }
    finally:
        for node in nodes:
            node.kill()
        for temp in temps.values():
            shutil.rmtree(temp, ignore_errors=True)


def _worker_node_id(address: str, env: dict) -> str:
    """The node id of the node started with the worker_node resource (asked through Ray, with the token)."""
    code = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print([n['NodeID'] for n in ray.nodes() if n['Alive'] and 'worker_node' in n['Resources']][0])"
    )
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


def test_two_node_cluster_without_a_shared_disk_survives_losing_the_worker_node(cluster, s3, s3_data, tmp_path):
    worker_id = cluster["worker_node_id"]
    # Two trials of 4 one-iteration epochs, 1 CPU each: one fits on each node. One retry per trial. No cache_dir:
    # each node's own ($NUCLEITUNE_CACHE), where it fetches the dataset from the bucket.
    space = _space(
        tmp_path,
        s3_data,
        None,
        searcher="random",
        scheduler="fifo",
        num_samples=2,
        max_concurrent=2,
        max_failures=1,
        resources={"cpu": 1},
        fixed={"epochs": 4},
        settings={"data": s3_data, "split": {"val_ids": ["copy"], "train_ids": [DUP_TILE]}, "eval_every": 1},
    )
    results = uri(s3, "cluster")
    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", results, "--name", "c"]
    cmd += ["--mlflow-uri", "off"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        [*cmd, "--address", cluster["address"]], cwd=ROOT, env=cluster["env"], stdout=log, stderr=subprocess.STDOUT
    )
    folder = storage.parse(results) / "c"

    def placed() -> dict:
        """trial dir -> 'head' / 'worker' for the trials that have reported, by the node id of their first report."""
        return {
            d: "worker" if reps[0]["node_id"] == worker_id else "head"
            for d in folder.glob("trial_*")
            if (reps := trial_reports(d))
        }

    try:
        # Wait until both trials have reported (and checkpointed) at least one epoch, then kill the worker node.
        deadline = time.time() + 600
        while time.time() < deadline and len(placed()) < 2:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.5)
        where = placed()
        assert sorted(where.values()) == ["head", "worker"], where  # trials ran on both nodes
        victim = next(d for d, node in where.items() if node == "worker")
        epochs_before = len(trial_reports(victim))
        assert epochs_before < 4 and list(victim.glob("checkpoint_*"))  # mid-trial, with a checkpoint
        cluster["kill_worker"]()
        assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-4000:]
    finally:
        if driver.poll() is None:
            driver.kill()

    board = pd.read_csv(io.StringIO((folder / "leaderboard.csv").read_text()))
    assert len(board) == 2 and (board["status"] == "finished").all() and (board["epochs_run"] == 4).all()
    # The victim resumed on the head from its checkpoint: later reports come from a head process, its log says so.
    after = trial_reports(victim)[epochs_before:]
    assert after and all(r["node_id"] != worker_id for r in after)
    assert [r["epoch"] for r in trial_reports(victim)][-1] == 4
    resumed = " ".join(p.read_text() for p in victim.glob("trial-resumed-*.log"))
    assert "resumed from" in resumed
    assert "error.txt" in {p.name for p in victim.children()}  # Ray recorded the node failure
    # Each node's raylet kept its session in its own temp folder.
    for node, temp in cluster["temps"].items():
        assert list(temp.glob("session_*/logs/raylet.out")), node
    # Each node fetched the dataset into its own cache, once (its later trials, and the head's resumed one, reused it).
    for node, cache in cluster["caches"].items():
        (copy,) = (cache / "data").glob("dup-*")
        assert len(json.loads((copy / ".fetched.json").read_text())["fetches"]) == 1, node
