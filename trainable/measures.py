"""The nuclei field's measures of an instance segmentation, beside COCO's mask AP: object-level precision, recall and
F1 at IoU above 0.5, panoptic quality PQ = F1 x SQ (Kirillov et al. 2019; HoVer-Net, CoNIC: PQ's detection quality
DQ is this F1, its segmentation quality SQ the mean IoU of the matched pairs), AJI (Kumar et al. 2017, the MoNuSeg
challenge's ranking measure) and the Dice of the nuclei's union.

Each is computed on one tile's instance label maps (0 background, one integer per nucleus), and a dataset's figure is
the mean over its tiles, as HoVer-Net and the MoNuSeg challenge report them. Matching (true and false positives, the
matched pairs' IoUs) is `stardist.matching.matching`, at IoU strictly above 0.5, which makes matches unique (the
field's rule; stardist compares with >=, so its threshold is the next float32 above 0.5). AJI pairs each true nucleus
with its highest-IoU prediction as MoNuSeg defines it (HoVer-Net's `get_fast_aji`), on stardist's overlap table:
`cellseg_metrics.aggregated_jaccard_index` pairs by largest intersection instead and builds a full-tile mask per
nucleus (seconds per course tile). Dice is `cellseg_metrics.dice_coef`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from trainable.metrics import MEASURES

MATCH_IOU = 0.5  # a true and a predicted nucleus match when their IoU is above this

# stardist.matching keeps IoU >= its threshold, computed in float32: the next float32 above 0.5 keeps IoU > 0.5.
_ABOVE_MATCH_IOU = float(np.nextafter(np.float32(MATCH_IOU), np.float32(1)))

Box = tuple[int, int, int, int]  # x, y, width, height in pixels (COCO's bbox)


def label_map(shape: tuple[int, int], objects: Iterable[tuple[np.ndarray, Box]]) -> np.ndarray:
    """The instance label map (int32, 0 background, 1, 2, ... in the given order) of full-tile binary masks, each
    with a box that holds it; later objects are painted over earlier ones. Painting detections lowest score first
    gives each pixel to the highest-scoring detection that covers it; one that others cover whole disappears."""
    out = np.zeros(shape, np.int32)
    for label, (mask, (x, y, w, h)) in enumerate(objects, start=1):
        window = out[y : y + h, x : x + w]
        window[mask[y : y + h, x : x + w].astype(bool)] = label
    return out


def rle_box(rle: dict) -> Box:
    """The whole-pixel box that holds a COCO RLE mask."""
    import pycocotools.mask as mask_util

    x, y, w, h = mask_util.toBbox(rle)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    return x0, y0, int(np.ceil(x + w)) - x0, int(np.ceil(y + h)) - y0


def rle_label_map(shape: tuple[int, int], rles: Iterable[dict]) -> np.ndarray:
    """The instance label map of COCO RLE masks, painted in the given order (see label_map)."""
    import pycocotools.mask as mask_util

    return label_map(shape, ((mask_util.decode(r), rle_box(r)) for r in rles))


def measures(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The MEASURES of one tile: `pred` against `true`, two instance label maps of the same shape. A tile with no
    nucleus and no prediction scores 0 on each, as HoVer-Net's functions do (course tiles all have nuclei; a small
    `val_crop` may not)."""
    from cellseg_metrics import dice_coef, get_stats
    from skimage.segmentation import relabel_sequential
    from stardist.matching import label_overlap, matching

    if true.shape != pred.shape:
        raise ValueError(f"label maps of different shapes: {true.shape} and {pred.shape}")
    m = matching(true, pred, thresh=_ABOVE_MATCH_IOU, criterion="iou")
    overlap = label_overlap(relabel_sequential(true)[0], relabel_sequential(pred)[0], check=False)
    return {
        "precision": float(m.precision),
        "recall": float(m.recall),
        "f1": float(m.f1),
        "sq": float(m.mean_matched_score),
        "pq": float(m.panoptic_quality),
        "aji": aji(overlap),
        "dice": float(dice_coef(*get_stats(true > 0, pred > 0))),
    }


def aji(overlap: np.ndarray) -> float:
    """Aggregated Jaccard Index from an overlap table (pixels of true label i and predicted label j; row and column 0
    are the background): each true nucleus adds its intersection and union with its highest-IoU prediction (its own
    area where it overlaps none), and every prediction paired with no true nucleus adds its area to the union."""
    inter = overlap[1:, 1:].astype(np.float64)
    true_area = overlap[1:, :].sum(axis=1).astype(np.float64)
    pred_area = overlap[:, 1:].sum(axis=0).astype(np.float64)
    if inter.size == 0:
        return 0.0
    union = true_area[:, None] + pred_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    best = iou.argmax(axis=1)  # the first of equals, as numpy's argmax (and HoVer-Net's) picks
    paired = iou[np.arange(len(best)), best] > 0
    rows, cols = np.nonzero(paired)[0], best[paired]
    used = np.zeros(len(pred_area), bool)
    used[cols] = True
    total_union = union[rows, cols].sum() + true_area[~paired].sum() + pred_area[~used].sum()
    return float(inter[rows, cols].sum() / total_union) if total_union else 0.0


def mean_over_tiles(per_tile: list[dict[str, float]]) -> dict[str, float]:
    """Each measure's mean over tiles (NaN for none)."""
    return {k: float(np.mean([t[k] for t in per_tile])) if per_tile else float("nan") for k in MEASURES}
