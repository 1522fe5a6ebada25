"""The search levers of the nuclei space: colour jitter, config wiring, test-time scale and mask rescoring."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data.transforms import RandomBrightness
from detectron2.structures import Boxes, Instances
from PIL import Image
from skimage.color import hed2rgb, hed_from_rgb, rgb2hed, rgb2yiq, yiq2rgb

from tests.conftest import DUP_TILE, SAMPLE_DATA
from trainable.augment import NucleiTrainMapper, build_augmentations, with_images
from trainable.colour import _LOG_RGB, RandomStain, apply_chroma, apply_stain, mean_stains
from trainable.config import ConfigError, as_run, build_cfg, validate, with_defaults
from trainable.data import load_train_records
from trainable.rescore import mask_quality, rescore

TILE = SAMPLE_DATA / "train" / DUP_TILE / "images" / f"{DUP_TILE}.png"


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.asarray(Image.open(TILE).convert("RGB"))[:300, :300]


def test_stain_jitter_is_scikit_images_hed_jitter_without_its_lossy_clip(rgb):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    assert np.array_equal(apply_stain(bgr, [1, 1, 1], [0, 0, 0]), bgr)  # no jitter: the very same pixels
    alpha, beta = np.array([1.2, 0.8, 1.1]), np.array([0.2, -0.3, 0.1])
    ours = apply_stain(bgr, alpha, beta)[..., ::-1].astype(float)
    od = np.log(np.maximum(rgb / 255, 1e-6)) / np.log(1e-6) @ hed_from_rgb  # rgb2hed before its clip
    mean = od.reshape(-1, 3).mean(0)  # beta is a fraction of each stain's mean amount in the image
    assert (mean > 0.005).all() and np.allclose(mean_stains(cv2.LUT(bgr, _LOG_RGB)), mean, atol=1e-6)
    reference = hed2rgb(rgb2hed(rgb) * alpha + beta * mean) * 255
    unclipped = (od >= 0).all(-1)  # where rgb2hed's clip of negative stain amounts does nothing
    assert unclipped.mean() > 0.5
    assert np.abs(ours - reference)[unclipped].max() <= 1.0  # rounding to uint8
    assert np.abs(ours - rgb).mean() > 3  # and the colours did change


def test_stain_jitter_moves_pixels_as_documented_on_a_course_tile():
    # trainable/colour.py and spaces/README.md: t = 0.05 ("light") moves pixels by ~2 grey levels on average, 0.3 (the
    # top of spaces/maskrcnn.yaml) by ~12, about what brightness 0.2 does. Beta in raw HED units moved them by ~30 at
    # 0.05 (issue 21), as far as brightness 0.4 and more.
    bgr = np.ascontiguousarray(np.asarray(Image.open(TILE).convert("RGB"))[..., ::-1])

    def change(augmentation) -> np.ndarray:
        np.random.seed(0)
        draws = [augmentation.get_transform(bgr).apply_image(bgr) for _ in range(8)]
        return np.abs(np.stack(draws).astype(int) - bgr)

    light, top = change(RandomStain(0.05)), change(RandomStain(0.3))
    assert 1 <= light.mean() <= 3 and np.median(light) <= 3 and np.percentile(light, 90) <= 6
    assert 7 <= top.mean() <= 16 and np.percentile(top, 90) <= 30
    brightness = change(RandomBrightness(0.8, 1.2)).mean()
    assert light.mean() < brightness / 2 and top.mean() < 2 * brightness


def test_strong_colour_jitter_stays_within_pixel_values(rgb):
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for out in (apply_stain(bgr, [2, 0.1, 2], [0.5, -0.5, 0.5]), apply_chroma(bgr, 170, 2.0)):
        assert out.dtype == np.uint8 and out.shape == bgr.shape
        assert out.min() == 0 or out.max() == 255  # saturated, not wrapped around
    # Hue and saturation: a rotation and scaling of YIQ's chroma plane, as scikit-image converts it.
    yiq = rgb2yiq(rgb)
    t, s = np.deg2rad(20), 1.3
    i, q = yiq[..., 1].copy(), yiq[..., 2].copy()
    yiq[..., 1], yiq[..., 2] = s * (np.cos(t) * i - np.sin(t) * q), s * (np.sin(t) * i + np.cos(t) * q)
    reference = np.clip(yiq2rgb(yiq), 0, 1) * 255
    assert np.abs(apply_chroma(bgr, 20, 1.3)[..., ::-1] - reference).max() <= 0.6  # rounding, in float32
    assert np.array_equal(apply_chroma(bgr, 0, 1), bgr)


def test_colour_jitter_leaves_the_instances_as_they_were(small_data, cache_dir):
    records, _ = load_train_records(small_data, cache_dir)
    record = with_images(records[:1])[0]
    geometry = {"crop_size": 400, "rot90": 0.75, "scale": 1.25, "scale_jitter": 0.1}
    colour = {"stain": 0.05, "hue": 8, "saturation": 0.2, "contrast": 0.3, "brightness": 0.2}
    plain = NucleiTrainMapper(build_augmentations(with_defaults({**geometry, "brightness": 0})))
    jittered = NucleiTrainMapper(build_augmentations(with_defaults({**geometry, **colour})))
    for seed in range(3):  # colour comes after geometry: the same geometric draws
        np.random.seed(seed)
        a = plain(record)
        np.random.seed(seed)
        b = jittered(record)
        assert a["image"].shape == b["image"].shape and not torch.equal(a["image"], b["image"])
        ia, ib = a["instances"], b["instances"]
        assert len(ia) > 5 and torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
        assert torch.equal(ia.gt_masks.to_bitmasks().tensor, ib.gt_masks.to_bitmasks().tensor)


def test_each_lever_reaches_detectron2s_config():
    base = {"weights": "scratch", "backbone": "R50-FPN"}
    default = build_cfg(base, 20)
    assert default.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and default.SOLVER.STEPS  # today's schedule
    assert default.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]
    levers = {
        "lr_schedule": "cosine",
        "rpn_nms": 0.6,
        "roi_nms": 0.4,
        "roi_positive_fraction": 0.5,
        "anchor_aspect": 3.0,
        "mask_resolution": 28,
    }
    cfg = build_cfg({**base, **levers}, 20)
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupCosineLR" and cfg.SOLVER.STEPS == ()
    assert cfg.MODEL.RPN.NMS_THRESH == 0.6 and cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == 0.4
    assert cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION == 0.5
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[1 / 3, 1.0, 3.0]]
    assert cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION == 28
    # A C4 model pools once for both heads: a space that searches mask_resolution records (and runs) its 14.
    with pytest.raises(ConfigError, match="mask_resolution 28 needs an FPN backbone"):
        build_cfg({**base, "backbone": "R50-C4", "mask_resolution": 28}, 20)
    hp = with_defaults({**base, **levers, "backbone": "R50-C4", "decay_epochs": [5], "gamma": 0.5})
    recorded = as_run(hp, searched={"backbone", "mask_resolution"})
    assert recorded["mask_resolution"] == 14 and recorded["decay_epochs"] == [] and recorded["gamma"] == 0.1  # cosine
    assert build_cfg(recorded, 20).MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION == 14


def test_cosine_schedule_warms_up_then_falls_to_zero_without_steps():
    from detectron2.solver import build_lr_scheduler

    hp = {"weights": "scratch", "epochs": 10, "warmup_epochs": 2, "lr": 0.02, "lr_schedule": "cosine"}
    cfg = build_cfg({**hp, "decay_epochs": [5]}, num_train_images=10)  # decays do not apply under cosine
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    def cosine(i: int) -> float:  # Detectron2's: over the whole schedule, the warm-up ramps up to it
        return 0.02 * (1 + np.cos(np.pi * i / 100)) / 2

    after = lrs[20:]  # 2 warm-up epochs of 10 iterations
    assert lrs[0] < 0.001 and max(lrs) == pytest.approx(cosine(20), rel=0.01)
    assert all(a >= b for a, b in zip(after, after[1:], strict=False)) and after[-1] < 0.0002
    assert lrs[50] == pytest.approx(cosine(50), rel=0.01) and lrs[51] == pytest.approx(cosine(51), rel=0.01)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"stain": -0.1}, "stain must be in [0, 1]"),
        ({"rot90": 1.5}, "rot90 must be in [0, 1]"),
        ({"hue": 200}, "hue must be in [0, 180]"),
        ({"scale": 0}, "scale must be in (0, 4]"),
        ({"roi_nms": 0}, "roi_nms must be in (0, 1]"),
        ({"anchor_aspect": 0.5}, "anchor_aspect must be a number >= 1"),
        ({"mask_resolution": 20}, "mask_resolution must be one of [7, 14, 28]"),
        ({"lr_schedule": "poly"}, "lr_schedule must be one of ['step', 'cosine']"),
        ({"mask_rescore": "yes"}, "mask_rescore must be true or false"),
    ],
)
def test_bad_lever_values_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate({"weights": "scratch", **bad})


def test_hyperparameters_are_completed_and_checked_once(monkeypatch):
    import trainable.config as config

    checks = []
    monkeypatch.setattr(config, "_check", lambda hp: checks.append(dict(hp)))
    hp = validate({"weights": "scratch", "roi_nms": 0.4})
    assert hp["roi_nms"] == 0.4 and hp["backbone"] == config.DEFAULTS["backbone"]  # defaults filled in
    assert validate(hp) is hp and len(checks) == 1  # run_trial's hyperparameters are not checked again by build_cfg
    build_cfg(hp, 20)
    assert len(checks) == 1


def test_rescoring_changes_only_scores():
    probabilities = torch.tensor([[0.9, 0.9, 0.1, 0.1], [0.6, 0.7, 0.6, 0.2], [0.2, 0.3, 0.1, 0.4]]).reshape(3, 1, 2, 2)
    quality = mask_quality(probabilities)
    assert torch.allclose(quality, torch.tensor([0.9, 0.6333333, 0.0]))  # an empty mask ranks last
    instances = Instances((10, 10), scores=torch.tensor([0.5, 0.9, 0.8]), pred_masks=probabilities.clone())
    instances.pred_boxes = Boxes(torch.tensor([[0, 0, 2, 2], [1, 1, 5, 5], [3, 3, 4, 4]]).float())
    boxes = instances.pred_boxes.tensor.clone()
    rescore(instances)
    assert torch.allclose(instances.scores, torch.tensor([0.45, 0.57, 0.0]))
    assert torch.equal(instances.pred_masks, probabilities) and torch.equal(instances.pred_boxes.tensor, boxes)


# ---------------------------------------------------------------------------------------------------------------
# Validation and export: one tile predicted by a trained model at a test-time scale, with rescoring


def _checkpoint(pretrained: Path, dest: Path, **hparams) -> Path:
    """The pretrained checkpoint with other inference hyperparameters in its state.json."""
    dest.mkdir()
    for name in ("model.pth", "config.yaml"):
        (dest / name).symlink_to(pretrained.parent / name)
    state = json.loads((pretrained.parent / "state.json").read_text())
    state["hparams"].update(hparams)
    (dest / "state.json").write_text(json.dumps(state))
    return dest


@pytest.fixture(scope="module")
def small_tile(tmp_path_factory) -> Path:
    """A 240 x 320 piece of the tile the pretrained model knows (non-square: height and width must not swap)."""
    path = tmp_path_factory.mktemp("tile") / "piece.png"
    Image.open(TILE).convert("RGB").crop((100, 200, 420, 440)).save(path)
    return path


def _key(r: dict) -> tuple:
    return r["segmentation"]["counts"], tuple(round(v, 3) for v in r["bbox"])


def test_a_scaled_tile_is_predicted_at_scale_and_submitted_at_its_own_size(pretrained, small_tile, tmp_path):
    from trainable.predict import Predictor

    predictor = Predictor(_checkpoint(pretrained, tmp_path / "x1.5", scale=1.5), max_dets=100)
    seen = []
    predictor.model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0][0]["image"].shape)))
    results = predictor.predict(small_tile, "piece")
    assert seen == [(3, 360, 480)]  # the model saw the tile x 1.5
    assert len(results) > 10
    for r in results:
        assert r["segmentation"]["size"] == [240, 320]  # ...and the submission has the tile's own size
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 320.01 and y + h <= 240.01
        assert mask_util.area(r["segmentation"]) > 0


def test_rescoring_reorders_the_same_detections(pretrained, small_tile, tmp_path):
    from trainable.predict import Predictor

    plain = Predictor(_checkpoint(pretrained, tmp_path / "plain"), max_dets=None).predict(small_tile, "piece")
    rescored = Predictor(_checkpoint(pretrained, tmp_path / "rescored", mask_rescore=True), max_dets=None)
    again = rescored.predict(small_tile, "piece")
    assert len(plain) > 20 and sorted(map(_key, plain)) == sorted(map(_key, again))  # same masks, same boxes
    before = {_key(r): r["score"] for r in plain}
    assert all(r["score"] <= before[_key(r)] + 1e-6 for r in again)  # x a mean probability <= 1
    assert [_key(r) for r in again] != [_key(r) for r in plain]  # a new order
    with pytest.raises(ConfigError, match="cannot use flip TTA"):
        Predictor(tmp_path / "rescored", tta=True)


def test_rescoring_ranks_the_models_whole_pool_before_it_keeps_any(pretrained):
    """rescore.Ranking: with rescoring, the box predictor keeps the model's own pool whatever is asked, and the best
    are kept only after rescoring; a detection the box scores ranked last can then lead. (Cutting the pool to 2 x what
    the caller keeps before rescoring, as validation and export did, made the kept set depend on the caller.)"""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from trainable.evaluate import fetch_count
    from trainable.rescore import Ranking, mask_quality

    cfg = get_cfg()
    cfg.merge_from_file(str(pretrained.parent / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    pool = cfg.TEST.DETECTIONS_PER_IMAGE
    plain = Ranking(model, rescoring=False)
    plain.keep_best(10)
    assert model.roi_heads.box_predictor.test_topk_per_image == fetch_count(10)  # the best 10 of a longer list
    plain.keep_best(None)
    assert model.roi_heads.box_predictor.test_topk_per_image == pool
    rescoring = Ranking(model, rescoring=True)
    rescoring.keep_best(10)
    assert model.roi_heads.box_predictor.test_topk_per_image == pool  # the pool is the model's, whoever asks

    n = pool
    scores = torch.linspace(0.9, 0.3, n)  # box order: detection 0 first
    inside = torch.linspace(0.55, 1.0, n)  # mask quality rising down the list: the last rescore best
    probabilities = torch.full((n, 1, 28, 28), 0.1)
    probabilities[:, :, 8:20, 8:20] = inside.view(n, 1, 1, 1)
    instances = Instances((64, 64), scores=scores.clone(), pred_masks=probabilities)
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(n, 1))
    (kept,) = rescoring._after_mask_head(model.roi_heads.mask_head, (), [instances])
    rescored = scores * mask_quality(probabilities)
    assert len(kept) == fetch_count(10)
    assert torch.equal(kept.scores, rescored.sort(descending=True).values[: fetch_count(10)])
    assert torch.argmax(rescored) > fetch_count(10)  # the best after rescoring was outside a 2 x 10 cut


def test_validation_predicts_as_export_does(pretrained, small_tile, tmp_path, cache_dir):
    """Same checkpoint, scale 1.5 and rescoring: validation's detections are the submission's, to 1e-4, whatever
    each keeps: validation's 100 or 300 (val_detections), export's 100 or all (--max-dets). Rescoring reorders the
    model's whole pool before anything is cut (a pool of 2 x what the caller kept made the top 100 differ)."""
    from trainable.predict import Predictor
    from trainable.train import NucleiTrainer, Settings, prepare_data

    mask = np.zeros((240, 320), np.uint8)
    mask[10:20, 10:20] = 255
    for name in ("piece", "other"):  # the validation tile, and a training tile the split needs
        folder = tmp_path / "data" / "train" / name
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        shutil.copy(small_tile, folder / "images" / f"{name}.png")
        Image.fromarray(mask).save(folder / "masks" / "mask_0001.png")
    ckpt = _checkpoint(pretrained, tmp_path / "ckpt", scale=1.5, mask_rescore=True)
    hp = json.loads((ckpt / "state.json").read_text())["hparams"]
    settings = Settings(data=str(tmp_path / "data"), split={"val_ids": ["piece"]}, cache_dir=str(cache_dir))
    data = prepare_data(settings)

    cfg = get_cfg()
    cfg.merge_from_file(str(ckpt / "config.yaml"))
    cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR = str(ckpt / "model.pth"), str(tmp_path)
    trainer = NucleiTrainer(cfg, hp, data, report=lambda *a: None, eval_every=1, workdir=tmp_path)
    trainer.resume_or_load(resume=False)
    validated = {}
    for kept in (100, 300):
        trainer.val_detections = kept
        trainer.validate()
        validated[kept] = sorted(trainer.last_predictions, key=lambda r: -r["score"])[:100]
    exported = {kept: Predictor(ckpt, max_dets=kept).predict(small_tile, "piece")[:100] for kept in (100, None)}
    assert len(trainer.last_predictions) > 200  # a pool the cut of 2 x 100 would have split
    first = validated[100]
    for got in (validated[300], exported[100], exported[None]):
        assert len(got) == 100
        assert [_key(r) for r in got] == [_key(r) for r in first]
        assert np.allclose([r["score"] for r in got], [r["score"] for r in first], atol=1e-4)


