"""Stratified, seeded selections: a fixed number of images per class, and held-out shares."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from interplay.errors import DataError

if TYPE_CHECKING:
    from interplay.config import DataConfig

logger = logging.getLogger(__name__)


def take_per_class(
    y: np.ndarray, per_class: int, *, classes: Sequence[str], seed: int, setting: str
) -> np.ndarray:
    """Draw exactly `per_class` indices of each class, without replacement.

    Args:
        y: Class index of each image, shape (N,).
        per_class: How many images of each class to draw.
        classes: Class names, one per class index; every class must have enough images.
        seed: Seed of the draw; the same seed gives the same indices.
        setting: The setting that asked for the draw, named in errors (e.g. "data.subset=500").

    Returns:
        The drawn indices into `y`, sorted.
    """
    counts = np.bincount(y, minlength=len(classes))
    short = [i for i, n in enumerate(counts) if n < per_class]
    if short:
        listed = ", ".join(f"'{classes[i]}' ({counts[i]})" for i in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise DataError(
            f"{setting}: too few training images in class {listed}{more}; "
            f"lower it to at most {int(counts.min())} images per class"
        )

    rng = np.random.default_rng(seed)
    drawn = [
        rng.choice(np.flatnonzero(y == c), size=per_class, replace=False)
        for c in range(len(classes))
    ]
    return np.sort(np.concatenate(drawn))


def stratified_split(
    y: np.ndarray, fraction: float, *, seed: int, setting: str
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a share of the images, keeping the class proportions in both parts.

    Args:
        y: Class index of each image, shape (N,).
        fraction: Share of the images held out, in (0, 1).
        seed: Seed of the split; the same seed gives the same parts.
        setting: The setting behind the split, named in errors (e.g. "data.val_fraction=0.1").

    Returns:
        (kept, held_out): sorted indices into `y`, disjoint, together all of them.
    """
    present, counts = np.unique(y, return_counts=True)
    n_held = math.ceil(fraction * len(y))
    n_kept = len(y) - n_held
    if counts.min() < 2:
        lonely = int(present[counts.argmin()])
        raise DataError(
            f"{setting}: class index {lonely} has a single image, which cannot be on both "
            f"sides of a stratified split; give each class at least 2 images"
        )
    if n_held < len(present) or n_kept < len(present):
        raise DataError(
            f"{setting}: {len(y)} images split {n_kept}/{n_held} leave a part with fewer "
            f"images than the {len(present)} classes; use more images or a share nearer 0.5"
        )

    # Imported here: scikit-learn adds ~1 s to every CLI start otherwise.
    from sklearn.model_selection import train_test_split

    # sklearn apportions the held-out count over the classes (largest remainders) for us.
    kept, held = train_test_split(
        np.arange(len(y)), test_size=n_held, stratify=y, random_state=seed, shuffle=True
    )
    return np.sort(kept), np.sort(held)


def train_val_indices(
    y: np.ndarray, classes: Sequence[str], cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The training and validation indices a study's data settings draw from a training part.

    `data.subset` images per class are drawn first (all images when unset), then
    `data.val_fraction` of them is held out for validation, stratified; both seeded by
    `data.split_seed`. `interplay summary` calls this on a folder's labels alone, so a subset
    or split a class cannot fill is reported before any image is decoded.
    """
    pool = np.arange(len(y))
    if cfg.subset is not None:
        pool = take_per_class(
            y,
            cfg.subset,
            classes=classes,
            seed=cfg.split_seed,
            setting=f"data.subset={cfg.subset}",
        )
    kept, held = stratified_split(
        y[pool],
        cfg.val_fraction,
        seed=cfg.split_seed,
        setting=f"data.val_fraction={cfg.val_fraction} of {len(pool)} images",
    )
    return pool[kept], pool[held]
