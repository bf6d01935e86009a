"""What a study's report says about its data and design: the header lines, and chance level.

The data line counts images the way interplay.data.loader draws them: `subset` images per
class first, then `val_fraction` of those held out (stratified), so "50 per class" means
45 for training and 5 for validation. The design line counts configurations and runs by
what became of them, in the same words as the Limitations.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from interplay.config import DataConfig, Study
from interplay.errors import DataError
from interplay.report import numbers as fmt

logger = logging.getLogger(__name__)

DATASETS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "digits": "digits (8x8)"}
DESIGNS = {
    "grid": "Full grid over",
    "random": "Random search over",
    "tpe": "TPE search over",
    "gp": "Gaussian-process search over",
}
# A model this close to guessing has barely learned: at least 5 points above chance, or two
# binomial sds of a guessing model's accuracy on the validation images, whichever is larger.
CHANCE_MARGIN = 5.0


@dataclass(frozen=True)
class DataFacts:
    """The images of a study: classes, and the subset and its split when it is drawn."""

    name: str
    num_classes: int | None
    per_class: int | None
    train_images: int | None
    val_images: int | None


def dataset_classes(data: DataConfig) -> int | None:
    """The number of classes of the study's dataset, without decoding any image."""
    # Imported here: the data package pulls in torch, which a report does not otherwise need.
    from interplay.data.folder import scan_folder
    from interplay.data.sources import DIGIT_CLASSES, IDX_DATASETS

    if data.dataset in IDX_DATASETS:
        return len(IDX_DATASETS[data.dataset].classes)
    if data.dataset == "digits":
        return len(DIGIT_CLASSES)
    try:
        return len(scan_folder(data.root or "").classes)
    except (DataError, OSError) as err:
        logger.info("the classes of %s are unknown (%s): no chance level", data.root, err)
        return None


def data_facts(data: DataConfig, num_classes: int | None) -> DataFacts:
    """The image counts a run trains and validates on, where the study settings fix them."""
    name = DATASETS.get(data.dataset, data.dataset)
    if data.dataset == "folder":
        name = f"image folder {data.root}"
    if data.subset is None or num_classes is None:
        return DataFacts(name, num_classes, data.subset, None, None)
    pool = data.subset * num_classes
    # The same rounding as interplay.data.splits.stratified_split: the held-out part is
    # rounded up.
    val = math.ceil(data.val_fraction * pool)
    return DataFacts(name, num_classes, data.subset, pool - val, val)


def data_line(data: DataConfig, facts: DataFacts) -> str:
    """'Fashion-MNIST: 50 images per class (500), 10% of them held out: 450 train, 50 val'."""
    held = fmt.percent(data.val_fraction)
    if facts.per_class is None:
        return f"{facts.name}: its whole training part, {held} held out for validation"
    drawn = f"{facts.name}: {fmt.plural(facts.per_class, 'image')} per class drawn"
    if facts.train_images is None or facts.val_images is None:
        return f"{drawn}, then {held} of them held out for validation"
    total = facts.train_images + facts.val_images
    return (
        f"{drawn} ({total} in all), {held} of them held out for validation: "
        f"{facts.train_images} train, {facts.val_images} validation images"
    )


def seeds_text(design: dict[str, Any]) -> str:
    """Seeds of the compared runs per compared configuration: '2 seeds', '1 to 2 seeds'."""
    return fmt.span(design.get("seeds_min"), design.get("seeds_max"), "seed")


def not_compared(design: dict[str, Any]) -> tuple[int, str]:
    """Configurations without a compared run, and why: (4, 'every run failed')."""
    counts = design.get("configs_not_compared") or {}
    total = sum(counts.values())
    if len(counts) != 1:
        return total, ", ".join(f"{why} {n}" for why, n in sorted(counts.items()))
    why = next(iter(counts))
    words = {"failed": "every run failed", "pruned": "every run pruned", "not run": "never run"}
    return total, words.get(why, why)


