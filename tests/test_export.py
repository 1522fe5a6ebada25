"""Export: a validated RLE submission from a trained model; scoring against labelled tiles; clear errors."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pycocotools.mask as mask_util
import pytest

from search.export import score
from tests.conftest import ROOT, SMALL_IDS, make_subset
from trainable.data import load_train_records
from trainable.evaluate import COURSE_MAX_DETS


def _export(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.export", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_export_from_a_checkpoint_is_a_valid_submission(pretrained, dup_data, tmp_path):
    out = tmp_path / "sub" / "answer.json"
    p = _export("--checkpoint", str(pretrained.parent), "--data", str(dup_data), "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "validated with pycocotools" in p.stdout
    results = json.loads(out.read_text())
    index = json.loads((dup_data / "test_img_ids.json").read_text())
    assert {r["image_id"] for r in results} == {e["id"] for e in index}
    for e in index:
        dets = [r for r in results if r["image_id"] == e["id"]]
        assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
        for d in dets:
            assert d["category_id"] == 1 and isinstance(d["segmentation"]["counts"], str)
            assert mask_util.decode(d["segmentation"]).shape == (e["height"], e["width"])
    assert zipfile.ZipFile(out.with_suffix(".zip")).namelist() == ["answer.json"]
    assert len(list((out.parent / "overlays").glob("*.png"))) == len(index)
    assert not list(out.parent.glob(".*tmp*"))  # no half-written file left behind


def test_best_picks_the_best_trials_best_checkpoint(swept, dup_data, tmp_path):
    _, _, folder = swept
    p = _export("--best", "--results", str(folder.parent), "--name", folder.name, "--out", str(tmp_path / "a.json"))
    assert p.returncode == 0, p.stderr[-3000:]
    board = pd.read_csv(folder / "leaderboard.csv", dtype={"trial_id": str})
    best = board.sort_values("val_map50_best", ascending=False).iloc[0]
    assert f"({best['trial_id']}), the highest val_map50_best, " in p.stdout
    used = p.stdout.split("checkpoint ")[1].split()[0]
    state = json.loads((folder / f"trial_{best['trial_id']}" / used / "state.json").read_text())
    assert state["metrics"]["val_map50"] == pytest.approx(best["val_map50_best"])


def test_ground_truth_submission_scores(shared_data, cache_dir, tmp_path):
    gt = make_subset(shared_data, tmp_path / "gt", SMALL_IDS[:1]) / "train"  # one labelled tile, <id>/ folders
    records, _ = load_train_records(gt, cache_dir, subdir="")
    rec = records[0]
    n = len(rec["annotations"])
    assert n > COURSE_MAX_DETS
    scores = np.linspace(1.0, 0.5, n)
    sub = [
        {"image_id": rec["image_id"], "category_id": 1, "segmentation": a["segmentation"], "score": float(s)}
        for a, s in zip(rec["annotations"], scores, strict=True)
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(sub))
    s = score(path, gt, cache_dir)
    ceiling = s["recall_ceiling_at_100"][rec["image_id"]]
    assert s["map50_all"] == pytest.approx(1.0)
    assert ceiling == pytest.approx(COURSE_MAX_DETS / n)
    assert s["map50"] == pytest.approx(np.sum(np.linspace(0, 1, 101) <= ceiling + 1e-12) / 101)
    # The nuclei measures of the ground truth itself: every nucleus found; AJI just short of 1 where two nuclei
    # overlap (the label map gives a shared pixel to one of them: the higher-scoring detection, the later nucleus).
    assert s["f1"] == s["precision"] == s["recall"] == 1.0 and s["dice"] == pytest.approx(1.0)
    assert 0.98 < s["aji"] <= 1.0 and 0.98 < s["pq"] <= 1.0
    p = _export("--score", str(path), "--gt", str(gt))
    assert p.returncode == 0 and "AP50 uncapped: 1.0000" in p.stdout and "recall ceiling" in p.stdout
    assert f"nuclei measures of its {n} detections per tile" in p.stdout and "f1 1.0000" in p.stdout


def _one_line_error(p: subprocess.CompletedProcess, fragment: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], p.stderr


def test_corrupted_inputs(pretrained, dup_data, tmp_path):
    _one_line_error(_export("--best", "--results", str(tmp_path / "none")), "no sweep found")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    _one_line_error(_export("--checkpoint", str(ckpt), "--data", str(dup_data)), "missing model.pth")
    shutil.copy(pretrained.parent / "config.yaml", ckpt / "config.yaml")
    (ckpt / "model.pth").write_bytes(pretrained.read_bytes()[:1000])
    _one_line_error(_export("--checkpoint", str(ckpt), "--data", str(dup_data)), "unreadable checkpoint")
    data = tmp_path / "data"
    shutil.copytree(dup_data / "test", data / "test")
    (data / "test_img_ids.json").write_text(json.dumps([{"file_name": "x.png", "id": 1, "height": 9, "width": 9}]))
    _one_line_error(_export("--checkpoint", str(pretrained.parent), "--data", str(data)), "no file")
    sweep = tmp_path / "results" / "s"
    sweep.mkdir(parents=True)
    (sweep / "space.yaml").write_text("{}")
    pd.DataFrame([{"trial_id": "a", "status": "error", "val_map50_best": None, "path": ""}]).to_csv(
        sweep / "leaderboard.csv", index=False
    )
    _one_line_error(_export("--best", "--results", str(tmp_path / "results")), "no finished trial")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": "nope", "category_id": 1, "segmentation": {}, "score": 1}]')
    _one_line_error(_export("--score", str(bad), "--gt", str(dup_data)), "not among the tiles")


def test_flip_tta_export_is_valid(pretrained, dup_data, tmp_path):
    out = tmp_path / "tta.json"
    p = _export("--checkpoint", str(pretrained.parent), "--data", str(dup_data), "--out", str(out), "--tta")
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results and {r["image_id"] for r in results} <= {1, 2}


@pytest.mark.parametrize("rescoring", [False, True])
def test_default_cap_keeps_the_scorers_100_and_its_ap50(pretrained, dup_data, cache_dir, tmp_path, rescoring):
    """--max-dets 100 (default) pastes 100 masks per tile, and they are the first 100 of --max-dets all: the same
    detections, so the same AP50@100. With mask rescoring too, where the order changes after the model's cut: rescoring
    reorders the model's whole pool before anything is kept, whatever --max-dets is."""
    from tests.conftest import DUP_TILE

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for name in ("model.pth", "config.yaml"):
        (checkpoint / name).symlink_to(pretrained.parent / name)
    state = json.loads((pretrained.parent / "state.json").read_text())
    state["hparams"]["mask_rescore"] = rescoring
    (checkpoint / "state.json").write_text(json.dumps(state))
    tile = dup_data / "train" / DUP_TILE
    gt, data = tmp_path / "gt", tmp_path / "data"
    gt.mkdir()
    (gt / DUP_TILE).symlink_to(tile)
    (data / "test").mkdir(parents=True)
    (data / "test" / f"{DUP_TILE}.png").symlink_to(tile / "images" / f"{DUP_TILE}.png")
    index = [{"file_name": f"{DUP_TILE}.png", "id": 1, "height": 256, "width": 256}]
    for d in (gt, data):
        (d / "test_img_ids.json").write_text(json.dumps(index))
    scores, kept = {}, {}
    for cap in ("100", "all"):
        out = tmp_path / cap / "answer.json"
        args = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out), "--max-dets", cap]
        p = _export(*args)
        assert p.returncode == 0, p.stderr[-3000:]
        kept[cap] = [(d["segmentation"]["counts"], round(d["score"], 4)) for d in json.loads(out.read_text())]
        scores[cap] = score(out, gt, cache_dir)
    assert len(kept["100"]) == COURSE_MAX_DETS < 2 * COURSE_MAX_DETS < len(kept["all"])  # more than a 2 x 100 pool
    assert kept["100"] == kept["all"][:COURSE_MAX_DETS]
    assert scores["100"]["map50"] == pytest.approx(scores["all"]["map50"], abs=1e-9) and scores["100"]["map50"] > 0.05


