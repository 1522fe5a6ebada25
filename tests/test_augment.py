"""The training mapper: patches inside their boxes must give exactly what full-size masks give (course data)."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from trainable.augment import FullMaskMapper, NucleiTrainMapper, build_augmentations, with_images
from trainable.config import with_defaults
from trainable.data import load_train_records


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
