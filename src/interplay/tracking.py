"""Tracking sinks: where a run's params, metrics and artifacts go.

`MLflowSink` is the one real implementation; the trainer and the study runner only see the
small `MetricSink` interface. Metrics are buffered and written in batches, so that logging
costs nothing measurable next to training.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# MLflow's limit on a param value; longer values are shortened and kept whole as an artifact.
MAX_PARAM_LENGTH = 6000
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
T = TypeVar("T")


class MetricSink(Protocol):
    """Where a run's numbers go."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self, status: RunStatus = "FINISHED", reason: str = "") -> None: ...


def tracking_uri(explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's local default sqlite store."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists to dotted keys: {'a': [{'b': 1}]} -> {'a.0.b': 1}."""
    out: dict[str, Any] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(node, list | tuple) and node:
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = node
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def with_retries(action: Callable[[], T], what: str, attempts: int = 12) -> T:
    """Run a store write, waiting out the locks that concurrent sqlite writers cause."""
    delay = 0.05
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:  # MLflow wraps sqlite errors in several exception types.
            text = str(err).lower()
            transient = "locked" in text or "busy" in text or "unable to open database" in text
            if not transient or attempt == attempts:
                raise
            logger.debug("%s: store busy (%s), retry %d", what, err, attempt)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def get_client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_experiment_id(client: MlflowClient, name: str) -> str:
    def find_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name))
        except Exception:
            # Another worker created it between our lookup and create.
            again = client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    return with_retries(find_or_create, f"experiment {name}")


class MLflowSink:
    """One MLflow run. Params are flattened and metrics are sent in batches.

    Args:
        uri: tracking URI (see `tracking_uri`).
        experiment: experiment name (the study's name).
        run_name: the run's display name.
        tags: extra tags; MLflow nests the run when `parent_run_id` is given.
        parent_run_id: the study's parent run.
        run_id: resume an existing run instead of creating one.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.client = get_client(uri)
        self.experiment_id = get_experiment_id(self.client, experiment)
        all_tags = dict(tags or {})
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            run = with_retries(
                lambda: self.client.create_run(
                    self.experiment_id, run_name=run_name, tags=all_tags
                ),
                "create run",
            )
            self.run_id: str = run.info.run_id
        else:
            self.run_id = run_id
            if all_tags:
                self.set_tags(all_tags)
        self._pending: list[Any] = []
        self.closed = False

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        with_retries(lambda: self.client.log_batch(self.run_id, tags=items), "set tags")

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(dict(params))
        items, too_long = [], {}
        for key, value in flat.items():
            text = "" if value is None else str(value)
            if len(text) > MAX_PARAM_LENGTH:
                too_long[key] = text
                text = text[: MAX_PARAM_LENGTH - 15] + "...(shortened)"
            items.append(Param(key, text))
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]
            self._send(params=chunk)
        if too_long:
            logger.warning(
                "params %s are longer than MLflow stores (%d characters): shortened, with the "
                "full values in the artifact params_full.json",
                ", ".join(sorted(too_long)),
                MAX_PARAM_LENGTH,
            )
            self.log_text(json.dumps(too_long, indent=2), "params_full.json")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue one step's metrics and send the queue as one batch."""
        self.queue_metrics(metrics, step)
        self.flush()

    def queue_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), 1000):
            chunk = pending[start : start + 1000]
            self._send(metrics=chunk)

    def _send(self, **batch: Any) -> None:
        with_retries(lambda: self.client.log_batch(self.run_id, **batch), "log batch")

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.log_artifact(path)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        with_retries(
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path=folder),
            f"artifact {path.name}",
        )

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            self.log_artifact(path, folder)

    def close(self, status: RunStatus = "FINISHED", reason: str = "") -> None:
        if self.closed:
            return
        self.flush()
        if reason:
            self.set_tags({"interplay.reason": reason[:5000], "mlflow.note.content": reason})
        with_retries(lambda: self.client.set_terminated(self.run_id, status=status), "end run")
        self.closed = True


def environment_tags(dataset: str, device: str) -> dict[str, str]:
    import torch

    tags = {"dataset": dataset, "device": device, "torch": torch.__version__}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags
