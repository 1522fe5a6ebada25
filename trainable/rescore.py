"""Mask-quality rescoring: each detection's score x the mean mask probability inside its mask.

The course metric ranks the 100 best-scored detections of tiles with hundreds of nuclei, so the order of scores
decides AP50@100. A box classifier's score says "a nucleus is here", not "this mask is good"; Mask Scoring R-CNN
(Huang et al. 2019) learns a mask-IoU head for that, and SOLOv2's "maskness" gets most of the way without training:
the mean of the mask head's probabilities over the pixels it calls foreground. Only scores change: boxes, masks and
the set of detections stay as they are (tests/test_levers.py).
"""

from __future__ import annotations

import torch
from detectron2.structures import Instances
from torch import nn


def mask_quality(probabilities: torch.Tensor) -> torch.Tensor:
    """(N, 1, M, M) mask probabilities -> (N,) mean probability over pixels above 0.5 (0 for an empty mask)."""
    p = probabilities.flatten(1)
    inside = p > 0.5
    return (p * inside).sum(1) / inside.sum(1).clamp(min=1)


def rescore(instances: Instances) -> Instances:
    """In place: scores x mask quality, while `pred_masks` are still the mask head's probabilities."""
    instances.scores = instances.scores * mask_quality(instances.pred_masks).to(instances.scores.dtype)
    return instances


def _after_mask_head(module: nn.Module, inputs, outputs):
    if not module.training and isinstance(outputs, list):  # inference: the instances, masks not pasted yet
        for instances in outputs:
            rescore(instances)
    return outputs


def attach(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Rescore every inference of `model` (a Detectron2 Mask R-CNN); remove the returned handle to stop."""
    return model.roi_heads.mask_head.register_forward_hook(_after_mask_head)
