"""What every dataset source hands to the loader: a named set of classes and two parts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

PartName = Literal["train", "test"]


@dataclass(frozen=True)
class Part:
    """Images and labels of one part (train or test) as they come from the source."""

    x: np.ndarray  # (N, C, H, W), uint8 in [0, 255] or float32 in [0, 1]
    y: np.ndarray  # (N,), int64 class index

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A dataset that was found: its parts are decoded only when asked for.

    The held-out test part is never decoded unless `load("test")` is called, so studies
    cannot peek at it by accident.
    """

    name: str
    classes: list[str]
    source: str  # where the files were found, for logs and run params
    loader: Callable[[PartName], Part]

    def load(self, part: PartName) -> Part:
        return self.loader(part)
