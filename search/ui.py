"""Open the MLflow UI on a sweep's tracking store.

    python -m search.ui [--name SWEEP] [--results results] [--port 5000]

Starts `mlflow server` bound to 127.0.0.1 (job execution off: 2 processes, ~0.5 GB; its log in RESULTS/mlflow-ui.log)
and prints the URLs of the sweep's runs table and charts, in the model-training view. Ctrl-C, SIGTERM or SIGHUP stop
it and its server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from trainable.cli import OneLineParser
from trainable.metrics import SCORE


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(uri: str, host: str, port: int, artifacts: str | Path | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifacts is not None:
        cmd += ["--artifacts-destination", str(artifacts)]
    return cmd


def server_env() -> dict:
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} not ready after {timeout:.0f} s")


def sweep_pages(url: str, parent_run_id: str | None) -> tuple[str, str | None]:
    """(runs table, charts) of a sweep on the MLflow server at `url`, in the model-training view: the sweep's saved
    view (its trials, best score first, with status, score, its epoch, device-hours and every searched hyperparameter
    as columns; search.tracking saves it), else a filtered, sorted table with MLflow's default columns."""
    from search.sweep import EXPERIMENT, VIEW_TAG_PREFIX, view_key

    api = f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    try:
        with urllib.request.urlopen(api, timeout=10) as r:
            experiment = json.load(r)["experiment"]
    except OSError:  # no experiment yet (the sweep logged nothing): the UI's home page
        return url, None
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    base = f"{url}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning"
    if parent_run_id and f"{VIEW_TAG_PREFIX}{view_key(parent_run_id)}" in tags:
        # The view's own filter and order: any such parameter in the URL would make the UI ignore the saved view.
        table = f"{base}&viewStateShareKey={view_key(parent_run_id)}"
        return table, f"{table}&compareRunsMode=CHART"
    query = {"orderByKey": f"metrics.`{SCORE}`", "orderByAsc": "false"}
    if parent_run_id:
        query["searchFilter"] = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return f"{base}&{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}", None


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP end the UI as Ctrl-C does: its server goes with it


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m search.ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", help="sweep (default: the latest in RESULTS)")
    p.add_argument(
        "--results", default="results", help="folder or s3:// gs:// location of sweeps (default: %(default)s)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default: %(default)s; 0 = any free port)")
    args = p.parse_args(argv)
    from search.sweep import Sweep, UsageError  # after --help: it loads pyarrow (object storage)

    try:
        sweep = Sweep.open(args.results, args.name)
        saved = sweep.saved(needs=())  # the MLflow store is all the UI needs
        uri = saved.get("mlflow_uri", "off")
        if uri == "off":
            raise UsageError(f"{sweep.folder}: this sweep ran with MLflow off")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parent = saved.get("mlflow_parent_run_id")
    if not uri.startswith("sqlite"):  # a tracking server: its pages
        table, charts = sweep_pages(uri.rstrip("/"), parent)
        print(f"this sweep logs to the tracking server {uri}:\nruns: {table}")
        if charts:
            print(f"charts: {charts}")
        return 0
    port = args.port or free_port(args.host)
    url = f"http://{args.host}:{port}"
    log_path = sweep.results.local() / "mlflow-ui.log"  # a SQLite store: the sweeps are on this machine
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            server_command(uri, args.host, port, sweep.artifact_root(uri)),
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(url, proc)
            table, charts = sweep_pages(url, parent)
            print(f"MLflow UI (sweep {sweep.name}):\nruns: {table}", flush=True)
            if charts:
                print(f"charts: {charts}", flush=True)
            print(f"(server log: {log_path}; Ctrl-C to stop)", flush=True)
            proc.wait()
        except KeyboardInterrupt:
            pass
        except RuntimeError as e:
            print(f"error: {e} (see {log_path})", file=sys.stderr)
            return 1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
