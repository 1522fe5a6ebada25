import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Boxes, Instances

from trainable.data import load_train_records
from trainable.evaluate import COURSE_MAX_DETS, MaskAPEvaluator, coco_ground_truth, mask_ap, recall_ceiling


def _perfect(record, shuffle_seed=0):
    """Ground-truth masks as detections, scores in a random order."""
    scores = np.random.default_rng(shuffle_seed).permutation(len(record["annotations"])) + 1.0
    return [
        {"image_id": record["image_id"], "category_id": 1, "segmentation": a["segmentation"], "score": float(s)}
        for a, s in zip(record["annotations"], scores / scores.max(), strict=True)
    ]


def test_perfect_predictions_uncapped_is_one_capped_hits_ceiling(small_data, cache_dir):
    record = load_train_records(small_data, cache_dir)[0][0]
    n = len(record["annotations"])
    assert n > COURSE_MAX_DETS
    gt = coco_ground_truth([record])
    m = mask_ap(gt, _perfect(record))
    assert m["map50_all"] == pytest.approx(1.0)
    assert m["map_all"] == pytest.approx(1.0)
    # Capped at 100 detections, recall cannot pass 100/n; COCO interpolates precision over 101 recall points.
    ceiling = recall_ceiling(gt)[record["image_id"]]
    assert ceiling == pytest.approx(COURSE_MAX_DETS / n)
    expected = np.sum(np.linspace(0, 1, 101) <= ceiling + 1e-12) / 101
    assert m["map50"] == pytest.approx(expected)
    assert m["map50"] < 0.5


def test_evaluator_on_detectron2_instances(small_data, cache_dir):
    record = load_train_records(small_data, cache_dir)[0][0]
    anns = record["annotations"][:50]  # a model that finds 50 nuclei perfectly, plus one false positive
    masks = np.stack([mask_util.decode(a["segmentation"]) for a in anns])
    fp = np.zeros((1, 1000, 1000), np.uint8)
    fp[0, :5, :5] = 1
    masks = np.concatenate([masks, fp])
    inst = Instances((1000, 1000))
    inst.pred_masks = torch.from_numpy(masks.astype(bool))
    inst.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    inst.scores = torch.linspace(1.0, 0.1, len(masks))
    inst.pred_classes = torch.zeros(len(masks), dtype=torch.int64)
    ev = MaskAPEvaluator([record])
    ev.reset()
    ev.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    m = ev.evaluate()
    recall = 50 / len(record["annotations"])
    assert m["val_map50"] == pytest.approx(np.sum(np.linspace(0, 1, 101) <= recall) / 101)
    assert m["val_detections_per_image"] == 51


def test_no_predictions_scores_zero(small_data, cache_dir):
    record = load_train_records(small_data, cache_dir)[0][0]
    assert mask_ap(coco_ground_truth([record]), [])["map50"] == 0.0
