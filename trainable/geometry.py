"""Geometric transforms Detectron2 lacks in the exact form nuclei need, as Detectron2 Transforms/Augmentations.

- `Rot90Transform`: rotation by a multiple of 90 degrees (with flips: the dihedral group; nuclei have no orientation).
  Exact on pixels, coordinates and masks, no interpolation.
- `ResizeTransform`: Detectron2's resize (bilinear image) whose masks use one explicit nearest-neighbour rule,
  `nearest_index`, so that trainable.masks can move box-local patches by the very same rule.
- `RandomScaledCrop`: training's crop at scale s (s = scale x U[1 - jitter, 1 + jitter]): a crop of crop_size / s
  pixels of the tile, resized to ~crop_size. Samples keep their size (and cost) whatever the scale.
- `Rescale`: the test-time scale (validation and export alike); Detectron2's postprocessing maps the predictions
  back to the tile's own height and width.
"""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """For each of n_out output pixels, the input pixel whose centre is nearest (pixel centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


class Rot90Transform(T.Transform):
    """Rotate an h x w image by k x 90 degrees counter-clockwise (numpy.rot90)."""

    def __init__(self, h: int, w: int, k: int):
        super().__init__()
        self._set_attributes({"h": h, "w": w, "k": k % 4})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        h, w = self.h, self.w
        for _ in range(self.k):  # a quarter turn: (x, y) -> (y, w - x) and the image becomes w x h
            coords = np.stack([coords[:, 1], w - coords[:, 0]], axis=1)
            h, w = w, h
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> T.Transform:
        h, w = (self.h, self.w) if self.k % 2 == 0 else (self.w, self.h)
        return Rot90Transform(h, w, 4 - self.k)


class RandomRot90(T.Augmentation):
    """With probability `prob`, a rotation by 90, 180 or 270 degrees (equally likely); prob 0.75 makes all four
    rotations equally likely."""

    def __init__(self, prob: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        if self._rand_range() < self.prob:
            return Rot90Transform(h, w, int(np.random.randint(1, 4)))
        return T.NoOpTransform()


class ResizeTransform(T.ResizeTransform):
    """Detectron2's ResizeTransform (bilinear image); masks by `nearest_index`, the rule patches follow too."""

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        rows, cols = nearest_index(self.new_h, self.h), nearest_index(self.new_w, self.w)
        return segmentation[np.ix_(rows, cols)]


class RandomScaledCrop(T.Augmentation):
    """A random crop of round(crop_size / s) pixels resized by s = scale x U[1 - jitter, 1 + jitter] (clamped to the
    tile, like Detectron2's RandomCrop)."""

    def __init__(self, crop_size: int, scale: float, jitter: float = 0.0):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        s = self.scale * (self._rand_range(1 - self.jitter, 1 + self.jitter) if self.jitter else 1.0)
        ch, cw = (min(n, max(1, round(self.crop_size / s))) for n in (h, w))
        y0, x0 = np.random.randint(h - ch + 1), np.random.randint(w - cw + 1)
        resize = ResizeTransform(ch, cw, max(1, round(ch * s)), max(1, round(cw * s)))
        return T.TransformList([T.CropTransform(x0, y0, cw, ch), resize])


class Rescale(T.Augmentation):
    """Resize the whole image by a fixed factor (the test-time scale)."""

    def __init__(self, scale: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        return ResizeTransform(h, w, max(1, round(h * self.scale)), max(1, round(w * self.scale)))
