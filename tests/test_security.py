"""Servers the project starts listen on 127.0.0.1 unless asked otherwise."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

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


def test_mlflow_ui_listens_on_loopback_only_logs_to_a_file_and_stops_on_sigterm(tmp_path):
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
            if line.startswith("runs: "):
                break
        url = next((m for m in re.findall(r"http://[\d.]+:\d+", "".join(seen))), None)
        assert url and url.startswith("http://127.0.0.1:"), "".join(seen)[-2000:]
        port = int(url.rsplit(":", 1)[1])
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only, no 0.0.0.0 and no IPv6 wildcard
        urllib.request.urlopen(f"{url}/health", timeout=30).read()  # a request the server logs

        proc.send_signal(signal.SIGTERM)  # as a service manager stops it: the server must go too
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and not _listening(port)
        assert "GET /health" not in "".join(seen) + rest  # access logs go to the file, not the terminal
        assert "GET /health" in (tmp_path / "results" / "mlflow-ui.log").read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group this test started
        except ProcessLookupError:
            pass
