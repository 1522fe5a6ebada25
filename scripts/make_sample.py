"""Cut the small bundled sample (sample_data/nuclei) from the course dataset: 256x256 crops in the course layout.

.venv/bin/python scripts/make_sample.py ../shared/data/nuclei sample_data/nuclei
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256
TRAIN = {  # image id -> top-left corner of the crop; four organs, sparse and dense tiles
    "TCGA-18-5592-01Z-00-DX1": (372, 372),
    "TCGA-21-5784-01Z-00-DX1": (372, 372),
    "TCGA-E2-A1B5-01Z-00-DX1": (372, 372),
    "TCGA-HE-7130-01Z-00-DX1": (372, 372),
    "TCGA-G9-6356-01Z-00-DX1": (372, 372),
}
TEST = ["TCGA-A7-A13E-01Z-00-DX1.png", "TCGA-G9-6336-01Z-00-DX1.png"]


def crop(path: Path, y: int, x: int) -> np.ndarray:
    return np.asarray(Image.open(path))[y : y + SIZE, x : x + SIZE]


def main(src: Path, dst: Path) -> None:
    for image_id, (y, x) in TRAIN.items():
        out = dst / "train" / image_id
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop(src / "train" / image_id / "images" / f"{image_id}.png", y, x)).save(
            out / "images" / f"{image_id}.png", optimize=True
        )
        n = 0
        for mf in sorted((src / "train" / image_id / "masks").glob("*.png")):
            m = crop(mf, y, x)
            if m.any():
                Image.fromarray(m).convert("1").save(out / "masks" / mf.name, optimize=True)
                n += 1
        print(image_id, n, "masks")
    (dst / "test").mkdir(parents=True, exist_ok=True)
    index = []
    for i, name in enumerate(TEST, start=1):
        Image.fromarray(crop(src / "test" / name, 372, 372)).save(dst / "test" / name, optimize=True)
        index.append({"file_name": name, "id": i, "height": SIZE, "width": SIZE})
    (dst / "test_img_ids.json").write_text(json.dumps(index))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
