"""Training-time augmentation (crop, flips, quarter turns, scale, colour) as a Detectron2 dataset mapper.

Detectron2's stock DatasetMapper decodes every RLE mask to full image size before cropping: on a 1000x1000 tile with
1,862 nuclei that is ~1.8 GB per sample. `NucleiTrainMapper` applies the same Detectron2 transforms to an image kept
in memory and moves each instance as a small patch inside its box (trainable.masks), so a 500 px sample costs
milliseconds and ships ~1 MB of masks instead of 36 MB.
"""

from __future__ import annotations

import copy

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from trainable.box_masks import BoxMasks
from trainable.colour import RandomChroma, RandomStain
from trainable.geometry import RandomRot90, RandomScaledCrop, Rescale


def build_augmentations(hp: dict, image_format: str = "BGR") -> list[T.Augmentation]:
    """Training augmentation: crop (at the trial's scale), flips, quarter turns, then colour. A lever at 0 adds
    nothing (and draws no random number), so the defaults are the course report's crop, flips and brightness."""
    crop, scale, jitter = int(hp["crop_size"]), float(hp["scale"]), float(hp["scale_jitter"])
    if scale == 1 and jitter == 0:
        augs: list[T.Augmentation] = [T.RandomCrop("absolute", (crop, crop))]
    else:
        augs = [RandomScaledCrop(crop, scale, jitter)]
    if hp["hflip"] > 0:
        augs.append(T.RandomFlip(prob=float(hp["hflip"]), horizontal=True, vertical=False))
    if hp["vflip"] > 0:
        augs.append(T.RandomFlip(prob=float(hp["vflip"]), horizontal=False, vertical=True))
    if hp["rot90"] > 0:
        augs.append(RandomRot90(float(hp["rot90"])))
    if hp["brightness"] > 0:
        augs.append(T.RandomBrightness(1 - float(hp["brightness"]), 1 + float(hp["brightness"])))
    if hp["contrast"] > 0:
        augs.append(T.RandomContrast(1 - float(hp["contrast"]), 1 + float(hp["contrast"])))
    if hp["stain"] > 0:
        augs.append(RandomStain(float(hp["stain"]), image_format))
    if hp["hue"] > 0 or hp["saturation"] > 0:
        augs.append(RandomChroma(float(hp["hue"]), float(hp["saturation"]), image_format))
    return augs


def inference_augmentations(hp: dict) -> list[T.Augmentation]:
    """What validation and export do to a tile before the model: the trial's scale (predictions come back at the
    tile's own size through Detectron2's postprocessing)."""
    return [Rescale(float(hp["scale"]))] if float(hp["scale"]) != 1 else []


def with_images(records: list[dict], image_format: str = "BGR") -> list[dict]:
    """The records with their decoded image (`image`, HWC uint8) added: each PNG is read once per trial."""
    out = []
    for r in records:
        image = utils.read_image(r["file_name"], format=image_format)
        utils.check_image_size(r, image)
        out.append({**r, "image": image})
    return out


class NucleiTrainMapper:
    """Record with `image` and `instance_masks` -> {"image": CHW uint8 tensor, "instances": gt_boxes, gt_classes,
    gt_masks (BoxMasks)}. Same transforms, same random draws and same instances as `FullMaskMapper`."""

    def __init__(self, augmentations: list[T.Augmentation]):
        self.augmentations = T.AugmentationList(augmentations)

    def __call__(self, record: dict) -> dict:
        aug_input = T.AugInput(record["image"])
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        items = record["instance_masks"].transformed(transforms, record["height"], record["width"])
        instances = Instances((h, w))
        instances.gt_masks = BoxMasks.from_items(items, (h, w))
        boxes = [(x0, y0, x0 + p.shape[1], y0 + p.shape[0]) for x0, y0, p in items]
        instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.zeros(len(items), dtype=torch.int64)
        out = {k: v for k, v in record.items() if k not in ("image", "instance_masks", "annotations")}
        out["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        out["instances"] = instances
        return out


class FullMaskMapper:
    """The straightforward mapper `NucleiTrainMapper` replaced, kept as its reference (tests, bench/mapper_speed.py):
    reads the PNG, decodes each RLE mask that touches the crop at full tile size, transforms it, ships BitMasks."""

    def __init__(self, augmentations: list[T.Augmentation], image_format: str = "BGR"):
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format

    def __call__(self, record: dict) -> dict:
        record = copy.copy(record)
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]

        masks = []
        for ann in record.pop("annotations"):
            x, y, bw, bh = ann["bbox"]
            box = transforms.apply_box(np.array([[x, y, x + bw, y + bh]], dtype=np.float32))[0]
            if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
                continue  # outside the crop: skip the decode
            m = transforms.apply_segmentation(mask_util.decode(ann["segmentation"]))
            if m.any():
                masks.append(np.ascontiguousarray(m))

        instances = Instances((h, w))
        bitmasks = BitMasks(torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool))
        instances.gt_masks = bitmasks
        instances.gt_boxes = bitmasks.get_bounding_boxes() if masks else Boxes(torch.zeros((0, 4)))
        instances.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        record["instances"] = instances
        return record
