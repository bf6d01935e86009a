"""interplay: study how the hyperparameters and architecture of image classifiers interact.

From Python (a notebook, say)::

    import interplay
    study = interplay.load_study("studies/baseline.yaml", ["training.epochs=2"]).base()
    data = interplay.load_data(study.data)
    model = interplay.build_model(study.model, data.input_shape, data.num_classes)
    result = interplay.train(study, data)
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# interplay talks to no host but the stores the user names: MLflow's usage telemetry (on by
# default since MLflow 3) stays off unless the user sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Imported on first use, so that `interplay --help` does not pay for torch.
_LAZY = {
    "load_study": "interplay.studyfile",
    "load_data": "interplay.data",
    "build_model": "interplay.models",
    "infer_model": "interplay.models",
    "train": "interplay.training",
    "run_study": "interplay.runner",
    "results_table": "interplay.results",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interplay' has no attribute {name!r}")
