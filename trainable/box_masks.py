"""`BoxMasks`: what the training mapper gives the model as `gt_masks`, instance patches as torch tensors.

It has the part of the `BitMasks` interface that Mask R-CNN training uses (`__len__`, `__getitem__`, `to`,
`crop_and_resize`); `crop_and_resize` pastes the selected patches on the device and calls `BitMasks.crop_and_resize`,
so the targets are bit-identical. The patches come from `trainable.masks.PackedMasks.transformed`.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.structures import BitMasks


class BoxMasks:
    """`gt_masks` for Mask R-CNN training: N patches (zero-padded to one tensor) and their top-left corners.

    ~100x smaller than `BitMasks` of the same instances, so samples travel cheaply from loader workers to the
    model; full masks exist only inside `crop_and_resize`, on the model's device, for the sampled proposals.
    """

    def __init__(self, patches: torch.Tensor, origins: torch.Tensor, image_size: tuple[int, int]):
        self.patches = patches  # (N, Hp, Wp) bool
        self.origins = origins  # (N, 2) int64: x0, y0 of each patch in the image
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @classmethod
    def from_items(cls, items: list[tuple[int, int, np.ndarray]], image_size: tuple[int, int]) -> BoxMasks:
        hp = max((p.shape[0] for _, _, p in items), default=0)
        wp = max((p.shape[1] for _, _, p in items), default=0)
        patches = np.zeros((len(items), hp, wp), bool)
        for i, (_, _, p) in enumerate(items):
            patches[i, : p.shape[0], : p.shape[1]] = p
        origins = np.array([(x0, y0) for x0, y0, _ in items], dtype=np.int64).reshape(-1, 2)
        return cls(torch.from_numpy(patches), torch.from_numpy(origins), image_size)

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, item) -> BoxMasks:
        if isinstance(item, int):
            item = slice(item, item + 1)
        return BoxMasks(self.patches[item], self.origins[item], self.image_size)

    def to(self, *args, **kwargs) -> BoxMasks:
        return BoxMasks(self.patches.to(*args, **kwargs), self.origins.to(*args, **kwargs), self.image_size)

    @property
    def device(self) -> torch.device:
        return self.patches.device

    def to_bitmasks(self) -> BitMasks:
        """The same instances as full-image BitMasks (on this device)."""
        full = torch.zeros((len(self), *self.image_size), dtype=torch.bool, device=self.device)
        n, r, c = self.patches.nonzero(as_tuple=True)
        full[n, self.origins[n, 1] + r, self.origins[n, 0] + c] = True
        return BitMasks(full)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Mask R-CNN's training targets, exactly as `BitMasks.crop_and_resize` computes them."""
        return self.to_bitmasks().crop_and_resize(boxes, mask_size)
