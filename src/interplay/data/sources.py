"""Where datasets come from: IDX folders (Fashion-MNIST, MNIST), scikit-learn's digits, a folder.

An IDX dataset is looked for, in this order, in `$INTERPLAY_DATA/<name>/`, in the user
cache (`$XDG_CACHE_HOME/interplay/<name>/`, else `~/.cache/interplay/<name>/`, where
`interplay data --fetch` puts it) and in the Debian package's folder. Nothing is
downloaded here: that is `fetch`, which the user runs on purpose.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interplay.config import DataConfig
from interplay.data.base import Dataset, Part, PartName
from interplay.data.folder import open_folder, scan_folder
from interplay.data.idx import read_idx, read_idx_header
from interplay.data.splits import stratified_split
from interplay.errors import DataError

logger = logging.getLogger(__name__)

DATASETS = ("fashion-mnist", "mnist", "digits", "folder")
DIGITS_TEST_SEED = 0  # fixed, so the digits test set is the same in every study

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]

# (part, images or labels) -> file stem; the files are <stem>-idx<ndim>-ubyte[.gz].
IDX_FILES: dict[tuple[PartName, str], tuple[str, int]] = {
    ("train", "images"): ("train-images", 3),
    ("train", "labels"): ("train-labels", 1),
    ("test", "images"): ("t10k-images", 3),
    ("test", "labels"): ("t10k-labels", 1),
}


@dataclass(frozen=True)
class IdxSpec:
    """An IDX dataset: its classes, where a system copy lives, and its official mirror."""

    name: str
    classes: list[str]
    mirror: str  # base URL of the official download mirror
    checksums: dict[str, str]  # file name -> md5 (32 hex digits) or sha256 (64) of the .gz
    system_dirs: tuple[Path, ...]
    apt_package: str | None = None


IDX_DATASETS: dict[str, IdxSpec] = {
    # Checksums as published in the Fashion-MNIST README (zalandoresearch/fashion-mnist).
    # The Debian package recompresses the files, so its copies differ byte for byte; that
    # is fine: checksums guard downloads only, local files are checked as IDX.
    "fashion-mnist": IdxSpec(
        name="fashion-mnist",
        classes=FASHION_CLASSES,
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        checksums={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        apt_package="dataset-fashion-mnist",
    ),
    # The original MNIST files, as mirrored by PyTorch's ossci-datasets bucket.
    "mnist": IdxSpec(
        name="mnist",
        classes=DIGIT_CLASSES,
        mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
        checksums={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        system_dirs=(Path("/usr/share/datasets/mnist"),),
    ),
}


@dataclass(frozen=True)
class DatasetInfo:
    """One line of `interplay data`: is the dataset there, where, and how big."""

    name: str
    found: bool
    location: str | None
    train_size: int | None  # number of images
    test_size: int | None
    detail: str = ""  # how to get it when missing, or what is wrong with it


# ---------------------------------------------------------------- lookup


def cache_dir(name: str) -> Path:
    """The user cache folder of a dataset (where `fetch` downloads it)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "interplay" / name


def candidate_dirs(name: str) -> list[Path]:
    """The folders searched for an IDX dataset, in the order they are tried."""
    spec = _spec(name)
    dirs = []
    if os.environ.get("INTERPLAY_DATA"):
        dirs.append(Path(os.environ["INTERPLAY_DATA"]).expanduser() / name)
    dirs.append(cache_dir(name))
    dirs.extend(spec.system_dirs)
    return dirs


def find_idx_files(folder: Path) -> dict[tuple[PartName, str], Path] | None:
    """The four IDX files in `folder`, or None unless all four are there.

    An uncompressed file is preferred over its .gz (it reads faster).
    """
    if not folder.is_dir():
        return None
    names = {p.name: p for p in folder.iterdir() if p.is_file()}
    found = {}
    for key, (stem, ndim) in IDX_FILES.items():
        pattern = re.compile(rf"^{re.escape(stem)}[-.]idx{ndim}-ubyte(\.gz)?$")
        matches = sorted((n for n in names if pattern.match(n)), key=lambda n: n.endswith(".gz"))
        if not matches:
            return None
        found[key] = names[matches[0]]
    return found


def locate(name: str) -> tuple[Path, dict[tuple[PartName, str], Path]]:
    """The first folder holding all four files of an IDX dataset, and those files.

    Raises:
        DataError: Found nowhere; the message lists the folders searched and how to get it.
    """
    searched = []
    for folder in candidate_dirs(name):
        files = find_idx_files(folder)
        if files is not None:
            return folder, files
        if folder.is_dir() and any(folder.iterdir()):
            logger.warning("%s: incomplete %s files here, skipped", folder, name)
            searched.append(f"{folder} (incomplete)")
        else:
            searched.append(str(folder))
    raise DataError(
        f"dataset {name} not found (looked in {', '.join(searched)}). {how_to_get(name)}"
    )


def how_to_get(name: str) -> str:
    """The ways to get a missing IDX dataset, as one sentence for error messages."""
    spec = _spec(name)
    ways = []
    if spec.apt_package:
        ways.append(f"install it (apt-get install {spec.apt_package})")
    ways.append(
        f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        f"and t10k-labels-idx1-ubyte.gz in $INTERPLAY_DATA/{name}/ (set INTERPLAY_DATA)"
    )
    ways.append(f"download it with `interplay data --fetch {name}`")
    return "To get it: " + ", or ".join(ways) + "."


