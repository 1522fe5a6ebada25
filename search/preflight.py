"""Checks a sweep makes on the driver before Ray starts, so that what would fail every trial, or hang, fails once:
the cluster address, the machine's CPUs and GPUs (local Ray), the weights (fetched into the cache), the test index.

Each problem is a UsageError (one `error:` line, exit 2, nothing written); the test index only warns.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
from pathlib import Path

from search.space import Space, corners
from search.sweep import UsageError
from trainable.config import ConfigError, resolve_weights
from trainable.data import DatasetError, load_test_index

CONNECT_TIMEOUT_S = 5
FETCH_TIMEOUT_S = 60


def probe_address(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) must accept a connection within seconds; Ray itself would retry for minutes.
    'auto' is left to ray.init, which finds a local cluster or fails at once."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--address {address}: expected auto or HOST:PORT (the head node's GCS port, e.g. :6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def check_machine(space: Space, path: str | Path) -> None:
    """On a local Ray, a trial must fit on this machine (else it waits PENDING forever)."""
    import torch

    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    cpu, gpu = space.resources["cpu"], space.resources["gpu"]
    if cpu > cpus or gpu > gpus:
        raise UsageError(
            f"{path}: resources: a trial asks {cpu:g} CPU(s) and {gpu:g} GPU(s), this machine has {cpus} CPU(s) and "
            f"{gpus} GPU(s): use --cpus-per-trial / --gpus-per-trial (e.g. --gpus-per-trial 0), a smaller space, or "
            "--address to run on a Ray cluster"
        )


def fetch_weights(space: Space, path: str | Path) -> None:
    """Every model-zoo file the space's trials would load, downloaded once into Detectron2's cache (trials then find
    it there); a local file must exist (checked with the space)."""
    from detectron2.utils.file_io import PathManager

    pairs = {(hp["backbone"], str(hp["weights"])) for hp in map(space.hparams, corners(space))}
    for backbone, weights in sorted(pairs):
        try:
            url = resolve_weights(weights, backbone)
        except ConfigError as e:
            raise UsageError(f"{path}: {e}") from None
        if "://" not in url:
            continue
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(FETCH_TIMEOUT_S)  # a download that stalls fails instead of hanging
        # iopath prints a progress bar and its own failure message: the user gets one line from us instead.
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                PathManager.get_local_path(url)
        except Exception as e:  # noqa: BLE001 - any download failure
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:160]
            raise UsageError(
                f"{path}: weights {weights} for {backbone}: cannot fetch {url} ({reason}); offline, use weights: "
                "scratch or a local file"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)


def warn_test_index(data: str | Path, cache_dir: str | None = None) -> None:
    """A sweep does not read the test tiles, but its export will: say now, in one line, if they cannot be read."""
    try:
        load_test_index(data, cache_dir)
    except DatasetError as e:
        print(f"warning: {e} (the sweep goes on; search.export will need it)", file=sys.stderr, flush=True)