def test_overlay_fills_and_outlines_each_mask_as_on_the_whole_tile():
    """The overlay works inside each mask's box; the picture must be the one whole-tile arithmetic gives."""
    from trainable import overlay

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    masks = []
    for i in range(30):
        m = np.zeros((120, 160), np.uint8)
        y, x = rng.integers(-10, 120), rng.integers(-10, 160)
        m[max(0, y) : y + rng.integers(1, 30), max(0, x) : x + rng.integers(1, 30)] = 1
        m[0:3, :] = 1 if i % 11 == 0 else m[0:3, :]  # touches the tile's border
        masks.append(m * (i % 7 != 0))  # and some empty ones
    rles = [mask_util.encode(np.asfortranarray(m)) for m in masks]
    expected = image.astype(np.float32)
    edges = np.zeros((120, 160), bool)
    colors = np.random.default_rng(0).uniform(40, 255, size=(len(masks), 3))
    for m, color in zip(masks, colors, strict=True):
        m = m.astype(bool)
        expected[m] = 0.55 * expected[m] + 0.45 * color
        padded = np.pad(m, 1, mode="edge")  # a pixel is inner if its 4 neighbours (clamped at the border) are in
        inner = m & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        edges |= m & ~inner
    expected[edges] = 255
    assert np.array_equal(overlay.draw(image, rles), expected.clip(0, 255).astype(np.uint8))


