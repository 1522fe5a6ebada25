"""Nuclei dataset in the course layout -> Detectron2 records with RLE masks, cached and validated.

Layout (see the dataset README):
    <root>/train/<id>/images/<id>.png      RGB tile
    <root>/train/<id>/masks/*.png          one binary mask per nucleus (0/255 or 0/1)
    <root>/test/*.png                      test tiles
    <root>/test_img_ids.json               [{file_name, id, height, width}, ...]

Converting 14,598 mask PNGs takes ~75 s on two cores, so each image's annotations are cached, keyed by a fingerprint
of its files (names, sizes, mtimes): a changed, added or removed file re-reads that image only. The cache holds, per
image, the record as JSON (masks as full-image RLE, for COCO evaluation) and its instance masks decoded once, each
inside its box (`<id>-<fingerprint>.npz`, trainable.masks.PackedMasks), which the training mapper crops and flips.
Records carry the latter as `instance_masks`. Trials starting together on a node share the conversion: one process
per dataset converts (a lock file in the cache folder), the others wait and then read its entries; entries are written
atomically (a reader sees a whole file or none), and replacing an image's entry removes only its other fingerprints.

Empty masks (no foreground pixel) are skipped with a warning: they carry no instance, and refusing them would make
one stray blank file block a whole dataset. Every other defect is a DatasetError naming the file.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from trainable.cli import unknown_key
from trainable.fetch import local_dataset
from trainable.files import atomic_write, check_folder, read_document
from trainable.masks import PackedMasks

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: instance masks inside their boxes (.npz) beside each record
MAX_PROCESSES = 8  # conversion processes by default (more gain little on one disk)
# Detectron2's BoxMode.XYWH_ABS (an IntEnum, stable across versions): records are plain JSON, read without torch.
XYWH_ABS = 1
CATEGORY_NAME = "nucleus"


class DatasetError(ValueError):
    """A problem with the dataset folder; the message names the file."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("NUCLEITUNE_CACHE", Path.home() / ".cache" / "nucleitune"))


# ---------------------------------------------------------------------------------------------------------------
# Reading and validating files


def _unreadable(path: Path, e: Exception) -> DatasetError:
    """One short line: PIL's messages often repeat the path."""
    reason = " ".join(str(e).replace(f"'{path}'", "").replace(str(path), "").split())[:100]
    return DatasetError(f"{path}: unreadable PNG ({type(e).__name__}{': ' + reason if reason else ''})")


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im)
    except Exception as e:  # PIL raises several types for truncated or non-image files
        raise _unreadable(path, e) from None


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, reading only its header."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w
    except Exception as e:
        raise _unreadable(path, e) from None


def _image_dir_files(image_dir: Path) -> tuple[Path, list[Path]]:
    """The image file and the sorted mask files of one training image folder, checked for presence."""
    image_id = image_dir.name
    image_file = image_dir / "images" / f"{image_id}.png"
    mask_dir = image_dir / "masks"
    if not image_file.is_file():
        raise DatasetError(f"{image_file}: missing image (expected images/{image_id}.png)")
    if not mask_dir.is_dir():
        raise DatasetError(f"{mask_dir}: missing masks folder")
    masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png")
    if not masks:
        raise DatasetError(f"{mask_dir}: image {image_id} has no mask PNG")
    return image_file, masks


