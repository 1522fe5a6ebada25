"""Servers the project starts listen on 127.0.0.1 unless asked otherwise."""

import json
import os
import re
import signal
import subprocess
import sys

from tests.conftest import ROOT


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


def test_mlflow_ui_listens_on_loopback_only(tmp_path):
    sweep = tmp_path / "results" / "s"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}))
    (sweep / "space.yaml").write_text("name: s\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.ui", "--results", str(tmp_path / "results"), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "MLflow UI:" in line:
                break
        url = next((m for m in re.findall(r"http://[\d.]+:\d+", "".join(seen))), None)
        assert url and url.startswith("http://127.0.0.1:"), "".join(seen)[-2000:]
        port = int(url.rsplit(":", 1)[1])
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only, no 0.0.0.0 and no IPv6 wildcard
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does; search.ui stops its server
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group this test started
        except ProcessLookupError:
            pass
