"""One tracked run: build, train and log a resolved study to MLflow.

Shared by `interplay train` (a single run) and the study runner (one child run per trial
replicate), so both log the same params, tags and artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from interplay.config import Study
from interplay.errors import Terminated
from interplay.tracking import MLflowSink, environment_tags, flatten, storage_problem

if TYPE_CHECKING:
    from rich.progress import Progress
    from torch import nn

    from interplay.data import DataSplits
    from interplay.training import EpochCallback, RunResult

logger = logging.getLogger(__name__)

# Sections that describe the study rather than this run's training; logged as artifacts.
NOT_PARAMS = ("hypothesis", "budgets", "report", "description")


def study_params(study: Study) -> dict[str, Any]:
    """Every setting of a resolved study as flat dotted keys (`optimizer.lr` style)."""
    dumped = study.model_dump(mode="json", exclude=set(NOT_PARAMS))
    return flatten(dumped)


def yaml_text(data: Any) -> str:
    """YAML for an artifact; libyaml's emitter where PyYAML has it (3 ms faster per run)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)


def save_checkpoint(model: nn.Module, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Written aside and renamed, so a kill never leaves a half-written checkpoint behind.
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    import torch

    # weights_only: a checkpoint is data, never code to run.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def tracked_run(
    study: Study,
    data: DataSplits,
    sink: MLflowSink,
    *,
    extra_params: Mapping[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
    progress: Progress | None = None,
    evaluate_test: bool = False,
    epoch_log_level: int = logging.INFO,
    checkpoint: Path | None = None,
) -> RunResult:
    """Train a resolved study, logging to an open MLflow run, and close that run.

    A complete run's weights are saved to `checkpoint` (a state dict: tensors only, so it
    loads with `weights_only=True`). The run ends FINISHED, or FAILED with the reason (a
    non-finite loss, an error), or KILLED when interrupted; a pruned run ends FINISHED with
    its state tag 'pruned'.
    """
    from interplay.training import Trainer

    status = "FAILED"
    reason = "interrupted"
    raising = True
    try:
        # Sent with the first metrics (or within seconds, see MLflowSink.tick), or with the
        # close of a run stopped before it trained.
        sink.queue_params({**study_params(study), **dict(extra_params or {})})
        trainer = Trainer(
            study,
            data,
            sink=sink,
            on_epoch=on_epoch,
            progress=progress,
            evaluate_test=evaluate_test,
            epoch_log_level=epoch_log_level,
        )
        device = trainer.engine.device.type
        sink.queue_params(trainer.engine.as_params(), environment_tags(data.name, device))
        texts = {"study.yaml": yaml_text(study.model_dump(mode="json"))}
        model_summary = getattr(trainer.model, "summary", None)
        if model_summary is not None:
            from interplay.models import summary_plain_text

            texts["model_summary.txt"] = summary_plain_text(model_summary)
        sink.log_texts(texts)
        result = trainer.run()
        if checkpoint is not None and result.state == "complete":
            save_checkpoint(trainer.model, checkpoint)
        # The last epoch's metrics are already the run's latest values, which MLflow's tables
        # show; only the test set adds numbers. Sent with the close, in one MLflow call.
        if result.test_acc is not None:
            test = {"test_acc": result.test_acc, "test_loss": result.test_loss or 0.0}
            sink.queue_metrics(test, step=result.epochs_done)
        sink.queue_tags(
            {"state": result.state, "stopped_early": str(result.stopped_early).lower()}
        )
        status = "FAILED" if result.state == "failed" else "FINISHED"
        reason = result.reason
        raising = False
        return result
    except KeyboardInterrupt as err:
        status = "KILLED"
        reason = "stopped by SIGTERM" if isinstance(err, Terminated) else "interrupted by the user"
        sink.queue_tags({"state": "interrupted"})  # sent with the close
        raise
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
        sink.queue_tags({"state": "failed"})
        raise
    finally:
        try:
            sink.close(status, reason)  # type: ignore[arg-type]
        except Exception as err:
            if not raising:
                # The close sends the run's queued metrics: without them the run is not done.
                raise
            # The run's own error matters more than a failed close.
            # One line: MLflow's errors quote whole SQL statements.
            why = storage_problem(err) or str(err).strip().splitlines()[0][:200]
            logger.warning("could not close MLflow run %s: %s", sink.run_id, why)
