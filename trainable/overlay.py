"""Masks drawn over a tile (a colour per nucleus, outlined), like the course report's figure 13; for validation, the
ground truth beside the prediction with a caption."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw


def confident(detections: list[dict], min_score: float = 0.5) -> list[dict]:
    """Detections worth drawing: score >= min_score, or for a weak model its top 10% (at least one)."""
    ranked = sorted(detections, key=lambda d: -d["score"])
    return [d for d in ranked if d["score"] >= min_score] or ranked[: max(1, len(ranked) // 10)]


def draw(image_rgb: np.ndarray, rles: list[dict], alpha: float = 0.45, seed: int = 0) -> np.ndarray:
    """RGB uint8 image with every RLE mask filled in a random colour and outlined in white."""
    out = image_rgb.astype(np.float32).copy()
    h, w = image_rgb.shape[:2]
    colors = np.random.default_rng(seed).uniform(40, 255, size=(max(1, len(rles)), 3))
    edges = np.zeros((h, w), bool)
    boxes = mask_util.toBbox(rles).reshape(-1, 4) if rles else np.zeros((0, 4))
    for rle, color, (bx, by, bw, bh) in zip(rles, colors, boxes, strict=False):
        # Work in the mask's box plus one pixel (its outline needs the zero neighbours), not on the whole tile.
        x0, y0 = max(0, int(bx) - 1), max(0, int(by) - 1)
        x1, y1 = min(w, int(np.ceil(bx + bw)) + 1), min(h, int(np.ceil(by + bh)) + 1)
        m = mask_util.decode(rle)[y0:y1, x0:x1].astype(bool)
        region = out[y0:y1, x0:x1]
        region[m] = (1 - alpha) * region[m] + alpha * color
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        edges[y0:y1, x0:x1] |= m & ~inner
    out[edges] = 255
    return out.clip(0, 255).astype(np.uint8)


def save(image_path: str | Path, rles: list[dict], out_path: str | Path) -> Path:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    out_path = Path(out_path)
    Image.fromarray(draw(image, rles)).save(out_path)
    return out_path


def save_comparison(image_path: str | Path, truth: list[dict], predicted: list[dict], caption: str, out_path) -> Path:
    """Ground truth (left) and prediction (right) on the same tile, side by side under a caption."""
    image = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = image.shape[:2]
    gap = 8
    char = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength("nucleus ") / 8  # PIL's default font
    lines = textwrap.wrap(caption, width=max(30, int((2 * w + gap - 8) / char)))
    band = 8 + 14 * len(lines)
    canvas = Image.new("RGB", (2 * w + gap, h + band), "white")
    canvas.paste(Image.fromarray(draw(image, truth)), (0, band))
    canvas.paste(Image.fromarray(draw(image, predicted)), (w + gap, band))
    ImageDraw.Draw(canvas).multiline_text((4, 4), "\n".join(lines), fill="black", spacing=3)
    out_path = Path(out_path)
    canvas.save(out_path)
    return out_path
