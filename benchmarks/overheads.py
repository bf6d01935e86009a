"""The costs around training: MLflow logging per run and CLI start-up."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from interplay.config import Study
from interplay.data import DataSplits

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mlflow", "optuna")


class TimedSink:
    """Passes every call through to a real MLflowSink and adds up the time spent in it."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.calls: Counter[str] = Counter()
        self.seconds_by_call: dict[str, float] = defaultdict(float)

    @property
    def seconds(self) -> float:
        return sum(self.seconds_by_call.values())

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._sink, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                self.seconds_by_call[name] += time.perf_counter() - start
                self.calls[name] += 1

        return timed


class CountedClient:
    """Passes every call through to a real MlflowClient and counts the calls by name."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


# Sink methods that write to the artifact store (files, no MLflow client call).
ARTIFACT_WRITES = ("log_texts", "log_text", "log_artifact", "log_artifacts")


@dataclass
class LoggingShare:
    label: str
    run_seconds: float
    logging_seconds: float
    calls: int
    seconds_by_call: dict[str, float]

    @property
    def share(self) -> float:
        return self.logging_seconds / self.run_seconds


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = action()
    return value, time.perf_counter() - start


def store_creation_seconds() -> float:
    """First use of a fresh sqlite store: MLflow creates and migrates its schema."""
    from interplay.tracking import MLflowSink

    with tempfile.TemporaryDirectory() as tmp:
        _, seconds = _timed(lambda: MLflowSink(f"sqlite:///{tmp}/mlflow.db", "warmup"))
    return seconds


def logging_share(
    label: str, study: Study, data: DataSplits, uri: str, experiment_id: str | None = None
) -> LoggingShare:
    """One tracked run into `uri`; the logging time is everything MLflow-side of it.

    That is the run's creation, every sink call (params, tags, per-epoch metrics, the study
    and summary artifacts, the close) and the environment tags (a `git rev-parse`), measured
    on their own so that the training in between is not counted. With `experiment_id`, the
    run is made the way a study makes its runs, with the experiment looked up once before.
    """
    from interplay.models import build_model, summary_plain_text
    from interplay.runs import tracked_run, yaml_text
    from interplay.tracking import MLflowSink, environment_tags

    start = time.perf_counter()
    sink, create_s = _timed(
        lambda: MLflowSink(uri, experiment=study.name, run_name=label, experiment_id=experiment_id)
    )
    timed = TimedSink(sink)
    client = CountedClient(sink.client)
    sink.client = client  # type: ignore[assignment]
    tracked_run(study, data, cast(MLflowSink, timed))
    run_seconds = time.perf_counter() - start

    # tracked_run builds these two outside the sink; time them again the same way.
    _, tags_s = _timed(lambda: environment_tags(data.name, "cpu"))
    model = build_model(study.model, data.input_shape, data.num_classes)
    summary = model.summary  # type: ignore[union-attr]
    dumped = study.model_dump(mode="json")

    def artifact_texts() -> tuple[str, str]:
        return summary_plain_text(summary), yaml_text(dumped)  # type: ignore[arg-type]

    _, texts_s = _timed(artifact_texts)
    by_call: dict[str, float] = dict(timed.seconds_by_call)
    by_call.update(create_run=create_s, environment_tags=tags_s, artifact_texts=texts_s)
    # Calls that reach a store: the run's creation, the client's calls during the run (the
    # sink's queueing and ticks alone call nothing) and the artifact copies.
    calls = 1 + sum(client.calls.values()) + sum(timed.calls[n] for n in ARTIFACT_WRITES)
    return LoggingShare(label, run_seconds, sum(by_call.values()), calls, by_call)


@dataclass
class StartUp:
    command: str
    seconds: float
    heavy: list[str]


def _wall(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _heavy_imports(cli_args: list[str]) -> list[str]:
    """Heavy libraries in sys.modules after the CLI ran with these arguments, in-process."""
    code = (
        "import sys\n"
        "from interplay.cli import app\n"
        "try:\n"
        f"    app({cli_args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return [m for m in last.split(",") if m in HEAVY]


def cli_startup(repeats: int = 3) -> list[StartUp]:
    """Median wall time of CLI commands in fresh processes, and the heavy imports each makes."""
    study = str(REPO / "studies" / "baseline.yaml")
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "python -c 'import torch'": ([sys.executable, "-c", "import torch"], None),
        "interplay --help": ([sys.executable, "-m", "interplay.cli", "--help"], ["--help"]),
        "interplay summary baseline.yaml": (
            [sys.executable, "-m", "interplay.cli", "summary", study],
            ["summary", study],
        ),
    }
    rows = []
    for name, (args, cli_args) in commands.items():
        heavy = _heavy_imports(cli_args) if cli_args is not None else []
        rows.append(StartUp(name, _wall(args, repeats), heavy))
    return rows
