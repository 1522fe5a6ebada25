"""Load a trial checkpoint and predict whole tiles: COCO results with RLE masks, sorted by score.

A tile is predicted as the trial's validation saw it: at the trial's `scale` and, with `mask_rescore`, ranked by
mask quality (both from the checkpoint's state.json; without one, at native scale and unrescored).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import GeneralizedRCNNWithTTA, build_model

from trainable import rescore
from trainable.augment import inference_augmentations
from trainable.config import DEFAULTS, ConfigError, check_flag, check_range, merge_safely
from trainable.evaluate import fetch_count

INFERENCE_KEYS = ("scale", "mask_rescore")  # the hyperparameters that act at inference too


def inference_hparams(checkpoint_dir: str | Path) -> dict:
    """`scale` and `mask_rescore` as the checkpoint's trial used them (state.json), defaults where it says nothing."""
    saved = Path(checkpoint_dir) / "state.json"
    try:
        doc = json.loads(saved.read_text()) if saved.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    hp = doc.get("hparams", {}) if isinstance(doc, dict) else None
    if not isinstance(hp, dict):
        raise ConfigError(f"{saved}: unreadable (not the JSON a trial writes)")
    out = {k: hp.get(k, DEFAULTS[k]) for k in INFERENCE_KEYS}
    try:
        check_range("scale", out["scale"])
        check_flag("mask_rescore", out["mask_rescore"])
    except ConfigError as e:
        raise ConfigError(f"{saved}: {e}") from None
    return out


def check_tta(hp: dict, tta: bool, where) -> None:
    """Flip TTA averages the mask probabilities after Detectron2 has set the scores: rescoring would not happen."""
    if tta and hp["mask_rescore"]:
        raise ConfigError(f"{where}: a mask_rescore model cannot use flip TTA (--tta); export it without")


class Predictor:
    """A trained Mask R-CNN from a checkpoint folder (model.pth + config.yaml; state.json: its inference hparams)."""

    def __init__(
        self,
        checkpoint_dir: str | Path,
        device: str = "cpu",
        score_threshold: float | None = None,
        tta: bool = False,
        max_dets: int | None = None,
    ):
        """`max_dets`: keep the N best detections per tile (None: the model's own TEST.DETECTIONS_PER_IMAGE); the model
        then pastes and encodes N masks only, and the top N of a longer list are the same N."""
        ckpt = Path(checkpoint_dir)
        for name in ("model.pth", "config.yaml"):
            if not (ckpt / name).is_file():
                raise ConfigError(f"{ckpt}: not a trial checkpoint (missing {name})")
        self.hp = inference_hparams(ckpt)
        check_tta(self.hp, tta, ckpt)
        cfg = get_cfg()
        config = ckpt / "config.yaml"
        try:
            merge_safely(cfg, config)
        except yaml.YAMLError as e:
            reason = " ".join(str(e).replace(f' in "{config}"', "").split())[:160]  # the path once, in front
            raise ConfigError(f"{config}: refused, not plain YAML ({reason}); configs are read safely") from None
        cfg.MODEL.DEVICE = device
        cfg.MODEL.WEIGHTS = str(ckpt / "model.pth")
        if score_threshold is not None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
        if max_dets is not None and not self.hp["mask_rescore"]:  # a rescoring model keeps its pool (rescore.Ranking)
            cfg.TEST.DETECTIONS_PER_IMAGE = fetch_count(max_dets)  # flip TTA merges to it too
        self.max_dets = max_dets
        self.cfg = cfg
        self.model = build_model(cfg)
        try:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        except Exception as e:  # a truncated or foreign file
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"{ckpt / 'model.pth'}: unreadable checkpoint ({type(e).__name__}: {first})") from None
        self.model.eval()
        self.ranking = rescore.Ranking(self.model, rescoring=self.hp["mask_rescore"])  # as validation ranks
        self.ranking.keep_best(max_dets)
        self.augmentations = T.AugmentationList(inference_augmentations(self.hp))
        self.tta = tta
        self._tta_models: dict[int, GeneralizedRCNNWithTTA] = {}

    def _tta_model(self, short_side: int) -> GeneralizedRCNNWithTTA:
        """Detectron2's flip TTA with the short side resized to `short_side` (the tile's, times the trial's scale)."""
        if short_side not in self._tta_models:
            cfg = self.cfg.clone()
            cfg.defrost()
            cfg.TEST.AUG.ENABLED = True
            cfg.TEST.AUG.MIN_SIZES = (short_side,)
            cfg.TEST.AUG.MAX_SIZE = 100_000
            cfg.TEST.AUG.FLIP = True
            self._tta_models[short_side] = GeneralizedRCNNWithTTA(cfg, self.model)
        return self._tta_models[short_side]

    @torch.no_grad()
    def predict(self, image_path: str | Path, image_id) -> list[dict]:
        """COCO results for one tile: {image_id, category_id: 1, segmentation (RLE, counts str), bbox, score}."""
        image = utils.read_image(str(image_path), format=self.cfg.INPUT.FORMAT)
        h, w = image.shape[:2]
        if self.tta:  # the TTA model resizes to its own short side: the trial's scale of this tile
            model = self._tta_model(round(min(h, w) * float(self.hp["scale"])))
        else:
            model, aug = self.model, T.AugInput(image)
            self.augmentations(aug)
            image = aug.image
        # height and width: Detectron2's postprocessing returns boxes and masks at the tile's own size
        inputs = [{"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))), "height": h, "width": w}]
        instances = model(inputs)[0]["instances"].to("cpu")
        results = instances_to_coco_json(instances, image_id)
        for r in results:
            r["category_id"] = 1
        return sorted(results, key=lambda r: -r["score"])[: self.max_dets]
