import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from tests.conftest import ROOT, SMALL_IDS, make_subset
from trainable import data as data_module
from trainable.data import DatasetError, Split, crop_record, load_test_index, load_train_records


def test_annotations_equal_mask_files(small_data, cache_dir):
    records, stats = load_train_records(small_data, cache_dir)
    assert [r["image_id"] for r in records] == sorted(SMALL_IDS)
    for rec in records:
        mask_files = sorted((small_data / "train" / rec["image_id"] / "masks").glob("*.png"))
        assert len(rec["annotations"]) == len(mask_files) > 100
        assert (rec["height"], rec["width"]) == (1000, 1000)
        for ann, mf in zip(rec["annotations"], mask_files, strict=True):
            expected = np.asarray(Image.open(mf)) > 0
            decoded = mask_util.decode(ann["segmentation"]).astype(bool)
            assert np.array_equal(decoded, expected), mf
            ys, xs = np.nonzero(expected)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == expected.sum()
    assert stats.instances == sum(len(r["annotations"]) for r in records)
    # Records carry Detectron2's box mode as the number it is (trainable.data.XYWH_ABS: the drivers read them
    # without torch): the same box mode Detectron2 reads.
    from detectron2.structures import BoxMode

    assert {ann["bbox_mode"] for rec in records for ann in rec["annotations"]} == {BoxMode.XYWH_ABS}


def test_cache_used_then_invalidated_by_a_changed_file(shared_data, tmp_path):
    data = make_subset(shared_data, tmp_path / "data", SMALL_IDS[:2], copy=True)
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    first, stats = load_train_records(data, cache)
    cold = time.perf_counter() - t0
    assert sorted(stats.converted) == sorted(SMALL_IDS[:2])

    t0 = time.perf_counter()
    second, stats = load_train_records(data, cache)
    warm = time.perf_counter() - t0
    assert stats.converted == [] and second == first
    assert warm < cold

    # Erase one nucleus from one mask: only that image is re-read, and the change shows.
    changed_id = SMALL_IDS[1]
    mask_file = sorted((data / "train" / changed_id / "masks").glob("*.png"))[0]
    m = np.asarray(Image.open(mask_file)).copy()
    ys, xs = np.nonzero(m)
    m[ys[0], xs[0]] = 0
    Image.fromarray(m).save(mask_file)
    third, stats = load_train_records(data, cache)
    assert stats.converted == [changed_id]
    ann = next(r for r in third if r["image_id"] == changed_id)["annotations"][0]
    old = next(r for r in first if r["image_id"] == changed_id)["annotations"][0]
    assert ann["area"] == old["area"] - 1
    assert len(list((cache / "annotations").glob(f"{changed_id}-*.json"))) == 1  # the stale entry is gone


# One process of test_concurrent_conversions_convert_once: imports (seconds), says it is ready, waits for "go".
_RACE_CHILD = """
import json, sys, time
from pathlib import Path
from trainable.data import load_train_records
data, cache, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.002)
records, stats = load_train_records(data, cache, workers=1)
print(json.dumps({"converted": stats.converted, "instances": stats.instances}))
"""


def test_concurrent_conversions_convert_once(shared_data, tmp_path):
    """Two processes loading one dataset into an empty cache at the same moment (trials starting on a fresh node):
    one converts, the other waits for it and reuses its files; both get every record (issue 21)."""
    ids = SMALL_IDS[:2]
    data = tmp_path / "data"
    for i in ids:  # 40 nuclei of each tile (links): a conversion takes about a second
        (data / "train" / i / "images").mkdir(parents=True)
        (data / "train" / i / "masks").mkdir()
        (data / "train" / i / "images" / f"{i}.png").symlink_to(shared_data / "train" / i / "images" / f"{i}.png")
        for m in sorted((shared_data / "train" / i / "masks").glob("*.png"))[:40]:
            (data / "train" / i / "masks" / m.name).symlink_to(m)
    cache, go = tmp_path / "cache", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_CHILD, str(data), str(cache), str(r), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    results = sorted((json.loads(out.splitlines()[-1]) for out, _ in outs), key=lambda r: len(r["converted"]))
    assert [sorted(r["converted"]) for r in results] == [[], sorted(ids)]  # each image converted once, in all
    assert results[0]["instances"] == results[1]["instances"] == 80
    names = sorted(p.name for p in (cache / "annotations").iterdir() if not p.name.startswith("."))
    assert [n.rsplit("-", 1)[0] for n in names] == sorted(ids * 2)  # one record and one masks file per image
    assert load_train_records(data, cache)[1].converted == []


