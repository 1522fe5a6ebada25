"""How far each colour lever moves pixels: stain jitter beside brightness and contrast, on the course tiles.

    .venv/bin/python bench/stain_strength.py [--data ../shared/data/nuclei] [--draws 4] [--seed 0]

For each value of a lever, every course training tile gets `--draws` random draws of that augmentation, as a trial's
mapper makes them (`trainable.colour.RandomStain`, Detectron2's `RandomBrightness` and `RandomContrast`); the figures
are the absolute change of every channel value of every pixel, in grey levels (0-255), pooled over tiles and draws:
mean, median and 90th percentile. The "before" rows are the stain jitter as it was defined until item 16 (beta added
in raw HED units, Tellez et al.'s own definition) for comparison. Last, the colour a nucleus pixel takes at the two
extremes of the haematoxylin jitter (alpha = 1 +- t, beta = +-t, eosin and DAB unchanged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAIN = (0.05, 0.1, 0.2, 0.3, 0.5)
BRIGHTNESS = (0.1, 0.2, 0.4)
CONTRAST = (0.1, 0.2, 0.4)
BEFORE = (0.05, 0.1)
NUCLEUS = (169, 81, 120)  # an RGB haematoxylin pixel of a course tile (issue 21)


def before_stain(image: np.ndarray, t: float) -> np.ndarray:
    """The stain jitter before item 16: alpha * hed + beta with beta ~ U[-t, t] in raw HED units (BGR image)."""
    import cv2

    from trainable.colour import _LOG_RGB, _in_order, stain_map

    m = _in_order(*stain_map(np.random.uniform(1 - t, 1 + t, 3), np.random.uniform(-t, t, 3)), "BGR")
    return cv2.convertScaleAbs(cv2.exp(cv2.transform(cv2.LUT(image, _LOG_RGB), m)), alpha=255.0)


def levers():
    from detectron2.data import transforms as T

    from trainable.colour import RandomStain

    for t in STAIN:
        yield "stain", t, RandomStain(t).get_transform
    for t in BEFORE:
        yield "stain (before: beta in HED units)", t, None
    for b in BRIGHTNESS:
        yield "brightness", b, T.RandomBrightness(1 - b, 1 + b).get_transform
    for c in CONTRAST:
        yield "contrast", c, T.RandomContrast(1 - c, 1 + c).get_transform


def change(images: list[np.ndarray], transform, t: float, draws: int) -> np.ndarray:
    """Histogram (256 bins) of |out - in| over every channel value of every draw on every image."""
    import cv2

    hist = np.zeros(256, np.int64)
    for image in images:
        for _ in range(draws):
            out = before_stain(image, t) if transform is None else transform(image).apply_image(image)
            hist += np.bincount(cv2.absdiff(out, image).ravel(), minlength=256)
    return hist


def stats(hist: np.ndarray) -> tuple[float, int, int]:
    cdf = np.cumsum(hist) / hist.sum()
    mean = float((np.arange(256) * hist).sum() / hist.sum())
    return mean, int(np.searchsorted(cdf, 0.5)), int(np.searchsorted(cdf, 0.9))


def nucleus_extremes(reference: np.ndarray, t: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """NUCLEUS (RGB) with haematoxylin at alpha = 1 + t, beta = +t and at 1 - t, -t, beta x the tile's mean H."""
    import cv2

    from trainable.colour import _LOG_RGB, _in_order, mean_stains, stain_map

    mean = mean_stains(cv2.LUT(reference, _LOG_RGB), "RGB")
    pixel = np.array(NUCLEUS, np.uint8).reshape(1, 1, 3)
    out = []
    for sign in (1, -1):
        m = _in_order(*stain_map(np.array([1 + sign * t, 1, 1]), np.array([sign * t * mean[0], 0, 0])), "RGB")
        rgb = cv2.convertScaleAbs(cv2.exp(cv2.transform(cv2.LUT(pixel, _LOG_RGB), m)), alpha=255.0)
        out.append(tuple(int(v) for v in rgb.ravel()))
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "nuclei"))
    p.add_argument("--draws", type=int, default=4, help="random draws of each lever value per tile")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import cv2

    cv2.setNumThreads(1)
    paths = sorted(Path(args.data, "train").glob("*/images/*.png"))
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]  # BGR, as the loader reads them
    print(f"{len(images)} course tiles, {args.draws} draws per lever value and tile; |change| in grey levels\n")
    print("| lever | value | mean | median | p90 |")
    print("|---|---|---|---|---|")
    for name, value, transform in levers():
        np.random.seed(args.seed)
        mean, median, p90 = stats(change(images, transform, value, args.draws))
        print(f"| {name} | {value:g} | {mean:.1f} | {median} | {p90} |")

    tile = paths[0]
    reference = np.ascontiguousarray(images[0][..., ::-1])
    print(f"\nnucleus pixel RGB {NUCLEUS}, haematoxylin jitter at its extremes (beta x the mean H of {tile.stem}):")
    for t in STAIN:
        darker, lighter = nucleus_extremes(reference, t)
        print(f"  stain {t:g}: {darker} (more H) .. {lighter} (less H)")


if __name__ == "__main__":
    main()
