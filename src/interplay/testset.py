"""The held-out test set, used once: the chosen configuration's saved models, evaluated.

Hyperparameters are chosen on validation accuracy only. The test set is touched after the
choice, for the best configuration alone, and the result is stored in test.json so a second
report does not evaluate it again.
"""

from __future__ import annotations

import json
import logging
import statistics
from datetime import UTC, datetime
from typing import Any

from interplay.errors import UserError
from interplay.study import StudyPaths
from interplay.studyfile import StudyFile
from interplay.words import plural

logger = logging.getLogger(__name__)


def evaluate_best(
    study_file: StudyFile, paths: StudyPaths, best: dict[str, Any]
) -> dict[str, Any] | None:
    """Test accuracy of the best configuration (mean and sd over its seeds' saved models).

    Args:
        study_file: the study, to rebuild the configuration's model and data settings.
        paths: the study's results folder.
        best: the analysis summary's `best` entry ({config_id, params, ...}).

    Returns:
        The test.json record, or None when no saved model of that configuration exists.
    """
    if paths.test.exists():
        record = json.loads(paths.test.read_text())
        if record.get("config_id") == best["config_id"]:
            return dict(record)
        logger.warning("the best configuration changed since the test set was evaluated")

    from interplay.data import load_data
    from interplay.devices import pick_device, pick_engine
    from interplay.models import build_model
    from interplay.runs import load_checkpoint
    from interplay.study import data_fingerprint
    from interplay.training import evaluate

    recorded = (
        json.loads(paths.spec.read_text()).get("data files") if paths.spec.exists() else None
    )
    if recorded is not None and data_fingerprint(study_file) != recorded:
        raise UserError(
            f"the images under data.root changed since the study started ({paths.spec}): the "
            "held-out test part would now hold images the models trained on; restore the "
            "folder, or run the study again with --new"
        )
    params = dict(best.get("params") or {})
    study = study_file.resolve(params)
    cid = best["config_id"]
    checkpoints = sorted(paths.root.glob(f"checkpoints/{cid}-s*.pt"))
    if not checkpoints:
        logger.warning("no saved model of configuration %s: the test set is not evaluated", cid)
        return None
    data = load_data(study.data, with_test=True)
    if data.test_x is None or data.test_y is None:
        raise UserError(f"{data.name} has no test set to evaluate on")
    accuracies = []
    for path in checkpoints:
        model = build_model(study.model, data.input_shape, data.num_classes)
        load_checkpoint(model, path)
        engine = pick_engine(model, pick_device(study.training.device), study.training.precision)
        model.to(engine.device)
        _, acc = evaluate(
            model, data.test_x.to(engine.device), data.test_y.to(engine.device), engine
        )
        accuracies.append(acc)
    record = {
        "config_id": cid,
        "params": params,
        "test_acc": statistics.fmean(accuracies),
        "test_acc_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "n": len(accuracies),
        "test_images": len(data.test_y),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    paths.test.write_text(json.dumps(record, indent=2))
    logger.info(
        "test accuracy of the best configuration: %.2f%% (%s, %s)",
        100 * record["test_acc"],
        plural(len(accuracies), "model"),
        plural(len(data.test_y), "image"),
    )
    return record
