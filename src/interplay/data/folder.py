"""A user's own images: one sub-folder per class, read with Pillow.

Either `root/<class>/*` (a seeded, stratified 20% is held out as the test part) or
`root/train/<class>/*` and `root/test/<class>/*` (the user's own split is kept).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from interplay.data.base import Dataset, Part, PartName
from interplay.data.splits import stratified_split
from interplay.errors import DataError

logger = logging.getLogger(__name__)

TEST_FRACTION = 0.2
TEST_SEED = 0  # fixed, so changing data.split_seed never moves images into the test part


@dataclass(frozen=True)
class FileList:
    paths: list[Path]
    y: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class FolderScan:
    """The image files of a folder dataset, by part and class, before any decoding."""

    source: str
    classes: list[str]
    train: FileList
    test: FileList


def scan_folder(root: str | Path) -> FolderScan:
    """List a folder dataset's images and classes (cheap: nothing is decoded).

    Args:
        root: The folder: one sub-folder per class, or train/ and test/ holding those.

    Returns:
        The class names (sorted sub-folder names) and the files of each part.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.root: {root} is not a folder; point it at a folder of class folders"
        )

    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        classes = _class_dirs(train_dir)
        train = _list_files(train_dir, classes)
        test_classes = _class_dirs(test_dir)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(
                f"{test_dir}: class folders {unknown} have no counterpart in {train_dir}; "
                f"the test part can only hold classes the model is trained on"
            )
        missing = sorted(set(classes) - set(test_classes))
        if missing:
            logger.warning("%s: no test images for classes %s", test_dir, missing)
        test = _list_files(test_dir, [c for c in classes if c in test_classes], index=classes)
        return FolderScan(str(root), classes, train, test)

    classes = _class_dirs(root)
    every = _list_files(root, classes)
    train_idx, test_idx = stratified_split(
        every.y, TEST_FRACTION, seed=TEST_SEED, setting=f"data.root={root} (20% held out as test)"
    )
    return FolderScan(
        str(root),
        classes,
        FileList([every.paths[i] for i in train_idx], every.y[train_idx]),
        FileList([every.paths[i] for i in test_idx], every.y[test_idx]),
    )


def open_folder(root: str | None, *, image_size: int, channels: int) -> Dataset:
    """A folder dataset whose images are resized to image_size and converted to 1 or 3 channels.

    Args:
        root: The folder (data.root).
        image_size: Side in pixels every image is resized to (data.image_size).
        channels: 1 for grayscale, 3 for RGB (data.channels).

    Returns:
        The dataset; images are decoded when a part is loaded.
    """
    if root is None:
        raise DataError(
            "data.root: dataset 'folder' needs data.root, a folder with one sub-folder of "
            "images per class"
        )
    scan = scan_folder(root)

    def load(part: PartName) -> Part:
        files = scan.train if part == "train" else scan.test
        return Part(x=decode_images(files.paths, image_size, channels), y=files.y)

    return Dataset(name="folder", classes=scan.classes, source=scan.source, loader=load)


def decode_images(paths: list[Path], image_size: int, channels: int) -> np.ndarray:
    """Decode, orient, convert and resize images into one uint8 array (N, C, H, W)."""
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                # Phone photos store their rotation in EXIF; apply it before resizing.
                upright = ImageOps.exif_transpose(im).convert(mode)
                resized = upright.resize((image_size, image_size), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: unreadable image ({e}); fix or remove the file") from None
        out[i] = np.asarray(resized).reshape(image_size, image_size, channels)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, C, H, W)


def _class_dirs(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(p))
    if not classes:
        raise DataError(
            f"{folder}: no class folders; put the images of each class in their own sub-folder"
        )
    if len(classes) == 1:
        raise DataError(
            f"{folder}: one class folder ({classes[0]}); a classifier needs at least two, each "
            "in its own sub-folder"
        )
    return classes


def _list_files(folder: Path, classes: list[str], index: list[str] | None = None) -> FileList:
    """The image files under folder/<class>/, labelled by their class's position in index."""
    index = index if index is not None else classes
    extensions = set(Image.registered_extensions())
    paths: list[Path] = []
    labels: list[int] = []
    for name in classes:
        class_dir = folder / name
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and not _hidden(p))
        images = [p for p in files if p.suffix.lower() in extensions]
        if len(images) < len(files):
            logger.warning(
                "%s: skipped %d files that are not images", class_dir, len(files) - len(images)
            )
        if not images:
            raise DataError(
                f"{class_dir}: empty class folder (no images); add images or remove it"
            )
        paths.extend(images)
        labels.extend([index.index(name)] * len(images))
    return FileList(paths, np.asarray(labels, dtype=np.int64))


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def folder_fingerprint(root: str | Path) -> str:
    """A digest of a folder dataset's file list (paths, sizes, times), test part included.

    A study records it when it starts: adding or removing one image reshuffles the held-out
    test part, so a resume or a test evaluation on a changed folder would score models on
    images they were trained on.
    """
    scan = scan_folder(root)
    digest = hashlib.sha1()
    base = Path(scan.source)
    for part in (scan.train, scan.test):
        for path in part.paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(base)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def check_folder_images(root: str | Path, *, image_size: int, channels: int) -> int:
    """Decode every image of every part now, so an unreadable file stops a study at its start."""
    scan = scan_folder(root)
    paths = scan.train.paths + scan.test.paths
    decode_images(paths, image_size, channels)
    return len(paths)
