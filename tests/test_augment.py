"""The training mapper: patches inside their boxes must give exactly what full-size masks give (course data)."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from trainable.augment import FullMaskMapper, NucleiTrainMapper, build_augmentations, with_images
from trainable.config import with_defaults
from trainable.data import load_train_records
from trainable.geometry import RandomRot90, RandomScaledCrop


@pytest.fixture(scope="module")
def records(small_data, cache_dir):
    recs, _ = load_train_records(small_data, cache_dir)
    return with_images(recs)


def _same_sample(old_mapper, new_mapper, record, seed: int) -> int:
    np.random.seed(seed)
    a = old_mapper(record)
    np.random.seed(seed)
    b = new_mapper(record)
    assert torch.equal(a["image"], b["image"])
    ia, ib = a["instances"], b["instances"]
    assert len(ia) == len(ib) and ia.image_size == ib.image_size
    assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
    assert torch.equal(ia.gt_classes, ib.gt_classes)
    assert torch.equal(ia.gt_masks.tensor, ib.gt_masks.to_bitmasks().tensor)
    # Mask R-CNN's targets: proposals near (and across) the boxes, some past the crop's border.
    boxes = ia.gt_boxes.tensor + torch.from_numpy(np.random.default_rng(seed).normal(0, 4, (len(ia), 4))).float()
    for idx in (torch.arange(len(ia)), torch.randint(0, len(ia), (7,))) if len(ia) else ():
        assert torch.equal(
            ia.gt_masks[idx].crop_and_resize(boxes[idx], 28), ib.gt_masks[idx].crop_and_resize(boxes[idx], 28)
        )
    return len(ia)


def test_new_mapper_equals_the_full_mask_mapper_on_the_same_random_state(records):
    hp = with_defaults({"crop_size": 500, "hflip": 0.5, "vflip": 0.5, "brightness": 0.2})
    old, new = FullMaskMapper(build_augmentations(hp)), NucleiTrainMapper(build_augmentations(hp))
    counts = [_same_sample(old, new, records[seed % len(records)], seed) for seed in range(9)]
    assert min(counts) > 20  # real crops of real tiles, not empty ones


def test_crop_larger_than_the_tile_and_a_transform_without_a_patch_rule(records):
    # A crop that takes the whole tile, then a rotation: masks go through the full-size fallback.
    augs = [T.RandomCrop("absolute", (1200, 1200)), T.RandomRotation([-20, 20], expand=False), T.RandomFlip(0.5)]
    old, new = FullMaskMapper(augs), NucleiTrainMapper(augs)
    assert _same_sample(old, new, records[0], seed=3) > 200


def test_a_sample_ships_a_fraction_of_the_full_masks(records):
    hp = with_defaults({"crop_size": 500})
    np.random.seed(0)
    new = NucleiTrainMapper(build_augmentations(hp))(records[0])
    np.random.seed(0)
    old = FullMaskMapper(build_augmentations(hp))(records[0])
    old_bytes = old["instances"].gt_masks.tensor.numel()
    new_bytes = new["instances"].gt_masks.patches.numel() + new["instances"].gt_masks.origins.numel() * 8
    assert new_bytes * 20 < old_bytes


@pytest.mark.parametrize("scale, jitter", [(1.0, 0.0), (1.5, 0.2), (0.6, 0.0)])
def test_quarter_turns_and_scales_move_patches_as_full_masks_move(records, scale, jitter):
    # The patch rules of Rot90Transform and ResizeTransform against each transform's own apply_segmentation.
    hp = with_defaults({"crop_size": 300, "rot90": 1.0, "scale": scale, "scale_jitter": jitter})
    old, new = FullMaskMapper(build_augmentations(hp)), NucleiTrainMapper(build_augmentations(hp))
    counts = [_same_sample(old, new, records[seed % len(records)], seed) for seed in range(4)]
    assert min(counts) > 5


def _painted(shape: tuple[int, int], seed: int, fill: float = 0.7):
    """A synthetic tile whose instances are the only bright pixels, and its packed masks."""
    from trainable.masks import PackedMasks

    rng = np.random.default_rng(seed)
    h, w = shape
    image, boxes, patches = np.zeros((h, w, 3), np.uint8), [], []
    for _ in range(25):
        ph, pw = rng.integers(3, 15, 2)
        y0, x0 = rng.integers(0, h - ph), rng.integers(0, w - pw)
        patch = rng.random((ph, pw)) < fill
        patch[0, 0] = patch[-1, -1] = True  # tight box
        overlap = image[y0 : y0 + ph, x0 : x0 + pw, 0] > 0
        patch &= ~overlap
        if not (patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()):
            continue
        image[y0 : y0 + ph, x0 : x0 + pw][patch] = 255
        boxes.append((x0, y0, x0 + pw, y0 + ph))
        patches.append(patch)
    record = {"image": image, "instance_masks": PackedMasks.from_patches(boxes, patches), "height": h, "width": w}
    return record, len(patches)


@pytest.mark.parametrize("seed", range(6))
def test_a_rotated_and_flipped_image_carries_its_masks_along(seed):
    """Instances are the bright pixels of a non-square tile: after crop, flips and quarter turns they still are."""
    record, n = _painted((90, 140), seed)
    augs = [T.RandomCrop("absolute", (80, 100)), T.RandomFlip(0.5), T.RandomFlip(0.5, horizontal=False, vertical=True)]
    np.random.seed(seed)
    out = NucleiTrainMapper([*augs, RandomRot90(1.0)])(record)
    bright = out["image"][0] > 0
    union = out["instances"].gt_masks.to_bitmasks().tensor.any(0)
    assert bright.shape == union.shape and torch.equal(bright, union) and n > 10
    boxes = out["instances"].gt_masks.to_bitmasks().get_bounding_boxes().tensor
    assert torch.equal(boxes, out["instances"].gt_boxes.tensor)


def test_a_scaled_crop_keeps_masks_on_their_pixels():
    """Bilinear image, nearest masks: the resized bright pixels and the resized masks agree (IoU), sizes scale."""
    record, _ = _painted((200, 200), seed=1, fill=1.0)  # solid: bilinear blur only at the edges
    np.random.seed(0)
    out = NucleiTrainMapper([RandomScaledCrop(120, 1.5), RandomRot90(1.0)])(record)
    assert tuple(out["image"].shape[1:]) == (120, 120)  # an 80 px crop of the tile, x 1.5
    bright = out["image"][0] > 127
    union = out["instances"].gt_masks.to_bitmasks().tensor.any(0)
    iou = (bright & union).sum() / (bright | union).sum()
    assert iou > 0.9, iou
