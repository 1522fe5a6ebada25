"""Mask AP with pycocotools, as the course scorer computes it (AP at IoU 0.5, top 100 detections per image).

Every course image has more than 100 nuclei, so the 100-detection cap bounds recall; `*_all` metrics lift the cap
to show what the model really finds, and so do the nuclei field's measures (trainable.measures: F1, PQ, AJI, Dice),
computed on the instance label map the kept detections paint.
"""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from trainable import measures
from trainable.metrics import COURSE_MAX_DETS

UNCAPPED_MAX_DETS = 100_000


def coco_ground_truth(records: list[dict]) -> COCO:
    """A pycocotools COCO object from Detectron2 records (RLE annotations); image ids are the records' ids."""
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "height": rec["height"], "width": rec["width"]})
        for ann in rec.get("annotations", []):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": rec["image_id"],
                    "category_id": 1,
                    "segmentation": ann["segmentation"],
                    "area": ann["area"],
                    "bbox": ann["bbox"],
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nucleus"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _ap(precision: np.ndarray, iou_index: int | None, maxdet_index: int) -> float:
    """Mean precision over recall thresholds (area 'all', category 0), like COCOeval.summarize."""
    p = precision[:, :, 0, 0, maxdet_index] if iou_index is None else precision[iou_index, :, 0, 0, maxdet_index]
    p = p[p > -1]
    return float(p.mean()) if p.size else 0.0


def mask_ap(gt: COCO, results: list[dict]) -> dict[str, float]:
    """map50 / map at the course's 100-detection cap, and the same uncapped (`*_all`); values in [0, 1]."""
    if not results:
        return {"map50": 0.0, "map50_all": 0.0, "map": 0.0, "map_all": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="segm")
        ev.params.maxDets = [COURSE_MAX_DETS, UNCAPPED_MAX_DETS]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]
    return {
        "map50": _ap(precision, 0, 0),
        "map50_all": _ap(precision, 0, 1),
        "map": _ap(precision, None, 0),
        "map_all": _ap(precision, None, 1),
    }


def fetch_count(kept: int) -> int:
    """Detections to ask the model for when the best `kept` are wanted. Detectron2 caps its detections before
    detector_postprocess drops empty boxes, so a cap of exactly `kept` could leave fewer than `kept`, and not the
    best `kept` of the uncapped list; a margin of as many again keeps them exact unless half are empty."""
    return 2 * kept


def recall_ceiling(gt: COCO, max_dets: int = COURSE_MAX_DETS) -> dict:
    """Per image, the best recall possible with max_dets detections: min(1, max_dets / instances)."""
    return {i: min(1.0, max_dets / max(1, len(gt.getAnnIds(imgIds=[i])))) for i in gt.getImgIds()}


def truth_label_map(record: dict) -> np.ndarray:
    """A record's nuclei as an instance label map (its RLE annotations, in order)."""
    rles = (a["segmentation"] for a in record.get("annotations", []))
    return measures.rle_label_map((record["height"], record["width"]), rles)


def predicted_label_map(shape: tuple[int, int], results: list[dict]) -> np.ndarray:
    """The instance label map that an image's detections (COCO results: RLE masks, scores) paint, lowest score
    first: where detections overlap, the pixel goes to the highest-scoring one (of equal scores, the one listed
    first, as in the submission's order: trainable.instance_formats.tile_label_map agrees)."""
    ordered = sorted(results, key=lambda r: -r["score"])[::-1]
    return measures.rle_label_map(shape, (r["segmentation"] for r in ordered))


class MaskAPEvaluator(DatasetEvaluator):
    """Detectron2 evaluator over a list of records: val_map50, val_map; uncapped, also val_map50_all, val_map_all and
    the nuclei measures (val_f1, val_pq, val_aji, ...: trainable.metrics.MEASURE_KEYS) of the kept detections.

    One evaluator serves every validation of a trial (Detectron2 calls `reset` before each pass): the ground truth,
    its label maps included, is built once."""

    def __init__(self, records: list[dict], uncapped: bool = True, max_dets: int | None = None):
        """`max_dets`: keep each image's best `max_dets` detections (the model may give more, see fetch_count)."""
        self._gt = coco_ground_truth(records)
        self._uncapped = uncapped
        self.max_dets = max_dets
        self._truth = {r["image_id"]: truth_label_map(r) for r in records} if uncapped else {}
        self.reset()

    @property
    def results(self) -> list[dict]:
        """COCO-format detections of the last pass (RLE masks, scores)."""
        return self._results

    def reset(self) -> None:
        self._results, self._detections, self._per_tile = [], 0, []
        self.measure_seconds = 0.0  # the nuclei measures' share of the last pass (painting and matching)

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            instances = out["instances"].to("cpu")
            instances = instances[instances.scores.argsort(descending=True)[: self.max_dets]]
            self._detections += len(instances)
            results = instances_to_coco_json(instances, inp["image_id"])
            for r in results:
                r["category_id"] = 1
            self._results.extend(results)
            truth = self._truth.get(inp["image_id"])
            if truth is not None:
                start = time.perf_counter()
                self._per_tile.append(measures.measures(truth, predicted_label_map(truth.shape, results)))
                self.measure_seconds += time.perf_counter() - start

    def evaluate(self) -> dict[str, float]:
        metrics = {f"val_{k}": v for k, v in mask_ap(self._gt, self._results).items()}
        if not self._uncapped:  # with at most 100 detections per image, *_all would only repeat the capped values
            metrics = {k: v for k, v in metrics.items() if not k.endswith("_all")}
        else:
            metrics.update({f"val_{k}": v for k, v in measures.mean_over_tiles(self._per_tile).items()})
        metrics["val_detections_per_image"] = self._detections / max(1, len(self._gt.getImgIds()))
        return metrics
