"""A tile's detections in the forms the nuclei field reads besides COCO results: an instance label map (16-bit PNG,
0 background, nucleus k = the tile's k-th detection in the submission, best first: HoVer-Net, StarDist and Cellpose
read such maps) and GeoJSON that QuPath opens as detections (one Feature per nucleus, its polygon along the pixel
edges of its mask, its score as a measurement).

Both come from the same label map, painted from the submission's detections lowest score first, so that where two
detections overlap the pixel belongs to the higher-scoring one (trainable.evaluate.predicted_label_map, what the
nuclei measures see); a detection that others cover whole has no pixel, and no Feature.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainable.evaluate import predicted_label_map

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

NUCLEUS = "Nucleus"  # QuPath's classification of the detections


def tile_label_map(shape: tuple[int, int], detections: list[dict]) -> np.ndarray:
    """uint16 label map of a tile's detections (COCO results, best first): label k is `detections[k - 1]`."""
    if len(detections) >= 2**16:
        raise ValueError(f"{len(detections)} detections do not fit a 16-bit label map")
    ranked = [dict(d, score=-k) for k, d in enumerate(detections)]  # paint in the submission's order, best last
    painted = predicted_label_map(shape, ranked)  # label j: the j-th painted, i.e. detection n - j
    out = np.zeros(shape, np.uint16)
    out[painted > 0] = len(detections) + 1 - painted[painted > 0]
    return out


def write_label_map(path: Path, labels: np.ndarray) -> None:
    """A 16-bit greyscale PNG, pixel value = label."""
    import cv2

    if not cv2.imwrite(str(path), labels.astype(np.uint16)):
        raise OSError(f"{path}: could not write the label map")


def polygon(mask: np.ndarray, x0: int = 0, y0: int = 0) -> BaseGeometry:
    """The shapely (Multi)Polygon covering exactly the True pixels of `mask` (pixel (x, y) is the unit square from
    (x, y) to (x + 1, y + 1)), offset by (x0, y0): the union of its rows' runs, holes kept."""
    from shapely import box, union_all

    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    boxes = []
    for y, row in enumerate(np.diff(padded, axis=1)):
        starts, ends = np.flatnonzero(row == 1), np.flatnonzero(row == -1)
        boxes += [box(x0 + a, y0 + y, x0 + b, y0 + y + 1) for a, b in zip(starts, ends, strict=True)]
    return union_all(boxes)


def geojson(labels: np.ndarray, detections: list[dict]) -> dict:
    """A GeoJSON FeatureCollection of a tile's label map: one QuPath detection per nucleus, with its score."""
    from scipy import ndimage
    from shapely.geometry import mapping

    features = []
    for k, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:  # covered whole by higher-scoring detections
            continue
        rows, cols = window
        shape = polygon(labels[window] == k, cols.start, rows.start)
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(shape),
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": NUCLEUS},
                    "measurements": {"score": float(detections[k - 1]["score"])},
                    "name": f"nucleus {k}",
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: Path, collection: dict) -> None:
    path.write_text(json.dumps(collection))