def test_cleanup_keeps_the_current_entry(tmp_path):
    """After a conversion, only the image's entries with other fingerprints go: not the current one (another process
    may have just written it), nor those of an image whose id starts with this one's."""
    folder = tmp_path / "annotations"
    folder.mkdir()
    current = folder / "img-0123456789abcdef.json"
    keep = [current, current.with_suffix(".npz"), folder / "img-b-fedcba9876543210.json", folder / ".lock"]
    stale = [folder / "img-00000000000000aa.json", folder / "img-00000000000000aa.npz"]
    for f in keep + stale:
        f.write_text("x")
    data_module._remove_stale(current)
    assert sorted(folder.iterdir()) == sorted(keep)


class _RecordingPool:
    """Stands in for ProcessPoolExecutor: records its size and start method, converts in this process."""

    seen: dict = {}

    def __init__(self, max_workers, mp_context=None):
        _RecordingPool.seen = {"processes": max_workers, "start_method": mp_context and mp_context.get_start_method()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return map(fn, items)


def test_conversion_pool_size_and_start_method(tmp_path, monkeypatch):
    """The pool: as many processes as asked (a trial passes its CPUs), by default the CPUs this process may use (not
    the machine's), never more than the images; started fresh ("spawn"), never forked from a threaded Ray actor."""
    root, _ = _one_image_dataset(tmp_path)
    for name in ("img2", "img3"):
        shutil.copytree(root / "train" / "img1", root / "train" / name)
        (root / "train" / name / "images" / "img1.png").rename(root / "train" / name / "images" / f"{name}.png")
    monkeypatch.setattr(data_module, "ProcessPoolExecutor", _RecordingPool)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    load_train_records(root, tmp_path / "c1")
    assert _RecordingPool.seen == {"processes": 2, "start_method": "spawn"}
    records, stats = load_train_records(root, tmp_path / "c2", workers=3)
    assert _RecordingPool.seen["processes"] == 3 and len(stats.converted) == 3
    load_train_records(root, tmp_path / "c3", workers=8)
    assert _RecordingPool.seen["processes"] == 3


def _one_image_dataset(tmp_path: Path, n_masks: int = 3, size=(64, 64)) -> tuple[Path, Path]:
    """A tiny synthetic dataset folder in the course layout (for the error cases)."""
    d = tmp_path / "ds" / "train" / "img1"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(d / "images" / "img1.png")
    for i in range(n_masks):
        m = np.zeros(size, np.uint8)
        m[4 * i : 4 * i + 3, 5:9] = 255
        Image.fromarray(m).save(d / "masks" / f"mask_{i}.png")
    return tmp_path / "ds", d


def _error(root, cache) -> str:
    with pytest.raises(DatasetError) as e:
        load_train_records(root, cache, workers=1)
    return str(e.value)


def test_missing_folders(tmp_path):
    assert "dataset folder not found" in _error(tmp_path / "nope", tmp_path / "c")
    (tmp_path / "empty").mkdir()
    assert "missing train folder" in _error(tmp_path / "empty", tmp_path / "c")
    root, d = _one_image_dataset(tmp_path)
    shutil.rmtree(d / "masks")
    msg = _error(root, tmp_path / "c")
    assert "missing masks folder" in msg and str(d / "masks") in msg


def test_image_without_masks(tmp_path):
    root, d = _one_image_dataset(tmp_path, n_masks=0)
    msg = _error(root, tmp_path / "c")
    assert "has no mask PNG" in msg and "img1" in msg


def test_mask_size_differs(tmp_path):
    root, d = _one_image_dataset(tmp_path)
    Image.fromarray(np.full((32, 64), 255, np.uint8)).save(d / "masks" / "mask_1.png")
    msg = _error(root, tmp_path / "c")
    assert "mask_1.png" in msg and "differs from image" in msg


def test_non_binary_mask(tmp_path):
    root, d = _one_image_dataset(tmp_path)
    m = np.zeros((64, 64), np.uint8)
    m[:3, :3] = [[0, 100, 255]] * 3
    Image.fromarray(m).save(d / "masks" / "mask_2.png")
    msg = _error(root, tmp_path / "c")
    assert "mask_2.png" in msg and "not binary" in msg


def test_unreadable_png(tmp_path):
    root, d = _one_image_dataset(tmp_path)
    (d / "masks" / "mask_0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    msg = _error(root, tmp_path / "c")
    assert "mask_0.png" in msg and "unreadable PNG" in msg


def test_empty_mask_is_skipped_with_a_warning(tmp_path, caplog):
    root, d = _one_image_dataset(tmp_path)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(d / "masks" / "mask_9.png")
    with caplog.at_level(logging.WARNING):
        records, stats = load_train_records(root, tmp_path / "c", workers=1)
    assert len(records[0]["annotations"]) == 3
    assert stats.skipped_empty_masks == [str(d / "masks" / "mask_9.png")]
    assert "mask_9.png: empty mask skipped" in caplog.text


def test_test_index_errors(tmp_path):
    root = tmp_path / "ds"
    (root / "test").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "test" / "a.png")
    index = root / "test_img_ids.json"
    with pytest.raises(DatasetError, match="test_img_ids.json: file not found"):
        load_test_index(root)
    index.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_test_index(root)
    index.write_text(json.dumps([{"file_name": "b.png", "id": 1, "height": 40, "width": 50}]))
    with pytest.raises(DatasetError, match=r"entry 0 \(b.png\): no file"):
        load_test_index(root)
    index.write_text(json.dumps([{"file_name": "a.png", "id": 1, "height": 50, "width": 50}]))
    with pytest.raises(DatasetError, match=r"says 50x50, the file is 50x40"):
        load_test_index(root)
    index.write_text(json.dumps([{"file_name": "a.png", "id": 7, "height": 40, "width": 50}]))
    assert load_test_index(root)[0]["id"] == 7


def test_course_test_index(shared_data):
    entries = load_test_index(shared_data)
    assert sorted(e["id"] for e in entries) == [1, 2, 3, 4, 5, 6]


def test_splits_are_deterministic_and_disjoint():
    ids = [f"img{i:02d}" for i in range(24)]
    train, val = Split.from_dict({"val": 4, "seed": 3}).apply(ids)
    assert len(val) == 4 and not set(train) & set(val) and len(train) == 20
    assert Split.from_dict({"val": 4, "seed": 3}).apply(list(reversed(ids))) == (train, val)
    assert Split.from_dict({"val": 4, "seed": 4}).apply(ids)[1] != val
    assert Split.from_dict({"val_ids": ["img05"]}).apply(ids)[1] == ["img05"]
    folds = [Split.from_dict({"folds": 5, "fold": k}).apply(ids)[1] for k in range(5)]
    assert sorted(sum(folds, [])) == ids
    train, val = Split.from_dict({"val": 2, "train_ids": ["img00", "img01", "img02"]}).apply(ids)
    assert set(train) <= {"img00", "img01", "img02"} and not set(train) & set(val)
    with pytest.raises(DatasetError, match="not in the dataset"):
        Split.from_dict({"val_ids": ["nope"]}).apply(ids)
    with pytest.raises(ValueError, match="exactly one"):
        Split.from_dict({"val": 2, "folds": 3})


def test_crop_record_matches_cropped_masks(small_data, cache_dir, tmp_path):
    rec = load_train_records(small_data, cache_dir)[0][0]
    crop = crop_record(rec, 128, tmp_path)
    assert (crop["height"], crop["width"]) == (128, 128)
    assert np.asarray(Image.open(crop["file_name"])).shape[:2] == (128, 128)
    full = np.zeros((1000, 1000), bool)
    for ann in rec["annotations"]:
        full |= mask_util.decode(ann["segmentation"]).astype(bool)
    cropped = np.zeros((128, 128), bool)
    for ann in crop["annotations"]:
        cropped |= mask_util.decode(ann["segmentation"]).astype(bool)
    assert np.array_equal(cropped, full[436:564, 436:564])
