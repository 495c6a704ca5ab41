"""A synthetic segmentation dataset on disk, in MMSeg's BaseSegDataset layout.

    root/img_dir/{train,val}/NNNN.png   RGB images
    root/ann_dir/{train,val}/NNNN.png   label maps (mode L), 255 = ignore

Objects are rectangles and ellipses whose colour depends on their class, on a noisy
background; a one-pixel band around each object is left unlabelled, as in VOC, so the
ignore index is exercised. With `rare_small_class`, one class only appears as small
objects, in half of the images: about 1% of the pixels, which cross-entropy weighs by
their number while mIoU weighs the class like any other. With `thin_class`, one class
only appears as thin lines (one or two pixels wide, like cracks, wires or lane
markings), far below the resolution of an output-stride-8 feature map: where the line
is uncertain, cross-entropy's argmax gives it up, while mIoU would rather widen it.
With `ambiguous_class`, one class appears as small objects in every image whose labelled
outline is the visible one grown or shrunk by up to two pixels, at random: the image
cannot tell where the label's boundary lies, cross-entropy draws it where a pixel is
more likely in than out, and the IoU of a small object gains from drawing it wider.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(40, 40, 40), (220, 60, 60), (60, 200, 80), (70, 90, 230), (230, 200, 50), (200, 70, 210), (60, 210, 210)]


def classes(num_classes: int) -> tuple[tuple[str, ...], list[list[int]]]:
    names = ("background",) + tuple(f"object{i}" for i in range(1, num_classes))
    return names, [list(COLOURS[i % len(COLOURS)]) for i in range(num_classes)]


def _draw(rng: np.random.Generator, size: int, num_classes: int, rare_small_class: int | None,
          thin_class: int | None = None, ambiguous_class: int | None = None):
    image = rng.normal(COLOURS[0], 25, (size, size, 3))
    label = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    common = [c for c in range(1, num_classes) if c not in (rare_small_class, thin_class, ambiguous_class)]
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.choice(common))
        h, w = rng.integers(size // 6, size // 2, 2)
        _paint(rng, image, label, yy, xx, cls, h, w)
    if rare_small_class is not None and rng.random() < 0.5:
        # one to two cells of an output-stride-8 feature map: small, but representable
        side = int(rng.integers(size // 8, size // 4 + 1))
        _paint(rng, image, label, yy, xx, rare_small_class, side, side)
    if thin_class is not None:
        for _ in range(rng.integers(1, 4)):
            _line(rng, image, label, yy, xx, thin_class)
    if ambiguous_class is not None:
        for _ in range(rng.integers(1, 4)):
            side = int(rng.integers(size // 8, size // 4 + 1))
            _paint(rng, image, label, yy, xx, ambiguous_class, side, side, grow=int(rng.integers(-2, 3)))
    return np.clip(image, 0, 255).astype(np.uint8), label


def _line(rng, image, label, yy, xx, cls):
    """A straight line one or two pixels wide from border to border."""
    size = label.shape[0]
    start, end = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
    start[rng.integers(2)] = 0
    end[rng.integers(2)] = size - 1
    direction = (end - start) / max(np.linalg.norm(end - start), 1e-6)
    offset_y, offset_x = yy - start[0], xx - start[1]
    distance = np.abs(offset_y * direction[1] - offset_x * direction[0])
    mask = distance < rng.choice([0.5, 1.0])
    label[mask] = cls
    image[mask] = rng.normal(COLOURS[cls % len(COLOURS)], 30, (int(mask.sum()), 3))


def _paint(rng, image, label, yy, xx, cls, h, w, grow: int | None = None):
    """A rectangle or ellipse. With `grow`, the label is the shape grown (or shrunk) by
    that many pixels and carries no ignore band: its outline is not the visible one."""
    size = label.shape[0]
    top, left = rng.integers(0, size - h), rng.integers(0, size - w)
    rectangle = rng.random() < 0.5

    def shape(extra):
        if rectangle:
            return (yy >= top - extra) & (yy < top + h + extra) & (xx >= left - extra) & (xx < left + w + extra)
        cy, cx = top + h / 2, left + w / 2
        return ((yy - cy) / (h / 2 + extra)) ** 2 + ((xx - cx) / (w / 2 + extra)) ** 2 <= 1

    mask = shape(0)
    if grow is None:
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        label[grown & ~mask] = 255
        label[mask] = cls
    else:
        label[shape(grow)] = cls
    image[mask] = rng.normal(COLOURS[cls % len(COLOURS)], 30, (int(mask.sum()), 3))


def write_dataset(
    root: str | Path,
    *,
    num_train: int = 32,
    num_val: int = 8,
    size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    rare_small_class: int | None = None,
    thin_class: int | None = None,
    ambiguous_class: int | None = None,
) -> dict:
    """Write the dataset under `root`; returns its metainfo (classes, palette)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
        (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, label = _draw(rng, size, num_classes, rare_small_class, thin_class, ambiguous_class)
            Image.fromarray(image).save(root / "img_dir" / split / f"{index:04d}.png")
            Image.fromarray(label).save(root / "ann_dir" / split / f"{index:04d}.png")
    names, palette = classes(num_classes)
    return {"classes": names, "palette": palette}