def _spec(name: str) -> IdxSpec:
    if name not in IDX_DATASETS:
        raise DataError(
            f"data.dataset: {name!r} is not an IDX dataset; use one of {list(IDX_DATASETS)}"
        )
    return IDX_DATASETS[name]


# ---------------------------------------------------------------- opening


def open_dataset(cfg: DataConfig) -> Dataset:
    """Find the dataset a study asks for; nothing is decoded yet.

    Args:
        cfg: The study's data section.

    Returns:
        The dataset, whose `load("train")` and `load("test")` decode its parts.
    """
    if cfg.dataset in IDX_DATASETS:
        return open_idx(cfg.dataset)
    if cfg.dataset == "digits":
        return open_digits()
    return open_folder(cfg.root, image_size=cfg.image_size, channels=cfg.channels)


def open_idx(name: str) -> Dataset:
    """Fashion-MNIST or MNIST from the first folder that holds all four files."""
    spec = _spec(name)
    folder, files = locate(name)
    logger.debug("%s: found in %s", name, folder)

    def load(part: PartName) -> Part:
        images_path, labels_path = files[(part, "images")], files[(part, "labels")]
        images = _read_idx_cached(images_path, ndim=3)
        labels = _read_idx_cached(labels_path, ndim=1)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            bad = images_path if images.dtype != np.uint8 else labels_path
            raise DataError(f"{bad}: holds {images.dtype} values, expected unsigned bytes")
        if len(images) != len(labels):
            raise DataError(
                f"{images_path} holds {len(images)} images but {labels_path} holds "
                f"{len(labels)} labels; the two files do not belong together"
            )
        if int(labels.max()) >= len(spec.classes):
            raise DataError(
                f"{labels_path}: label {int(labels.max())} is out of range for the "
                f"{len(spec.classes)} classes of {name}; is it the right file?"
            )
        # A view, not a copy: the channel axis costs nothing on uint8 images.
        x = images.reshape(len(images), 1, *images.shape[1:])  # (N, 1, H, W)
        return Part(x=x, y=labels.astype(np.int64))

    return Dataset(name=name, classes=list(spec.classes), source=str(folder), loader=load)


def open_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, with a fixed stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits

    def load(part: PartName) -> Part:
        bunch = load_digits()
        images = (bunch.images / 16.0).astype(np.float32)  # 0..16 intensities -> [0, 1]
        y = bunch.target.astype(np.int64)
        train, test = stratified_split(
            y, 0.2, seed=DIGITS_TEST_SEED, setting="digits train/test split"
        )
        idx = train if part == "train" else test
        return Part(x=images[idx][:, None], y=y[idx])  # (N, 1, 8, 8)

    return Dataset(
        name="digits", classes=list(DIGIT_CLASSES), source="scikit-learn (bundled)", loader=load
    )


def _read_idx_cached(path: Path, *, ndim: int) -> np.ndarray:
    # Keyed by size and mtime so a replaced file is read again; the arrays are read-only.
    stat = path.stat()
    return _read_idx_keyed(str(path.resolve()), stat.st_size, stat.st_mtime_ns, ndim)


@functools.lru_cache(maxsize=8)
def _read_idx_keyed(path: str, size: int, mtime_ns: int, ndim: int) -> np.ndarray:
    # Decoding the 60k Fashion-MNIST images takes ~0.3 s; a sweep reloads them every trial.
    return read_idx(path, ndim=ndim)


# ---------------------------------------------------------------- describe


def describe(folder_root: str | Path | None = None) -> list[DatasetInfo]:
    """Which datasets are available, where, and how many images: headers only, cheap.

    Args:
        folder_root: A folder of images to describe as the `folder` dataset; without it
            that row says how to use one.

    Returns:
        One DatasetInfo per dataset, in the order of DATASETS.
    """
    infos = [_describe_idx(name) for name in IDX_DATASETS]
    infos.append(
        DatasetInfo("digits", True, "scikit-learn (bundled)", *_digits_counts(), "8x8, offline")
    )
    infos.append(_describe_folder(folder_root))
    return infos


def _describe_idx(name: str) -> DatasetInfo:
    try:
        folder, files = locate(name)
    except DataError:
        return DatasetInfo(name, False, None, None, None, how_to_get(name))
    try:
        counts = [
            read_idx_header(files[(part, "images")], ndim=3).shape[0] for part in ("train", "test")
        ]
    except DataError as e:
        return DatasetInfo(name, True, str(folder), None, None, str(e))
    return DatasetInfo(name, True, str(folder), counts[0], counts[1])


def _digits_counts() -> tuple[int, int]:
    digits = open_digits()
    return len(digits.load("train")), len(digits.load("test"))


def _describe_folder(root: str | Path | None) -> DatasetInfo:
    if root is None:
        return DatasetInfo(
            "folder",
            False,
            None,
            None,
            None,
            "set data.root to a folder with one sub-folder per class",
        )
    try:
        scan = scan_folder(root)
    except DataError as e:
        return DatasetInfo("folder", False, str(root), None, None, str(e))
    return DatasetInfo(
        "folder",
        True,
        scan.source,
        len(scan.train),
        len(scan.test),
        f"{len(scan.classes)} classes",
    )