def test_the_three_export_formats_agree_on_the_same_model(pretrained, dup_data, tmp_path):
    """--format labels and --format geojson beside the COCO submission: each tile's label map is the one its COCO
    detections paint (nucleus k = its k-th detection), and each GeoJSON Feature, loaded with a GeoJSON library, is a
    polygon whose pixels are exactly that nucleus's and whose score is that detection's."""
    import cv2
    import geojson
    from shapely.geometry import shape
    from skimage.draw import polygon2mask

    from trainable.evaluate import predicted_label_map
    from trainable.instance_formats import tile_label_map

    outs = {}
    for form in ("labels", "geojson"):
        out = tmp_path / form / "answer.json"
        args = ["--checkpoint", str(pretrained.parent), "--data", str(dup_data), "--out", str(out), "--format", form]
        p = _export(*args)
        assert p.returncode == 0 and f"{form}: {out.parent / form}" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
        outs[form] = out
    results = json.loads(outs["labels"].read_text())
    assert json.loads(outs["geojson"].read_text()) == results  # one model, one submission
    index = json.loads((dup_data / "test_img_ids.json").read_text())
    features = 0
    for e in index:
        stem = e["file_name"].rsplit(".", 1)[0]
        dets = [r for r in results if r["image_id"] == e["id"]]
        labels = cv2.imread(str(outs["labels"].parent / "labels" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (e["height"], e["width"])
        assert (labels == tile_label_map(labels.shape, dets)).all()
        # ... and the same nuclei, pixel for pixel, as the map the measures paint from those detections.
        seen = predicted_label_map(labels.shape, dets)
        pairs = np.unique(np.stack([labels.ravel(), seen.ravel()]), axis=1)
        assert ((labels > 0) == (seen > 0)).all() and pairs.shape[1] == len(np.unique(labels)) == len(np.unique(seen))
        for k in np.unique(labels[labels > 0]):  # each nucleus lies within its detection's mask
            assert mask_util.decode(dets[k - 1]["segmentation"])[labels == k].all()
        with open(outs["geojson"].parent / "geojson" / f"{stem}.geojson") as f:
            collection = geojson.load(f)
        assert collection.is_valid and collection["type"] == "FeatureCollection"
        present = set(np.unique(labels[labels > 0]).tolist())
        assert len(collection["features"]) == len(present) and len(present) > 0
        for feature in collection["features"]:
            k = int(feature["properties"]["name"].split()[-1])
            assert feature["properties"]["objectType"] == "detection"
            assert feature["properties"]["measurements"]["score"] == pytest.approx(dets[k - 1]["score"])
            nucleus = labels == k
            geometry = shape(feature["geometry"])
            assert geometry.is_valid and geometry.area == pytest.approx(nucleus.sum(), rel=0.02)
            parts = getattr(geometry, "geoms", [geometry])
            drawn = np.zeros(labels.shape, bool)
            # The pixels whose centres lie inside the polygon (pixel (x, y) spans x..x+1, y..y+1; skimage puts its
            # centre at (y, x)): the nucleus's pixels, no more, no fewer.
            for part in parts:
                drawn |= polygon2mask(labels.shape, np.array(part.exterior.coords)[:, ::-1] - 0.5)
                for hole in part.interiors:
                    drawn &= ~polygon2mask(labels.shape, np.array(hole.coords)[:, ::-1] - 0.5)
            assert (drawn == nucleus).all(), k
        features += len(collection["features"])
    assert features > 0


@pytest.mark.parametrize(
    "detection, fragment",
    [
        ({"image_id": "copy"}, "needs image_id, category_id 1, segmentation, score"),
        ({"image_id": "copy", "category_id": 1, "score": "high", "segmentation": None}, "score must be a number"),
        ({"image_id": "copy", "category_id": 1, "score": 0.9, "segmentation": "rle"}, "RLE size"),
        (
            {"image_id": "copy", "category_id": 1, "score": 0.9, "segmentation": {"size": [9, 9], "counts": "0"}},
            "RLE size",
        ),
        ("SAME_SIZE_BAD_COUNTS", "RLE does not decode"),
    ],
)
def test_a_malformed_submission_is_one_error_line_when_scored(dup_data, cache_dir, tmp_path, detection, fragment):
    """--score reads a file a user points it at: each malformed detection is one error line, exit 2 (tracebacks
    from pycocotools, or from painting the label maps, before)."""
    if detection == "SAME_SIZE_BAD_COUNTS":
        record = load_train_records(dup_data, cache_dir)[0][0]
        size = [record["height"], record["width"]]
        detection = {
            "image_id": "copy",
            "category_id": 1,
            "score": 0.9,
            "segmentation": {"size": size, "counts": "PPYo0"},
        }
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([detection]))
    _one_line_error(_export("--score", str(bad), "--gt", str(dup_data)), fragment)
