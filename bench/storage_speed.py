"""The same small sweep with local results and with results and data in object storage, side by side.

    .venv/bin/python bench/storage_speed.py [--num-samples 2] [--epochs 3] [--upload-mb 362]

Object storage is moto's S3 server on 127.0.0.1 (a real S3 API, started here; no network between the nodes and it, so
what is measured is the cost of going through the S3 protocol and pyarrow, not a real link's bandwidth). The sweep is
a FIFO sweep of R18-FPN trials from scratch on one bundled sample tile (one iteration per epoch, a report with a
checkpoint each epoch), run by `python -m search.run` twice: `--results DIR --data DIR`, then
`--results s3://... --data s3://...`. Per side: sweep wall time, reports, the bytes a trial's reports upload (every
report writes its whole checkpoint folder: reports x the folder's size) and what each trial keeps. Then one report's
upload timed alone, with the call Ray Tune persists a checkpoint with (`pyarrow.fs.copy_files` from a local folder to
the storage): the smoke model's checkpoint, and a folder of --upload-mb MB, what one report of the real space's R50-FPN
uploads (model.pth 181 MB + trainer.pth 181 MB: bench/RESULTS.md item 9).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "sample_data" / "nuclei"
TILE = "TCGA-21-5784-01Z-00-DX1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def dataset(root: Path) -> Path:
    """The sample tile and a copy of it (validation), with the sample's test tiles."""
    (root / "train").mkdir(parents=True)
    shutil.copytree(SAMPLE / "train" / TILE, root / "train" / TILE)
    shutil.copytree(SAMPLE / "train" / TILE, root / "train" / "copy")
    (root / "train" / "copy" / "images" / f"{TILE}.png").rename(root / "train" / "copy" / "images" / "copy.png")
    shutil.copytree(SAMPLE / "test", root / "test")
    shutil.copy(SAMPLE / "test_img_ids.json", root / "test_img_ids.json")
    return root


def space(path: Path, data: str, num_samples: int, epochs: int) -> Path:
    doc = {
        "name": "storage",
        "searcher": "random",
        "scheduler": "fifo",
        "num_samples": num_samples,
        "max_concurrent": 1,
        "resources": {"cpu": 2},
        "seed": 0,
        "settings": {"data": data, "split": {"val_ids": ["copy"], "train_ids": [TILE]}, "eval_every": 1},
        "fixed": {
            "backbone": "R18-FPN",
            "weights": "scratch",
            "epochs": epochs,
            "warmup_epochs": 0,
            "decay_epochs": [],
            "crop_size": 128,
            "proposals_train": 500,
            "roi_batch_size": 128,
            "rpn_batch_size": 256,
            "proposals_test": 500,
            "detections_per_image": 300,
            "box_head_fc_dim": 256,
        },
        "params": {"brightness": {"uniform": [0.0, 0.1]}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep(results: str, space_file: Path, cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "search.run", "--space", str(space_file), "--results", results, "--name", "s"]
    p = subprocess.run([*cmd, "--mlflow-uri", "off"], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"sweep failed ({results}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(folder) -> dict:
    """Reports, bytes kept and bytes uploaded per trial of the sweep at `folder` (a trainable.storage.Store)."""
    from search.sweep import Experiment

    exp = Experiment(folder)
    reports, kept, uploaded = [], [], []
    for trial in exp.trial_dirs():
        n = len(exp.reports(exp.trial_id(trial)))
        checkpoints = trial.glob("checkpoint_*")
        sizes = [sum(info.size for _, info in c.files()) for c in checkpoints]
        reports.append(n)
        kept.append(sum(info.size for _, info in trial.files()))
        uploaded.append(n * max(sizes, default=0))  # each report persisted its whole checkpoint folder
    return {"reports": sum(reports), "kept": statistics.mean(kept), "uploaded": statistics.mean(uploaded)}


def time_upload(src: Path, dest, repeats: int) -> float:
    """Median seconds of pyarrow.fs.copy_files(src -> dest), the call Ray Tune persists a report's checkpoint with."""
    import pyarrow.fs as pafs

    times = []
    for i in range(repeats):
        target = dest / f"upload_{i}"
        target.mkdir()  # a local destination needs its folder; on object storage a marker, as Ray's uploads leave
        start = time.perf_counter()
        pafs.copy_files(str(src), target.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest.fs)
        times.append(time.perf_counter() - start)
        target.rmtree()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--upload-mb", type=int, default=362, help="size of the large upload (default: one R50-FPN report)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from trainable import storage

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server: not a line per request
    os.environ.update(CREDENTIALS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="bench")

    def s3(key: str) -> str:
        return f"s3://bench/{key}?endpoint_override={host}:{port}&scheme=http"

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        tmp = Path(tmp)
        data = dataset(tmp / "data")
        storage.parse(s3("data")).upload(data)
        rows = []
        for side, results, data_at in (("local", str(tmp / "results"), str(data)), ("S3", s3("sweeps"), s3("data"))):
            cache = tmp / f"cache-{side}"
            space_file = space(tmp / f"space-{side}.yaml", data_at, args.num_samples, args.epochs)
            wall = sweep(results, space_file, tmp, {**env, "NUCLEITUNE_CACHE": str(cache)})
            rows.append((side, wall, measure(storage.parse(results) / "s")))
        print(f"\nsweep: {args.num_samples} trials x {args.epochs} epochs (a report and a checkpoint each)")
        print(f"{'storage':8} {'wall s':>7} {'reports':>8} {'MB uploaded/trial':>18} {'MB kept/trial':>14}")
        for side, wall, m in rows:
            print(f"{side:8} {wall:7.1f} {m['reports']:8d} {m['uploaded'] / 1e6:18.1f} {m['kept'] / 1e6:14.1f}")

        from search.sweep import Experiment, latest_checkpoint

        ckpt = latest_checkpoint(Experiment(tmp / "results" / "s").trial_dirs()[-1]).local()
        big = tmp / "big"
        big.mkdir()
        (big / "model.pth").write_bytes(os.urandom(args.upload_mb * 1_000_000 // 2))
        (big / "trainer.pth").write_bytes(os.urandom(args.upload_mb * 1_000_000 // 2))
        print(f"\none report's upload (pyarrow.fs.copy_files, median of {args.repeats})")
        print(f"{'folder':28} {'MB':>7} {'local s':>8} {'S3 s':>7} {'S3 MB/s':>8}")
        for name, src in (("smoke checkpoint (R18-FPN)", ckpt), (f"{args.upload_mb} MB (R50-FPN report)", big)):
            mb = sum(f.stat().st_size for f in src.rglob("*") if f.is_file()) / 1e6
            local = time_upload(src, storage.parse(tmp / "uploads"), args.repeats)
            remote = time_upload(src, storage.parse(s3("uploads")), args.repeats)
            print(f"{name:28} {mb:7.1f} {local:8.3f} {remote:7.3f} {mb / remote:8.0f}")
    server.stop()


if __name__ == "__main__":
    main()