def design_line(study: Study, design: dict[str, Any], compute_s: float | None) -> str:
    """The design, what became of its configurations and runs, and the compute it took."""
    method = design.get("method", study.search.method)
    described = []
    for p in design.get("params") or []:
        levels = p.get("levels")
        if levels:
            shown = ", ".join(fmt.level(v) for v in levels)
        else:
            spec = study.search.params.get(p["name"])
            low = fmt.level(spec.low) if spec is not None else "?"
            high = fmt.level(spec.high) if spec is not None else "?"
            shown = f"{low} to {high}" + (", log" if p.get("log") else "")
        described.append(f"{p['name']} ({shown})")
    joiner = " x " if method == "grid" else ", "
    head = DESIGNS.get(method, method)
    if method == "grid" and design.get("complete_grid") is False:
        head = "Grid over"  # not full: the Limitations say which configurations are missing

    planned = design.get("configs_planned") or design.get("configs_seen") or design.get("configs")
    epochs = fmt.plural(study.training.epochs, "epoch")
    stop = " (early stopping)" if study.training.early_stopping.patience else ""
    parts = [
        f"{head} {joiner.join(described)}: {fmt.plural(int(planned or 0), 'configuration')} x "
        f"{fmt.plural(study.search.seeds, 'seed')}, up to {epochs}{stop}"
    ]

    total = int(design.get("runs_total") or 0)
    excluded = design.get("runs_excluded") or {}
    if excluded:
        listed = ", ".join(f"{n} {why}" for why, n in sorted(excluded.items()))
        parts.append(
            f"{fmt.plural(total, 'run')}: {design.get('runs_compared')} compared, {listed}"
        )
    else:
        parts.append(f"{fmt.plural(total, 'run')}, all compared")

    missing, why = not_compared(design)
    compared = design.get("configs")
    if missing:
        parts.append(
            f"{compared} of {planned} configurations compared, with {seeds_text(design)} each; "
            f"{missing} with no compared run ({why})"
        )
    elif design.get("seeds_min") != study.search.seeds or not design.get("balanced", True):
        parts.append(f"compared: {seeds_text(design)} per configuration")

    compute = f"compute {fmt.duration(compute_s)}" if compute_s is not None else "compute unknown"
    return "; ".join([*parts, compute]) + "."


def near_chance(summary: dict[str, Any], facts: DataFacts) -> str | None:
    """Why the best configuration's accuracy is near chance level, or None when it is not.

    The text fits "near chance level (...)".

    Only accuracies have a chance level (1 / classes). Near means below chance plus the
    larger of 5 points and two binomial sds of a guessing model on the validation images.
    """
    metric = summary.get("metric") or {}
    best = summary.get("best") or {}
    name = str(metric.get("name", ""))
    if not name.endswith("acc") or metric.get("direction") != "maximize":
        return None
    if facts.num_classes is None or facts.num_classes < 2 or best.get("mean") is None:
        return None
    scale = float(metric.get("scale") or 1.0)
    unit = "%" if metric.get("unit") == "%" else ""
    p0 = 1.0 / facts.num_classes
    chance = p0 * scale
    guess = f"guessing among {facts.num_classes} classes scores {fmt.level(chance)}{unit}"
    noise = 0.0
    if name == "val_acc" and facts.val_images:
        noise = 2.0 * scale * math.sqrt(p0 * (1.0 - p0) / facts.val_images)
    margin = CHANCE_MARGIN * scale / 100.0
    if float(best["mean"]) >= chance + max(margin, noise):
        return None
    if noise > margin:
        return (
            f"{guess}, and up to {fmt.value(chance + noise)}{unit} is within two binomial sds "
            f"of it on {facts.val_images} validation images"
        )
    return f"{guess}, less than {fmt.level(margin)} {_unit_word(unit)} below the best"


def _unit_word(unit: str) -> str:
    return "points" if unit == "%" else "units"
