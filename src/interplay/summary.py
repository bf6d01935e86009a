"""`interplay summary`: check a study's architecture before any training."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from interplay.config import DataConfig
from interplay.errors import ArchitectureError, DataError
from interplay.studyfile import StudyFile, format_params, grid_points, load_study

logger = logging.getLogger(__name__)

_KNOWN_SHAPES = {
    "fashion-mnist": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
}


def data_shape(cfg: DataConfig) -> tuple[tuple[int, int, int], int]:
    """The input shape and class count of a dataset, without loading its images."""
    if cfg.dataset in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[cfg.dataset]
    from interplay.data.folder import scan_folder
    from interplay.data.splits import train_val_indices

    if not cfg.root:
        raise DataError(
            "data.root: dataset 'folder' needs data.root, a folder with one sub-folder of "
            "images per class"
        )
    # Listing the files is cheap and finds missing, empty or lone class folders; the images
    # themselves are decoded (and checked) when a run or study starts.
    scan = scan_folder(cfg.root)
    train_val_indices(scan.train.y, scan.classes, cfg)
    return (cfg.channels, cfg.image_size, cfg.image_size), len(scan.classes)


def check_combinations(study_file: StudyFile) -> list[tuple[dict[str, object], str]]:
    """Shape-check every grid combination; returns those that cannot work, with the reason."""
    from interplay.models import infer_model

    if not study_file.search.params:
        return []
    bad = []
    for params in grid_points(study_file.search):
        study = study_file.resolve(params)
        if study.model.factory is not None:
            continue
        shape, classes = data_shape(study.data)
        try:
            infer_model(study.model, shape, classes)
        except ArchitectureError as err:
            bad.append((params, str(err)))
    return bad


def summarize_study(path: Path, sets: list[str], budget: str | None, out: Console) -> None:
    from interplay.models import infer_model, render_summary

    study_file = load_study(path, sets, budget)
    study = study_file.base()
    shape, classes = data_shape(study.data)
    # Blocks are inferred analytically (no torch); a factory's model is built and measured.
    summary = infer_model(study.model, shape, classes)
    params = study_file.default_params()
    title = f"{study.name}: {study.data.dataset} {'x'.join(map(str, shape))}, {classes} classes"
    if params:
        title += f" ({format_params(params)})"
    out.print(render_summary(summary), style=None)
    out.print(title)
    if study_file.search.params:
        bad = check_combinations(study_file)
        total = len(grid_points(study_file.search))
        out.print(f"{total - len(bad)} of {total} grid combinations pass shape inference")
        for params_bad, reason in bad:
            logger.warning("%s cannot work: %s", format_params(params_bad), reason)
