"""A dataset on object storage (--data s3://bucket/nuclei) as a folder on this node's disk: fetched once per node.

The copy lives in the node's cache (settings.cache_dir, $NUCLEITUNE_CACHE or ~/.cache/nucleitune) under
data/<name>-<hash of the URI>/. One process per node fetches (a lock file beside the copy); the trials that start
meanwhile wait for it and then find nothing to fetch. A later fetch lists the objects again and downloads only those
whose size or modification time changed (and removes what is gone), so an unchanged dataset costs one listing. Each
file is written aside and renamed, with the object's modification time, so the annotation cache keyed on names,
sizes and mtimes (trainable.data) stays valid across fetches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from trainable import storage

MANIFEST = ".fetched.json"  # {"source", "files": {relative path: [size, mtime_ns]}, "fetches": [...]}


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        yield


def copy_folder(uri: str, cache_dir: str | Path) -> Path:
    """Where the node-local copy of the dataset at `uri` lives (fetched or not)."""
    place = storage.parse(uri)
    digest = hashlib.sha256(str(place).encode()).hexdigest()[:10]
    return Path(cache_dir) / "data" / f"{place.name}-{digest}"


def local_dataset(data: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The dataset at `data` as a local folder: `data` itself, or the node's copy of it, brought up to date (see the
    module's docstring). One DatasetError naming the location where it cannot be read."""
    from trainable.data import DatasetError, default_cache_dir

    if not storage.is_remote(data):
        return Path(data)
    try:
        return _fetch(storage.parse(data), copy_folder(str(data), cache_dir or default_cache_dir()))
    except storage.StorageError as e:
        raise DatasetError(str(e)) from None


def _fetch(place: storage.Store, root: Path) -> Path:
    with _lock(root.parent / f".{root.name}.lock"):
        manifest_file = root / MANIFEST
        try:
            manifest = json.loads(manifest_file.read_text())
        except (OSError, ValueError):
            manifest = {"files": {}, "fetches": []}
        try:
            listed = {rel: [info.size, info.mtime_ns] for rel, info in place.files()}
        except OSError as e:
            raise storage.StorageError(f"{place}: cannot list the dataset ({e})") from None
        if not listed:
            raise storage.StorageError(f"{place}: no files there (--data)")
        have = manifest.get("files", {})
        todo = [rel for rel, stamp in listed.items() if have.get(rel) != stamp or not (root / rel).is_file()]
        start, fetched_bytes = time.perf_counter(), 0
        for rel in todo:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part")
            data_bytes = (place / rel).read_bytes()
            tmp.write_bytes(data_bytes)
            mtime_ns = listed[rel][1] or time.time_ns()
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, dest)
            fetched_bytes += len(data_bytes)
        for rel in set(have) - set(listed):
            (root / rel).unlink(missing_ok=True)
        if todo or set(have) != set(listed):
            manifest["fetches"] = [*manifest.get("fetches", []), {"files": len(todo), "bytes": fetched_bytes}]
            manifest.update(source=str(place), files=listed)
            root.mkdir(parents=True, exist_ok=True)
            tmp = manifest_file.with_name(MANIFEST + ".part")
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, manifest_file)
            print(
                f"data: fetched {len(todo)} file(s), {fetched_bytes / 1e6:.1f} MB, from {place} into {root} "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
    return root
