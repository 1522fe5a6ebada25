"""Mask-quality rescoring: each detection's score x the mean mask probability inside its mask.

The course metric ranks the 100 best-scored detections of tiles with hundreds of nuclei, so the order of scores
decides AP50@100. A box classifier's score says "a nucleus is here", not "this mask is good"; Mask Scoring R-CNN
(Huang et al. 2019) learns a mask-IoU head for that, and SOLOv2's "maskness" gets most of the way without training:
the mean of the mask head's probabilities over the pixels it calls foreground. Only scores change: boxes, masks and
the set of detections stay as they are (tests/test_levers.py); `Ranking` keeps the best of the rescored pool.
"""

from __future__ import annotations

import torch
from detectron2.structures import Instances
from torch import nn

from trainable.evaluate import fetch_count


def mask_quality(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, 1, M, M) mask probabilities -> (N,) mean probability over pixels above 0.5 (0 for an empty mask)."""
    p = probabilities.flatten(1)
    inside = p > 0.5
    return (p * inside).sum(1) / inside.sum(1).clamp(min=1)


def rescore(instances: Instances) -> Instances:
    """In place: scores x mask quality, while `pred_masks` are still the mask head's probabilities."""
    instances.scores = instances.scores * mask_quality(instances.pred_masks).to(instances.scores.dtype)
    return instances


class Ranking:
    """Which detections of a Detectron2 Mask R-CNN an inference keeps, one rule for validation and export alike.

    Without rescoring, the box predictor keeps the best by box score, and the best `kept` of a longer list are the
    same `kept`, so it keeps only what is asked for (with fetch_count's margin). With rescoring, the order changes
    after the box predictor: the mask head rescores the model's whole pool (its TEST.DETECTIONS_PER_IMAGE, the same
    whoever asks) and only then are the best kept, so that the top 100 a submission ships are the top 100 validation
    scored, whatever `val_detections` or `--max-dets` are. Masks are pasted for the kept ones only."""

    def __init__(self, model: nn.Module, rescoring: bool):
        self.predictor = model.roi_heads.box_predictor
        self.pool = int(self.predictor.test_topk_per_image)
        self.rescoring = rescoring
        self.keep: int | None = None  # with rescoring: detections kept after it (None: the whole pool)
        if rescoring:
            model.roi_heads.mask_head.register_forward_hook(self._after_mask_head)

    def keep_best(self, kept: int | None) -> None:
        """From now on keep each image's best `kept` detections (None: all of the model's), plus fetch_count's margin:
        Detectron2 drops empty boxes after this cut."""
        n = fetch_count(kept) if kept else None
        if self.rescoring:
            self.keep = n
        else:
            self.predictor.test_topk_per_image = n or self.pool

    def _after_mask_head(self, module: nn.Module, inputs, outputs):
        if module.training or not isinstance(outputs, list):  # inference only: the instances, masks not pasted yet
            return outputs
        for instances in outputs:
            rescore(instances)
        if self.keep is None:
            return outputs
        return [i[i.scores.argsort(descending=True)[: self.keep]] for i in outputs]
