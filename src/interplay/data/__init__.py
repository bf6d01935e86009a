"""Datasets: finding and reading them, stratified splits, preloaded normalized tensors.

`load_data(cfg)` is what training uses; `describe()` and `fetch(name)` serve
`interplay data`; `read_idx(path)` reads one IDX file.
"""

from interplay.data.base import Dataset, Part
from interplay.data.fetch import download_files, fetch
from interplay.data.folder import decode_images, scan_folder
from interplay.data.idx import IdxHeader, read_idx, read_idx_header
from interplay.data.loader import DataSplits, load_data
from interplay.data.sources import (
    DATASETS,
    FASHION_CLASSES,
    IDX_DATASETS,
    DatasetInfo,
    cache_dir,
    candidate_dirs,
    describe,
    how_to_get,
    open_dataset,
)
from interplay.data.splits import stratified_split, take_per_class

__all__ = [
    "DATASETS",
    "FASHION_CLASSES",
    "IDX_DATASETS",
    "DataSplits",
    "Dataset",
    "DatasetInfo",
    "IdxHeader",
    "Part",
    "cache_dir",
    "candidate_dirs",
    "decode_images",
    "describe",
    "download_files",
    "fetch",
    "how_to_get",
    "load_data",
    "open_dataset",
    "read_idx",
    "read_idx_header",
    "scan_folder",
    "stratified_split",
    "take_per_class",
]
