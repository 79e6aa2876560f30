"""Fashion-MNIST as a coloured text-to-image data set: 32x32 RGB items tinted with a named colour, with captions.

The IDX files come from Debian's `dataset-fashion-mnist` package.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from diffusia.errors import DiffusiaError

DATA_DIR = Path(os.environ.get("DIFFUSIA_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

CLASSES = [
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
CATEGORIES = {
    "tops": ["t-shirt", "pullover", "coat", "shirt"],
    "dresses and trousers": ["pair of trousers", "dress"],
    "footwear": ["sandal", "sneaker", "ankle boot"],
    "bags": ["bag"],
}
COLOURS = {
    "red": (1.0, 0.15, 0.15),
    "orange": (1.0, 0.55, 0.1),
    "yellow": (1.0, 0.9, 0.1),
    "green": (0.15, 0.85, 0.2),
    "cyan": (0.1, 0.85, 0.9),
    "blue": (0.2, 0.35, 1.0),
    "purple": (0.65, 0.25, 0.95),
    "white": (1.0, 1.0, 1.0),
}
COLOUR_NAMES = list(COLOURS)
IMAGE_SIZE = 32


def category_of(class_name: str) -> str:
    return next(cat for cat, members in CATEGORIES.items() if class_name in members)


def caption(class_index: int, colour_index: int) -> str:
    colour = COLOUR_NAMES[colour_index]
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {CLASSES[class_index]}"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Grey 28x28 uint8 images and int labels of the `train` (60k) or `test` (10k) split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = DATA_DIR / f"{prefix}-images-idx3-ubyte.gz", DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.is_file():
        raise DiffusiaError(
            f"Fashion-MNIST not found at {DATA_DIR}: run `apt-get install dataset-fashion-mnist` "
            "or set DIFFUSIA_FASHION_MNIST to the folder with the IDX .gz files"
        )
    return _read_idx(images), _read_idx(labels).astype(np.int64)


def colourise(grey: np.ndarray, colour_index: np.ndarray) -> np.ndarray:
    """(N,28,28) uint8 grey + colour indices -> (N,3,32,32) float32 RGB in [0, 1], zero-padded to 32x32."""
    pad = (IMAGE_SIZE - grey.shape[-1]) // 2
    g = np.pad(grey.astype(np.float32) / 255.0, ((0, 0), (pad, pad), (pad, pad)))
    rgb = np.asarray(list(COLOURS.values()), dtype=np.float32)[colour_index]  # (N,3)
    return g[:, None] * rgb[:, :, None, None]


def coloured_split(split: str = "train", seed: int = 0, limit: int | None = None):
    """RGB images in [0,1], class labels, colour indices and captions; colours drawn with `seed`."""
    grey, labels = load_split(split)
    if limit is not None:
        grey, labels = grey[:limit], labels[:limit]
    colours = np.random.default_rng(seed).integers(0, len(COLOURS), size=len(labels))
    captions = [caption(int(c), int(k)) for c, k in zip(labels, colours)]
    return colourise(grey, colours), labels, colours, captions
