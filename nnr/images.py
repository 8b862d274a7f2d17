"""Photos as model inputs: a few crops of each, resized and normalised (the demo's inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

# (left, top, right, bottom) as fractions of the photo; the last flag mirrors it.
CROPS = (
    (0.0, 0.0, 1.0, 1.0, False),
    (0.0625, 0.0625, 0.9375, 0.9375, False),
    (0.0, 0.0, 0.85, 0.85, False),
    (0.15, 0.0, 1.0, 0.85, False),
    (0.0, 0.15, 0.85, 1.0, False),
    (0.15, 0.15, 1.0, 1.0, False),
    (0.0625, 0.0625, 0.9375, 0.9375, True),
    (0.0, 0.0, 1.0, 1.0, True),
)


def labelled_photos(folder: str | Path) -> list[tuple[Path, int]]:
    """Photos named ``*_LABEL.jpg`` in ``folder`` with their integer labels, sorted."""
    folder = Path(folder)
    found = []
    for p in sorted(folder.glob("*.jpg")):
        try:
            found.append((p, int(p.stem.rsplit("_", 1)[1])))
        except (IndexError, ValueError):
            continue
    if not found:
        raise InputError(f"{folder}: no labelled photos (*_LABEL.jpg)")
    return found


def crops(photos: list[tuple[Path, int]], size: int = 224, mean: float = 127.0, std: float = 128.0,
          n_crops: int = len(CROPS)) -> tuple[np.ndarray, np.ndarray]:
    """NCHW float32 inputs ``(pixel − mean)/std`` for ``n_crops`` views of each photo, and labels."""
    from PIL import Image

    xs, ys = [], []
    for path, label in photos:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            for left, top, right, bottom, mirror in CROPS[:n_crops]:
                view = im.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
                view = view.resize((size, size), Image.BILINEAR)
                if mirror:
                    view = view.transpose(Image.FLIP_LEFT_RIGHT)
                arr = (np.asarray(view, dtype=np.float32) - mean) / std
                xs.append(arr.transpose(2, 0, 1))
                ys.append(label)
    return np.stack(xs), np.array(ys)
