"""Pack (part of) the course dataset into one small file for a machine that cannot read ../shared, and unpack it there.

A GPU machine without network that receives at most 64 MiB per call gets the data this way. The course layout (24
tiles as PNG + 14,598 mask PNGs) does not fit beside the Python wheels, so the bundle holds the tiles as lossless WebP
and the masks as COCO RLE (exact); `unpack` writes the course layout back and checks every tile's pixels against the
SHA-256 recorded at packing time. Nothing is lossy.

python bench/device_bundle.py pack ../shared/data/nuclei .gpu/nuclei.tar --train 12 --test 2
python bench/device_bundle.py unpack .gpu/nuclei.tar /tmp/nuclei
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def _webp(path: Path) -> tuple[bytes, str]:
    img = Image.open(path)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "WEBP", lossless=True, quality=100, method=4)
    return buf.getvalue(), hashlib.sha256(_pixels(img).tobytes()).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(src: Path, dst: Path, n_train: int, n_test: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trainable.data import load_test_index, load_train_records

    records, _ = load_train_records(src)
    step = max(1, len(records) // n_train)
    chosen = records[::step][:n_train]  # spread over the sorted ids (several organs), not the first n
    load_test_index(src)  # checks it
    tests = json.loads(Path(src, "test_img_ids.json").read_text())[:n_test]
    manifest = {"train": [], "test": [], "test_index": []}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dst, "w") as tar:
        for r in chosen:
            data, sha = _webp(Path(r["file_name"]))
            _add(tar, f"train/{r['image_id']}.webp", data)
            masks = [{"file": a["mask_file"], "rle": a["segmentation"]} for a in r["annotations"]]
            manifest["train"].append({"image_id": r["image_id"], "sha256": sha, "masks": masks})
        for t in tests:
            path = Path(src, "test", t["file_name"])
            data, sha = _webp(path)
            _add(tar, f"test/{Path(t['file_name']).stem}.webp", data)
            manifest["test"].append({"file_name": t["file_name"], "sha256": sha})
            manifest["test_index"].append(t)
        _add(tar, "manifest.json.xz", lzma.compress(json.dumps(manifest).encode()))
    n_masks = sum(len(t["masks"]) for t in manifest["train"])
    print(
        f"{dst}: {len(chosen)} training tiles ({n_masks} masks), {len(tests)} test tiles, "
        f"{dst.stat().st_size / 2**20:.1f} MiB"
    )


def _write_image(data: bytes, sha: str, out: Path) -> None:
    img = Image.open(io.BytesIO(data))
    if hashlib.sha256(_pixels(img).tobytes()).hexdigest() != sha:
        raise SystemExit(f"{out}: pixels differ from the packed tile")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def _write_masks(image_dir: Path, masks: list[dict]) -> int:
    from pycocotools import mask as mask_util

    (image_dir / "masks").mkdir(parents=True, exist_ok=True)
    for m in masks:
        rle = {"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode("ascii")}
        Image.fromarray(mask_util.decode(rle) * 255).save(image_dir / "masks" / m["file"])
    return len(masks)


def unpack(bundle: Path, dst: Path) -> None:
    start = time.perf_counter()
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    manifest = json.loads(lzma.decompress(files["manifest.json.xz"]))
    with ProcessPoolExecutor() as pool:
        jobs = []
        for t in manifest["train"]:
            iid = t["image_id"]
            out = dst / "train" / iid / "images" / f"{iid}.png"
            jobs.append(pool.submit(_write_image, files[f"train/{iid}.webp"], t["sha256"], out))
            jobs.append(pool.submit(_write_masks, dst / "train" / iid, t["masks"]))
        for t in manifest["test"]:
            data = files[f"test/{Path(t['file_name']).stem}.webp"]
            jobs.append(pool.submit(_write_image, data, t["sha256"], dst / "test" / t["file_name"]))
        n_masks = sum(j.result() or 0 for j in jobs)
    (dst / "test_img_ids.json").write_text(json.dumps(manifest["test_index"], indent=1))
    print(
        f"{dst}: {len(manifest['train'])} training tiles ({n_masks} masks), {len(manifest['test'])} test tiles, "
        f"pixels checked, {time.perf_counter() - start:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("src", type=Path)
    a.add_argument("dst", type=Path)
    a.add_argument("--train", type=int, default=12, help="training tiles to take (spread over the sorted ids)")
    a.add_argument("--test", type=int, default=2, help="test tiles to take")
    b = sub.add_parser("unpack")
    b.add_argument("bundle", type=Path)
    b.add_argument("dst", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.src, args.dst, args.train, args.test)
    else:
        unpack(args.bundle, args.dst)


if __name__ == "__main__":
    main()