def test_export_refuses_flip_tta_for_a_rescoring_model(pretrained, dup_data, tmp_path, capsys):
    from search import export

    ckpt = _checkpoint(pretrained, tmp_path / "rescored", mask_rescore=True)
    out = tmp_path / "submission" / "answer.json"
    assert export.main(["--checkpoint", str(ckpt), "--data", str(dup_data), "--out", str(out), "--tta"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "cannot use flip TTA (--tta)" in err and len(err.splitlines()) == 1
    assert not out.parent.exists()


@pytest.mark.parametrize(
    "state, message",
    [
        ('{"hparams": {"scale": "big"}}', "scale must be in (0, 4], got 'big'"),
        ('{"hparams": {"mask_rescore": "yes"}}', "mask_rescore must be true or false, got 'yes'"),
        ('{"hparams": [1, 2]}', "unreadable (not the JSON a trial writes)"),
        ("[1, 2]", "unreadable (not the JSON a trial writes)"),
        ("{not json", "unreadable (not the JSON a trial writes)"),
    ],
)
def test_export_answers_a_bad_state_json_in_one_line(pretrained, dup_data, tmp_path, capsys, state, message):
    from search import export

    ckpt = _checkpoint(pretrained, tmp_path / "ckpt")
    (ckpt / "state.json").write_text(state)
    out = tmp_path / "submission" / "answer.json"
    assert export.main(["--checkpoint", str(ckpt), "--data", str(dup_data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {ckpt / 'state.json'}: {message}" and not out.parent.exists()


def test_a_trial_file_with_a_bad_lever_writes_nothing(tmp_path, capsys):
    from trainable import train

    config = tmp_path / "trial.yaml"
    config.write_text(f"hparams: {{weights: scratch, stain: 2}}\nsettings: {{data: {SAMPLE_DATA}}}\n")
    assert train.main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {config}: stain must be in [0, 1], got 2"
    assert not (tmp_path / "out").exists()