def _fingerprint(files: Sequence[Path], root: Path) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def convert_image(image_dir: Path) -> tuple[dict, PackedMasks]:
    """Read one training image folder: a Detectron2 record (annotations as RLE; boxes and areas from the masks) and
    the same masks, each inside its box."""
    image_file, mask_files = _image_dir_files(image_dir)
    height, width = _image_size(image_file)
    annotations, skipped, boxes, patches = [], [], [], []
    for mf in mask_files:
        m = _read_png(mf)
        if m.ndim == 3:  # a mask saved as RGB(A): every channel must agree
            if not all(np.array_equal(m[..., 0], m[..., c]) for c in range(1, min(3, m.shape[2]))):
                raise DatasetError(f"{mf}: mask is not binary (colour channels differ)")
            m = m[..., 0]
        if m.shape != (height, width):
            raise DatasetError(f"{mf}: mask size {m.shape[1]}x{m.shape[0]} differs from image {width}x{height}")
        if m.dtype == bool:
            m = m.view(np.uint8)
        if m.dtype.kind not in "ui":
            raise DatasetError(f"{mf}: mask is not binary (pixel type {m.dtype})")
        values = np.flatnonzero(np.bincount(m.ravel()))  # ~10x faster than np.unique on 1000x1000 masks
        if len(values) > 2 or (len(values) == 2 and values[0] != 0):
            raise DatasetError(f"{mf}: mask is not binary (values {values[:5].tolist()}...)")
        if values.max() == 0:
            skipped.append(str(mf))
            continue
        rle = mask_util.encode(np.asfortranarray(m > 0))
        x, y, w, h = mask_util.toBbox(rle).tolist()
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
        boxes.append((x0, y0, x1, y1))
        patches.append(m[y0:y1, x0:x1] > 0)
        annotations.append(
            {
                "bbox": [x, y, w, h],
                "bbox_mode": XYWH_ABS,
                "category_id": 0,
                "segmentation": rle,
                "area": float(mask_util.area(rle)),
                "iscrowd": 0,
                "mask_file": mf.name,
            }
        )
    record = {
        "file_name": str(image_file.resolve()),
        "image_id": image_dir.name,
        "height": height,
        "width": width,
        "annotations": annotations,
        "skipped_empty_masks": skipped,
    }
    return record, PackedMasks.from_patches(boxes, patches)


# ---------------------------------------------------------------------------------------------------------------
# The cached training set


def train_image_dirs(root: Path, subdir: str = "train") -> list[Path]:
    train = Path(root) / subdir
    check_folder(root, DatasetError, "the dataset")
    if not Path(root).is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if not train.is_dir():
        raise DatasetError(f"{train}: missing train folder (expected train/<id>/images and train/<id>/masks)")
    dirs = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DatasetError(f"{train}: no image folders")
    return dirs


def _cache_path(cache_dir: Path, image_dir: Path, fp: str) -> Path:
    return cache_dir / "annotations" / f"{image_dir.name}-{fp}.json"


def _read_cached(path: Path) -> dict | None:
    """The cached record at `path` (.json) with its masks (.npz), or None where either is missing."""
    try:
        return {**json.loads(path.read_text()), "instance_masks": PackedMasks.load(path.with_suffix(".npz"))}
    except FileNotFoundError:  # not converted yet, or just replaced by another dataset's version of this image
        return None


def _remove_stale(path: Path) -> None:
    """Remove the image's cache entries with other fingerprints than `path`'s (<id>-<fingerprint>.json/.npz): never
    the current one, which another process may have just written, nor those of ids that merely start with this one."""
    image_id = path.stem.rsplit("-", 1)[0]
    entry = re.compile(re.escape(image_id) + r"-[0-9a-f]{16}\.(json|npz)")
    for f in path.parent.glob(f"{glob.escape(image_id)}-*"):
        if f.stem != path.stem and entry.fullmatch(f.name):
            f.unlink(missing_ok=True)


def _default_processes() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count), at most MAX_PROCESSES."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, MAX_PROCESSES))


