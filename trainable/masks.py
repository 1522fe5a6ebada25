"""Instance masks kept inside their boxes: decoded once, cached, cropped and flipped as small patches.

A nucleus covers ~0.05 % of a 1000x1000 tile, so a full-tile mask per instance wastes 99.9 % of its bytes (a 500 px
training crop with 146 nuclei is 36 MB of full-crop masks). Here each instance is a patch the size of its box:

- `PackedMasks` (NumPy): every instance of one image, as boxes + the concatenated patch pixels. Made once from the mask
  PNGs, saved beside the annotation cache (`.npz`), and moved through Detectron2's transforms patch by patch.
- `trainable.box_masks.BoxMasks` (torch): what the training mapper gives the model as `gt_masks`.

NumPy only at import: the drivers read the cache without torch; Detectron2's transforms load where masks move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from detectron2.data import transforms as T

    from trainable.geometry import ResizeTransform


@dataclass(eq=False)
class PackedMasks:
    """The instances of one image: `boxes` (N, 4) int x0, y0, x1, y1 (end exclusive), patches concatenated in `flat`."""

    boxes: np.ndarray
    flat: np.ndarray  # bool, the patches' pixels one after another (row-major)
    offsets: np.ndarray  # (N + 1,) start of each patch in `flat`

    @classmethod
    def from_patches(cls, boxes: list, patches: list[np.ndarray]) -> PackedMasks:
        sizes = [p.size for p in patches]
        flat = np.concatenate([p.ravel() for p in patches]).astype(bool) if patches else np.zeros(0, bool)
        return cls(
            boxes=np.asarray(boxes, dtype=np.int32).reshape(-1, 4),
            flat=flat,
            offsets=np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]),
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def __eq__(self, other) -> bool:
        return isinstance(other, PackedMasks) and all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("boxes", "flat", "offsets")
        )

    def patch(self, i: int) -> np.ndarray:
        x0, y0, x1, y1 = self.boxes[i]
        return self.flat[self.offsets[i] : self.offsets[i + 1]].reshape(y1 - y0, x1 - x0)

    def full(self, i: int, height: int, width: int) -> np.ndarray:
        """Instance i as a full-image uint8 mask (for checks and the reference mapper)."""
        out = np.zeros((height, width), np.uint8)
        x0, y0, x1, y1 = self.boxes[i]
        out[y0:y1, x0:x1] = self.patch(i)
        return out

    def save(self, path: Path) -> None:
        np.savez_compressed(path, boxes=self.boxes, bits=np.packbits(self.flat), offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> PackedMasks:
        with np.load(path) as z:
            offsets = z["offsets"]
            flat = np.unpackbits(z["bits"], count=int(offsets[-1])).astype(bool)
            return cls(boxes=z["boxes"], flat=flat, offsets=offsets)

    def transformed(self, transforms: T.TransformList, height: int, width: int) -> list[tuple[int, int, np.ndarray]]:
        """The instances after Detectron2's `transforms` (as applied to a height x width image), as (x0, y0, patch).

        Crops, flips, quarter turns and resizes move patches by the rules their full-size masks follow (crops and
        flips as views, no copy); photometric transforms leave them; any other transform is
        applied to a full-size mask per instance (correct, slower). Patches are tight and never empty, in order.
        """
        from detectron2.data import transforms as T

        from trainable.geometry import ResizeTransform, Rot90Transform

        photometric = (T.NoOpTransform, T.BlendTransform, T.ColorTransform)  # they move no pixel of a mask
        keep = np.arange(len(self))
        geometric = [t for t in transforms.transforms if not isinstance(t, photometric)]
        if geometric and isinstance(geometric[0], T.CropTransform):  # the usual first step: skip what it cuts away
            c, b = geometric[0], self.boxes
            keep = np.flatnonzero((b[:, 0] < c.x0 + c.w) & (b[:, 2] > c.x0) & (b[:, 1] < c.y0 + c.h) & (b[:, 3] > c.y0))
        items = [(int(self.boxes[i, 0]), int(self.boxes[i, 1]), self.patch(i)) for i in keep]
        for t in transforms.transforms:
            if isinstance(t, photometric):
                continue
            if isinstance(t, T.CropTransform):
                items = _crop(items, t.x0, t.y0, t.w, t.h)
                height, width = t.h, t.w
            elif isinstance(t, T.HFlipTransform):
                items = [(width - x0 - p.shape[1], y0, p[:, ::-1]) for x0, y0, p in items]
            elif isinstance(t, T.VFlipTransform):
                items = [(x0, height - y0 - p.shape[0], p[::-1, :]) for x0, y0, p in items]
            elif isinstance(t, Rot90Transform):
                for _ in range(t.k):  # a quarter turn: pixel (x, y) -> (y, width - 1 - x)
                    items = [(y0, width - x0 - p.shape[1], np.rot90(p)) for x0, y0, p in items]
                    height, width = width, height
            elif isinstance(t, ResizeTransform):
                items = _resize(items, t)
                height, width = t.new_h, t.new_w
            else:
                items, (height, width) = _through_full_masks(items, t, height, width)
        return [_tight(x0, y0, p) for x0, y0, p in items if p.any()]


def _crop(items: list, cx: int, cy: int, cw: int, ch: int) -> list:
    out = []
    for x0, y0, p in items:
        h, w = p.shape
        ax, ay = max(x0, cx), max(y0, cy)
        bx, by = min(x0 + w, cx + cw), min(y0 + h, cy + ch)
        if ax < bx and ay < by:
            out.append((ax - cx, ay - cy, p[ay - y0 : by - y0, ax - x0 : bx - x0]))
    return out


def _resize(items: list, t: ResizeTransform) -> list:
    """The output pixels whose nearest input pixel lies in a patch, as ResizeTransform.apply_segmentation picks
    them (`nearest_index` is non-decreasing, so each patch's rows and columns are one run)."""
    from trainable.geometry import nearest_index

    rows, cols = nearest_index(t.new_h, t.h), nearest_index(t.new_w, t.w)
    out = []
    for x0, y0, p in items:
        r0, r1 = np.searchsorted(rows, [y0, y0 + p.shape[0]])
        c0, c1 = np.searchsorted(cols, [x0, x0 + p.shape[1]])
        out.append((int(c0), int(r0), p[np.ix_(rows[r0:r1] - y0, cols[c0:c1] - x0)]))
    return out


def _tight(x0: int, y0: int, p: np.ndarray) -> tuple[int, int, np.ndarray]:
    rows, cols = np.flatnonzero(p.any(axis=1)), np.flatnonzero(p.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return x0 + c0, y0 + r0, p[r0:r1, c0:c1]


def _through_full_masks(items: list, t, height: int, width: int) -> tuple[list, tuple[int, int]]:
    """Fallback for transforms without a patch rule: full-size mask -> t.apply_segmentation -> patch again."""
    out, size = [], None
    for x0, y0, p in items:
        full = np.zeros((height, width), np.uint8)
        full[y0 : y0 + p.shape[0], x0 : x0 + p.shape[1]] = p
        m = t.apply_segmentation(full) > 0
        size = m.shape
        if m.any():
            out.append(_tight(0, 0, m))
    if size is None:  # no instance: the output size from the transform itself
        size = t.apply_image(np.zeros((height, width), np.uint8)).shape[:2]
    return out, size
