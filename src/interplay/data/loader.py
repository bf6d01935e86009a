"""From a study's data section to normalized tensors: subset, train/validation split, test.

Everything is decoded, selected and normalized once, here; batches are later plain slices
of preloaded tensors, with no per-image Python work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from interplay.config import DataConfig
from interplay.data.sources import open_dataset
from interplay.data.splits import train_val_indices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSplits:
    """The tensors one run trains and validates on, and what they are.

    x tensors are float32 (N, C, H, W) on the CPU, normalized per channel with the mean
    and std of the training part only; y tensors are int64 class indices. The test part
    is None unless it was asked for.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: list[str]
    input_shape: tuple[int, int, int]
    num_classes: int
    name: str
    source: str
    mean: tuple[float, ...]  # per channel, on the [0, 1] pixel scale
    std: tuple[float, ...]
    train_indices: np.ndarray  # positions in the dataset's training part, for audits
    val_indices: np.ndarray

    def as_params(self) -> dict[str, str]:
        """What a run records about its data, as flat string params."""
        return {
            "data.source": self.source,
            "data.train_images": str(len(self.train_y)),
            "data.val_images": str(len(self.val_y)),
            "data.input_shape": "x".join(str(d) for d in self.input_shape),
            "data.mean": ",".join(f"{m:.4f}" for m in self.mean),
            "data.std": ",".join(f"{s:.4f}" for s in self.std),
        }


def load_data(cfg: DataConfig, *, with_test: bool = False) -> DataSplits:
    """Load a study's dataset as normalized tensors, split into train and validation parts.

    First `cfg.subset` images per class are drawn from the training set (all when unset),
    then `cfg.val_fraction` of them is held out for validation; both steps are stratified
    and seeded by `cfg.split_seed`, so the same settings give the same images.

    Args:
        cfg: The study's data section.
        with_test: Also load the held-out test part (only for a final evaluation).

    Returns:
        The tensors and what they are.

    Raises:
        DataError: The dataset is missing or corrupt, or the subset or split asks for
            more images than a class has.
    """
    dataset = open_dataset(cfg)
    train = dataset.load("train")

    train_idx, val_idx = train_val_indices(train.y, dataset.classes, cfg)

    train_x = _to_float(train.x[train_idx])
    val_x = _to_float(train.x[val_idx])
    mean, std = _channel_stats(train_x)
    _normalize_(train_x, mean, std)
    _normalize_(val_x, mean, std)

    test_x = test_y = None
    if with_test:
        test = dataset.load("test")
        test_x = _normalize_(_to_float(test.x), mean, std)
        test_y = torch.from_numpy(test.y)

    c, h, w = train_x.shape[1:]
    splits = DataSplits(
        train_x=train_x,
        train_y=torch.from_numpy(train.y[train_idx]),
        val_x=val_x,
        val_y=torch.from_numpy(train.y[val_idx]),
        test_x=test_x,
        test_y=test_y,
        classes=list(dataset.classes),
        input_shape=(c, h, w),
        num_classes=len(dataset.classes),
        name=dataset.name,
        source=dataset.source,
        mean=mean,
        std=std,
        train_indices=train_idx,
        val_indices=val_idx,
    )
    logger.info(
        "%s: %d train / %d val%s images of %dx%dx%d, %d classes, from %s",
        splits.name,
        len(splits.train_y),
        len(splits.val_y),
        f" / {len(test_y)} test" if test_y is not None else "",
        c,
        h,
        w,
        splits.num_classes,
        splits.source,
    )
    return splits


def _to_float(x: np.ndarray) -> torch.Tensor:
    """A fresh, writable float32 tensor on the [0, 1] scale."""
    t = torch.from_numpy(x.astype(np.float32))
    return t.div_(255.0) if x.dtype == np.uint8 else t


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Welford in float32 agrees with float64 to ~1e-7 here, without a float64 copy.
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    if bool((std < 1e-8).any()):
        # A channel that never varies cannot be scaled to unit std; leave its scale alone.
        logger.warning("constant channel in the training images; not scaling it")
        std = torch.where(std < 1e-8, torch.ones_like(std), std)
    return tuple(mean.tolist()), tuple(std.tolist())


def _normalize_(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)
