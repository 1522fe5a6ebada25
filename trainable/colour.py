"""Colour augmentation for H&E tiles: stain (HED) jitter and hue/saturation jitter, as Detectron2 augmentations.

Both are linear maps in a colour space of scikit-image, so each sample costs one 3x3 matrix over its pixels, applied
by OpenCV (`cv2.transform`, ~2 ms for a 500 px crop on one core):

- Stain jitter (after Tellez et al. 2018, "HED jitter"), in units of each stain's own amount: in scikit-image's
  haematoxylin-eosin-DAB space (`rgb2hed`) every stain amount s becomes alpha * s + beta * m, alpha ~ U[1 - t, 1 + t]
  and beta ~ U[-t, t] per stain, where m is that stain's mean amount in the image (floored at 0). So t is a fraction
  of the stain itself: at t = 0.1 each stain is scaled by up to 10 % and shifted by up to 10 % of its mean. Tellez et
  al. add beta in raw HED units, where the stains of a course tile average 0.005-0.08: there beta = 0.05 alone can
  double or erase a stain (pixels moved by a mean of 40 grey levels at t = 0.05). Here, on the course tiles, t = 0.05
  ("light") moves pixels by a mean of ~2 grey levels (p90 4), t = 0.3 (the top of spaces/maskrcnn.yaml, "strong") by
  ~12 (p90 24), between brightness 0.1 and 0.2 (7 and 14) and above contrast 0.4 (8) (bench/stain_strength.py,
  bench/RESULTS.md item 16). `rgb2hed` works in optical density (OD = log(rgb) / log(1e-6)) times the matrix
  `hed_from_rgb`, so the jitter is OD -> OD @ A + b with A = hed_from_rgb @ diag(alpha) @ rgb_from_hed, and m is the
  image's mean OD @ hed_from_rgb (one `cv2.mean`, ~0.1 ms).
  Applying that map directly, rather than `hed2rgb(rgb2hed(x) * alpha + beta * m)`, skips `rgb2hed`'s clipping of
  negative stain amounts, which makes its round trip lossy (up to 54 grey levels on course tiles with alpha = 1,
  beta = 0) and costs ~15 ms per 500 px crop; equal where nothing is clipped (tests/test_levers.py).
- Hue/saturation jitter: in YIQ (`rgb2yiq`), a hue shift rotates the chroma plane (I, Q) and a saturation change
  scales it; luma (Y) is kept.

Images are uint8 in the loader's channel order (Detectron2's BGR by default); results are rounded and clipped to
[0, 255]. Masks are untouched: both are `ColorTransform`s, which move no pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.data import transforms as T

_LOG_ADJUST = np.log(1e-6)  # scikit-image's optical-density scale (separate_stains / combine_stains)
_LOG_RGB = np.log(np.maximum(np.arange(256) / 255.0, 1e-6)).astype(np.float32)  # log(rgb) of each uint8 level


def _in_order(a: np.ndarray, c: np.ndarray, image_format: str) -> np.ndarray:
    """x -> x @ a + c on RGB row vectors, as the 3 x 4 matrix cv2.transform applies to the image's own channels."""
    if image_format == "BGR":
        a, c = a[::-1, ::-1], c[::-1]
    return np.hstack([a.T, c[:, None]]).astype(np.float32)


def stain_map(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(rgb) -> log(rgb) @ A + c: hed -> alpha * hed + beta (beta in HED units), as one affine map of log(rgb)."""
    # Imported here: trials without colour jitter need neither scikit-image nor SciPy (a GPU machine may lack them).
    from skimage.color import hed_from_rgb, rgb_from_hed

    a = hed_from_rgb @ np.diag(alpha) @ rgb_from_hed
    c = _LOG_ADJUST * (np.asarray(beta) @ rgb_from_hed)
    return a, c


def mean_stains(log_rgb: np.ndarray, image_format: str = "BGR") -> np.ndarray:
    """Each stain's mean amount in an image of log(rgb) values (rgb2hed's, before its clip), floored at 0."""
    from skimage.color import hed_from_rgb

    mean = np.array(cv2.mean(log_rgb)[:3])
    if image_format == "BGR":
        mean = mean[::-1]
    return np.maximum(mean / _LOG_ADJUST @ hed_from_rgb, 0.0)


def apply_stain(image: np.ndarray, alpha, beta, image_format: str = "BGR") -> np.ndarray:
    """Each stain amount s -> alpha * s + beta * (the image's mean amount of that stain), per stain."""
    log_rgb = cv2.LUT(image, _LOG_RGB)
    shift = np.asarray(beta, float) * mean_stains(log_rgb, image_format)
    m = _in_order(*stain_map(np.asarray(alpha, float), shift), image_format)
    log_rgb = cv2.transform(log_rgb, m)
    return cv2.convertScaleAbs(cv2.exp(log_rgb), alpha=255.0)  # rounded, saturated to [0, 255]


def chroma_map(hue_degrees: float, saturation: float) -> np.ndarray:
    """rgb -> rgb @ M: rotate YIQ's chroma plane by `hue_degrees` and scale it by `saturation`."""
    from skimage.color.colorconv import rgb_from_yiq, yiq_from_rgb

    t = np.deg2rad(hue_degrees)
    m = np.eye(3)
    m[1:, 1:] = saturation * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return yiq_from_rgb.T @ m.T @ rgb_from_yiq.T


def apply_chroma(image: np.ndarray, hue_degrees: float, saturation: float, image_format: str = "BGR") -> np.ndarray:
    m = _in_order(chroma_map(hue_degrees, saturation), np.zeros(3), image_format)
    return cv2.transform(image, m)  # uint8 in, uint8 out: rounded, saturated


class RandomStain(T.Augmentation):
    """HED stain jitter of strength t: alpha ~ U[1 - t, 1 + t], beta ~ U[-t, t] (x the stain's mean) for each stain."""

    def __init__(self, strength: float, image_format: str = "BGR"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        t = self.strength
        alpha = np.random.uniform(1 - t, 1 + t, 3)
        beta = np.random.uniform(-t, t, 3)
        return T.ColorTransform(lambda img: apply_stain(img, alpha, beta, self.image_format))


class RandomChroma(T.Augmentation):
    """Hue shift ~ U[-hue, hue] degrees and saturation factor ~ U[1 - saturation, 1 + saturation]."""

    def __init__(self, hue: float, saturation: float, image_format: str = "BGR"):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        shift = np.random.uniform(-self.hue, self.hue)
        factor = np.random.uniform(1 - self.saturation, 1 + self.saturation)
        return T.ColorTransform(lambda img: apply_chroma(img, shift, factor, self.image_format))
