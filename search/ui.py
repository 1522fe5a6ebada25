"""Open the MLflow UI on a sweep's tracking store.

    python -m search.ui [--name SWEEP] [--results results] [--port 5000]

Starts `mlflow server` bound to 127.0.0.1 (job execution off: 2 processes, ~0.5 GB) and prints the URL of the
sweep's runs. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from search.sweeps import UsageError, check_name, latest_sweep, read_settings
from trainable.cli import OneLineParser
from trainable.metrics import SCORE


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(uri: str, host: str, port: int, artifacts: Path | None) -> list[str]:
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


def sweep_page(url: str, parent_run_id: str | None) -> str:
    """The runs table with the sweep's trials only, best trial score first (a filter also un-nests the child runs)."""
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=nucleitune")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
    except OSError:  # no experiment yet (the sweep logged nothing): the UI's home page
        return url
    query = {"orderByKey": f"metrics.`{SCORE}`", "orderByAsc": "false"}
    if parent_run_id:
        query["searchFilter"] = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return f"{url}/#/experiments/{exp_id}/runs?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(
        prog="python -m search.ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", help="sweep (default: the latest in RESULTS)")
    p.add_argument("--results", default="results", help="folder of sweeps (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default: %(default)s; 0 = any free port)")
    args = p.parse_args(argv)
    results = Path(args.results).resolve()
    try:
        folder = results / (check_name(args.name) or latest_sweep(results))
        saved = read_settings(folder)
        uri = saved.get("mlflow_uri", "off")
        if uri == "off":
            raise UsageError(f"{folder}: this sweep ran with MLflow off")
        if not uri.startswith("sqlite"):
            print(f"this sweep logs to the tracking server {uri}: open it there")
            return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    port = args.port or free_port(args.host)
    url = f"http://{args.host}:{port}"
    proc = subprocess.Popen(server_command(uri, args.host, port, results / "mlartifacts"), env=server_env())
    try:
        wait_ready(url, proc)
        print(f"MLflow UI: {sweep_page(url, saved.get('mlflow_parent_run_id'))}\n(Ctrl-C to stop)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
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