@contextmanager
def _conversion_lock(cache_dir: Path, dataset: Path) -> Iterator[None]:
    """Held while converting `dataset` into `cache_dir`: other processes converting it wait (they then read what the
    holder wrote). A lock file per dataset in the cache folder, kept (removing it would race with its waiters)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # as multiprocessing's own check
        # A conversion process re-running its parent's unguarded main script: the parent holds the lock (a hang).
        raise RuntimeError("load_train_records in a script's top level: put it under `if __name__ == '__main__':`")
    folder = cache_dir / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(str(dataset.resolve()).encode()).hexdigest()[:16]
    with open(folder / f".convert-{key}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process converting the masks of %s", dataset)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert(dirs: list[Path], workers: int | None) -> list[tuple[dict, PackedMasks]]:
    """convert_image of each folder, in `workers` processes (default: _default_processes()), at most one per folder."""
    if not dirs:
        return []
    n = min(workers or _default_processes(), len(dirs))
    logger.info("converting masks of %d image(s) with %d process(es)", len(dirs), n)
    # On stdout, on a terminal only: stderr carries errors (one line each), and logs do not want the redraws.
    bar = {"total": len(dirs), "desc": "converting masks (once; cached)", "unit": "image"}
    bar.update(file=sys.stdout, disable=None)
    if n == 1:
        return [convert_image(d) for d in tqdm(dirs, **bar)]
    # "spawn": fresh interpreters; forking a threaded process (a Ray actor: gRPC, logging threads) can deadlock.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(tqdm(pool.map(convert_image, dirs), **bar))


@dataclass
class LoadStats:
    images: int = 0
    instances: int = 0
    converted: list[str] = field(default_factory=list)  # image ids read from the PNGs (cache misses)
    skipped_empty_masks: list[str] = field(default_factory=list)


def load_train_records(
    root: str | Path, cache_dir: str | Path | None = None, workers: int | None = None, subdir: str = "train"
) -> tuple[list[dict], LoadStats]:
    """All training records, from the cache where the files are unchanged; misses are converted in parallel.

    `workers` is the number of conversion processes (a trial passes its CPUs; default: the CPUs this process may use,
    at most MAX_PROCESSES; never more than the misses). While one process converts a dataset into a cache folder,
    others loading it wait, then read its entries. `subdir` is the folder of <id>/images + <id>/masks under root (""
    when root itself is that folder). A dataset on object storage (s3://, gs://) is read from this node's copy
    (trainable.fetch)."""
    given = "settings.cache_dir" if cache_dir else "$NUCLEITUNE_CACHE" if "NUCLEITUNE_CACHE" in os.environ else None
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    check_folder(cache_dir, DatasetError, f"the annotation cache{f', {given}' if given else ''}")
    root = local_dataset(root, cache_dir)
    stats = LoadStats()
    dirs = train_image_dirs(root, subdir)
    records: dict[str, dict] = {}
    misses: list[tuple[Path, Path]] = []
    for d in dirs:
        image_file, masks = _image_dir_files(d)
        path = _cache_path(cache_dir, d, _fingerprint([image_file, *masks], root))
        cached = _read_cached(path)
        if cached is not None:
            records[d.name] = cached
        else:
            misses.append((d, path))
    if misses:
        with _conversion_lock(cache_dir, root / subdir):
            waited_for = {d.name: rec for d, path in misses if (rec := _read_cached(path)) is not None}
            records.update(waited_for)  # converted by another process while this one waited for the lock
            misses = [(d, path) for d, path in misses if d.name not in waited_for]
            for (d, path), (rec, packed) in zip(misses, _convert([d for d, _ in misses], workers), strict=True):
                atomic_write(path.with_suffix(".npz"), packed.save)
                atomic_write(path, lambda p, rec=rec: p.write_text(json.dumps(rec)))  # last: it marks the entry whole
                _remove_stale(path)
                records[d.name] = {**rec, "instance_masks": packed}
                stats.converted.append(d.name)
    out = [records[d.name] for d in dirs]
    for rec in out:
        # Paths are stored resolved at conversion; a moved dataset with unchanged files keeps its cache.
        rec["file_name"] = str((root / subdir / rec["image_id"] / "images" / f"{rec['image_id']}.png").resolve())
        stats.skipped_empty_masks += rec.get("skipped_empty_masks", [])
    for f in stats.skipped_empty_masks:
        logger.warning("%s: empty mask skipped", f)
    stats.images = len(out)
    stats.instances = sum(len(r["annotations"]) for r in out)
    return out, stats


def dataset_fingerprint(root: str | Path) -> str:
    """One short hash over every training and test file (names, sizes, mtimes)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return _fingerprint(files, root)


# ---------------------------------------------------------------------------------------------------------------
# Splits


@dataclass(frozen=True)
class Split:
    """How to split training images into train / validation, by image id; deterministic for a given seed.

    Exactly one of: `val` (number of validation images), `val_ids` (explicit ids), or `folds` with `fold`.
    `train_ids` optionally restricts training to a subset (small runs, tests).
    """

    val: int | None = None
    val_ids: tuple[str, ...] | None = None
    folds: int | None = None
    fold: int = 0
    seed: int = 0
    train_ids: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> Split:
        if d is not None and not isinstance(d, dict):
            raise DatasetError(f"split: expected a mapping (val, val_ids or folds), got {d!r}"[:200])
        d = dict(d or {"val": 4})
        keys = ("val", "val_ids", "folds", "fold", "seed", "train_ids")
        unknown = set(d) - set(keys)
        if unknown:
            raise DatasetError(f"split: {unknown_key('key', unknown, keys, 'use ' + ', '.join(keys))}")
        for k in ("val_ids", "train_ids"):
            if d.get(k) is not None:
                d[k] = tuple(str(x) for x in d[k])
        given = [k for k in ("val", "val_ids", "folds") if d.get(k) is not None]
        if len(given) != 1:
            raise DatasetError("split needs exactly one of: val (count), val_ids (list), folds (with fold)")
        return cls(**d)

    def apply(self, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        ids = sorted(ids)
        known = set(ids)
        if self.val_ids is not None:
            missing = [i for i in self.val_ids if i not in known]
            if missing:
                raise DatasetError(f"split: validation id(s) not in the dataset: {missing}")
            val = list(self.val_ids)
        else:
            shuffled = ids.copy()
            random.Random(self.seed).shuffle(shuffled)
            if self.folds is not None:
                if not (2 <= self.folds <= len(ids)) or not (0 <= self.fold < self.folds):
                    raise DatasetError(f"split: need 2 <= folds <= {len(ids)} and 0 <= fold < folds")
                val = shuffled[self.fold :: self.folds]
            else:
                if not (0 < self.val < len(ids)):
                    raise DatasetError(f"split: val must be between 1 and {len(ids) - 1} (dataset has {len(ids)})")
                val = shuffled[: self.val]
        train = [i for i in ids if i not in set(val)]
        if self.train_ids is not None:
            missing = [i for i in self.train_ids if i not in known]
            if missing:
                raise DatasetError(f"split: training id(s) not in the dataset: {missing}")
            train = [i for i in train if i in set(self.train_ids)]
        if not train:
            raise DatasetError("split: no training image left")
        return train, sorted(val)


# ---------------------------------------------------------------------------------------------------------------
# Fixed crops (small validation tiles for fast evaluation on CPU)


def crop_record(record: dict, size: int, out_dir: Path) -> dict:
    """A centre crop of `record` (image written under out_dir), annotations re-encoded inside the crop."""
    h, w = record["height"], record["width"]
    ch, cw = min(size, h), min(size, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(record["file_name"]).stem
    image_out = out_dir / f"{stem}_crop{size}_{y0}_{x0}.png"
    if not image_out.is_file():
        image = _read_png(Path(record["file_name"]))
        tmp = image_out.with_suffix(f".tmp{os.getpid()}.png")
        Image.fromarray(image[y0 : y0 + ch, x0 : x0 + cw]).save(tmp)
        os.replace(tmp, image_out)
    annotations = []
    for ann in record["annotations"]:
        bx, by, bw, bh = ann["bbox"]
        if bx >= x0 + cw or by >= y0 + ch or bx + bw <= x0 or by + bh <= y0:
            continue
        m = mask_util.decode(ann["segmentation"])[y0 : y0 + ch, x0 : x0 + cw]
        if not m.any():
            continue
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {**ann, "segmentation": rle, "bbox": mask_util.toBbox(rle).tolist(), "area": float(mask_util.area(rle))}
        )
    rest = {k: v for k, v in record.items() if k != "instance_masks"}  # training-only, in the uncropped frame
    return {**rest, "file_name": str(image_out), "height": ch, "width": cw, "annotations": annotations}


# ---------------------------------------------------------------------------------------------------------------
# Test tiles


def load_test_index(root: str | Path, cache_dir: str | Path | None = None) -> list[dict]:
    """Entries of test_img_ids.json, each checked against its file: [{file_name (absolute), id, height, width}]; a
    dataset on object storage from this node's copy (trainable.fetch)."""
    root = local_dataset(root, cache_dir)
    index = root / "test_img_ids.json"
    entries = read_document(index, DatasetError)
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{index}: expected a non-empty list of {{file_name, id, height, width}}")
    out, seen = [], set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"file_name", "id", "height", "width"} <= set(e):
            raise DatasetError(f"{index}: entry {i} needs file_name, id, height and width")
        if e["id"] in seen:
            raise DatasetError(f"{index}: duplicate id {e['id']}")
        seen.add(e["id"])
        path = root / "test" / e["file_name"]
        if not path.is_file():
            raise DatasetError(f"{index}: entry {i} ({e['file_name']}): no file {path}")
        h, w = _image_size(path)
        if (h, w) != (e["height"], e["width"]):
            raise DatasetError(
                f"{index}: entry {i} ({e['file_name']}) says {e['width']}x{e['height']}, the file is {w}x{h}"
            )
        out.append({**e, "file_name": str(path.resolve())})
    return out
