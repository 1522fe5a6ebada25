"""Predicted masks drawn over a tile (a colour per nucleus, outlined), like the course report's figure 13."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image


def confident(detections: list[dict], min_score: float = 0.5) -> list[dict]:
    """Detections worth drawing: score >= min_score, or for a weak model its top 10% (at least one)."""
    ranked = sorted(detections, key=lambda d: -d["score"])
    return [d for d in ranked if d["score"] >= min_score] or ranked[: max(1, len(ranked) // 10)]


def draw(image_rgb: np.ndarray, rles: list[dict], alpha: float = 0.45, seed: int = 0) -> np.ndarray:
    """RGB uint8 image with every RLE mask filled in a random colour and outlined in white."""
    out = image_rgb.astype(np.float32).copy()
    colors = np.random.default_rng(seed).uniform(40, 255, size=(max(1, len(rles)), 3))
    edges = np.zeros(image_rgb.shape[:2], bool)
    for rle, color in zip(rles, colors, strict=False):
        m = mask_util.decode(rle).astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * color
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        edges |= m & ~inner
    out[edges] = 255
    return out.clip(0, 255).astype(np.uint8)


def save(image_path: str | Path, rles: list[dict], out_path: str | Path) -> Path:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    out_path = Path(out_path)
    Image.fromarray(draw(image, rles)).save(out_path)
    return out_path
