"""Tracking sinks: where a run's params, metrics and artifacts go.

`MLflowSink` is the one real implementation; the trainer and the study runner only see the
small `MetricSink` interface. Each call into MLflow's sqlite store costs 4-10 ms here (its
ORM's queries and a transaction, not the disk), so the sink sends what it can together:
params with the environment tags, the artifacts in one copy, epoch metrics at most every
LIVE_FLUSH_SECONDS, the last metrics with the state tags at the close. A run killed outright
(not interrupted) can lose the metrics of its last few seconds; it is redone on resume.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Schemes of MLflow's tracking stores that interplay can use (database stores, servers).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"
# MLflow's limit on a param value; longer values are shortened and kept whole as an artifact.
MAX_PARAM_LENGTH = 6000
# MLflow's rules for a param key: at most 250 of these characters (it also takes '/', which
# could make a key resolve to another name as a path, so interplay replaces it too).
MAX_KEY_LENGTH = 250
NOT_KEY_CHARS = re.compile(r"[^\w.\- :]")
MAX_TAG_LENGTH = 8000
# MLflow's limits on one log_batch call.
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
# Epoch metrics reach the store at most this long after they were logged, so the dashboard
# follows a long run live while a run of short epochs writes them all in one call.
LIVE_FLUSH_SECONDS = 5.0
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
T = TypeVar("T")


class MetricSink(Protocol):
    """Where a run's numbers go."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def tick(self) -> None: ...

    def close(self, status: RunStatus = "FINISHED", reason: str = "") -> None: ...


def tracking_uri(explicit: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's local default sqlite store.

    A store interplay cannot use is a ConfigError here, before anything is trained.
    """
    if explicit:
        uri, where = explicit, f"--tracking-uri {explicit}"
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        where = f"MLFLOW_TRACKING_URI={uri}"
    else:
        return DEFAULT_TRACKING_URI
    check_tracking_uri(uri, where)
    return uri


def check_tracking_uri(uri: str, where: str) -> None:
    """Refuse a store MLflow would fail on only after minutes or with a traceback.

    That is a scheme MLflow has no tracking store for (or its file store, which MLflow 3 keeps
    only in maintenance and interplay does not use), a folder or a non-sqlite file given as
    the sqlite file, or a folder where no file can be made (MLflow retries that for minutes).
    """
    from interplay.errors import ConfigError

    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"{where}: interplay keeps runs in an MLflow database store; use "
            "sqlite:///mlflow.db (a file here) or the http:// address of an MLflow server"
        )
    if scheme != "sqlite":
        return
    path = sqlite_path(uri)
    if path is None:
        # sqlite:/// alone, or :memory:, is a database that ends with the process.
        raise ConfigError(
            f"{where}: names no file, so the runs would be lost when the command ends; "
            "name one, like sqlite:///mlflow.db"
        )
    if path.is_dir():
        raise ConfigError(f"{where}: {path} is a folder; name a file in it, like mlflow.db")
    if path.exists():
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
        if head and head != SQLITE_HEADER:
            raise ConfigError(f"{where}: {path} is not an sqlite database; name another file")
        if head and not is_mlflow_store(path):
            raise ConfigError(
                f"{where}: {path} is an sqlite database of something else, not an MLflow "
                "store; name a new file (MLflow would add its tables to it)"
            )
        return
    folder = next((d for d in path.resolve().parents if d.exists()), None)
    if folder is None:
        return
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: cannot write {folder}: a file is in the way of a folder; choose "
            "another path"
        )
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"{where}: cannot make the store in {folder} ({describe_os_error(err, name=False)});"
            " choose a writable folder"
        ) from None


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


@cache
def git_commit(cwd: Path | None = None) -> str | None:
    """The commit checked out where the process runs, read once: a study keeps the study
    files it started with, whatever is committed while it runs."""
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
    from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
    from mlflow.telemetry import get_telemetry_client, set_telemetry_client
    from mlflow.tracking import MlflowClient

    if MLFLOW_DISABLE_TELEMETRY.get() and get_telemetry_client() is not None:
        # MLflow was imported before interplay set MLFLOW_DISABLE_TELEMETRY (in a notebook,
        # say); this reads the setting again and stops the client if it says so.
        set_telemetry_client()
    create_store_whole(uri)
    # MLflow logs a store error with its traceback before raising it; interplay reports the
    # error itself, in one line that says what to do (see storage_problem).
    db_logger = logging.getLogger("mlflow.store.db.utils")
    if not db_logger.isEnabledFor(logging.DEBUG):
        db_logger.setLevel(logging.CRITICAL)
    return MlflowClient(tracking_uri=uri)


def is_mlflow_store(path: Path) -> bool:
    """Whether an sqlite file holds MLflow's tables, or no tables yet; read-only."""
    import sqlite3

    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
    except sqlite3.Error:
        return True  # unreadable now (locked, say): MLflow's own error will tell
    return not tables or {"experiments", "runs", "alembic_version"} <= tables


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def create_store_whole(uri: str) -> None:
    """Create a new sqlite MLflow store under another name and move it in when complete.

    MLflow builds a new store's tables in many steps; a process killed among them leaves a
    file that every later MLflow client refuses. Built aside, a store is there whole or not.
    """
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        # A link, unlike a rename, never replaces a store another process made meanwhile.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.debug("created the MLflow store %s", path)


def get_experiment_id(client: MlflowClient, name: str) -> str:
    """The id of the experiment `name`, created (or restored, if deleted) when needed."""

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
        experiment_id: the experiment's id where the caller knows it (a study's runs), to
            save looking it up by name for every run.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        experiment_id: str | None = None,
    ) -> None:
        self._metrics: list[Any] = []
        self._params: list[Any] = []
        self._tags: dict[str, str] = {}
        self._flushed_at = time.monotonic()
        self._artifact_uri: str | None = None
        self._artifact_repo: ArtifactRepository | None = None
        self.closed = False
        self.uri = uri
        self.client = get_client(uri)
        self.experiment_id = experiment_id or get_experiment_id(self.client, experiment)
        all_tags = dict(tags or {})
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:

            def create() -> Any:
                return with_retries(
                    lambda: self.client.create_run(
                        self.experiment_id, run_name=run_name, tags=all_tags
                    ),
                    "create run",
                )

            try:
                run = create()
            except Exception:
                if experiment_id is None:
                    raise
                # Deleted since the caller looked it up (in the MLflow UI): find or restore it.
                self.experiment_id = get_experiment_id(self.client, experiment)
                run = create()
            self.run_id: str = run.info.run_id
            self._artifact_uri = run.info.artifact_uri
        else:
            self.run_id = run_id
            if all_tags:
                self.set_tags(all_tags)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Write tags now (queue_tags sends them with the next batch instead)."""
        self.queue_tags(tags)
        self.flush()

    def queue_tags(self, tags: Mapping[str, str]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        """Log params (and `tags`) now, in one MLflow call; see queue_params."""
        self.queue_params(params, tags)
        self.flush()

    def queue_params(
        self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None
    ) -> None:
        """Params flattened to dotted keys, and `tags`, to go with the next batch.

        A training run's params go with its first metrics (see tick), so a run of a few
        seconds costs one MLflow call instead of two. A key MLflow refuses (characters outside
        letters, digits, `_ - . : space`, or over 250 characters) is renamed, with the
        original names in the artifact param_keys.json; a value over 6000 characters is
        shortened, with the full value in params_full.json. Either way the run goes on, with
        a warning.
        """
        from mlflow.entities import Param

        flat = flatten(dict(params))
        items, too_long, renamed = [], {}, {}
        # Keys MLflow takes as they are keep their names; renamed ones keep clear of them.
        used = {k for k in flat if param_key(k) == k}
        for original, value in flat.items():
            key = original
            if original not in used:
                key = param_key(original, used)
                used.add(key)
                renamed[key] = original
            text = "" if value is None else str(value)
            if len(text) > MAX_PARAM_LENGTH:
                too_long[key] = text
                text = text[: MAX_PARAM_LENGTH - 15] + "...(shortened)"
            items.append(Param(key, text))
        self.queue_tags(tags or {})
        self._params.extend(items)
        if too_long:
            warn_once(
                f"params {shown(too_long)} are longer than MLflow stores ({MAX_PARAM_LENGTH} "
                "characters): shortened, with the full values in the artifact params_full.json"
            )
            self.log_text(json.dumps(too_long, indent=2), "params_full.json")
        if renamed:
            warn_once(
                f"param names {shown(renamed.values())} cannot be MLflow keys: renamed "
                f"{shown(renamed)}, with the original names in the artifact param_keys.json"
            )
            self.log_text(json.dumps(renamed, indent=2, ensure_ascii=False), "param_keys.json")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue one step's metrics; send the queue once LIVE_FLUSH_SECONDS have passed."""
        self.queue_metrics(metrics, step)
        self.tick()

    def tick(self) -> None:
        """Send what is queued if LIVE_FLUSH_SECONDS have passed since the last send.

        The trainer calls this every step, so a long run's params reach the dashboard within
        seconds of its start, not at the end of its first epoch.
        """
        queued = self._metrics or self._params or self._tags
        if queued and time.monotonic() - self._flushed_at >= LIVE_FLUSH_SECONDS:
            self.flush()

    def queue_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> None:
        """Send the queued params, tags and metrics, together where MLflow's limits allow."""
        metrics, self._metrics = self._metrics, []
        params, self._params = self._params, []
        # Params and tags share MLflow's limit of 100 per batch.
        both = [("tags", t) for t in self._take_tags()] + [("params", p) for p in params]
        self._flushed_at = time.monotonic()
        while metrics or both:
            part, both = both[:MAX_PARAMS_TAGS_PER_BATCH], both[MAX_PARAMS_TAGS_PER_BATCH:]
            room = MAX_ENTITIES_PER_BATCH - len(part)
            metric_part, metrics = metrics[:room], metrics[room:]
            self._send(
                metrics=metric_part,
                params=[e for kind, e in part if kind == "params"],
                tags=[e for kind, e in part if kind == "tags"],
            )

    def _take_tags(self) -> list[Any]:
        from mlflow.entities import RunTag

        tags, self._tags = self._tags, {}
        return [RunTag(k, v) for k, v in tags.items()]

    def _send(self, **batch: Any) -> None:
        with_retries(lambda: self.client.log_batch(self.run_id, **batch), "log batch")

    def log_text(self, text: str, name: str) -> None:
        self.log_texts({name: text})

    def log_texts(self, texts: Mapping[str, str]) -> None:
        """Text files as artifacts of the run, copied into the artifact store in one go."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in texts.items():
                (Path(tmp) / name).write_text(text, encoding="utf-8")
            with_retries(lambda: self._artifacts().log_artifacts(tmp), f"artifacts {shown(texts)}")

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        with_retries(
            lambda: self._artifacts().log_artifact(str(path), folder), f"artifact {path.name}"
        )

    def _artifacts(self) -> ArtifactRepository:
        """The run's artifact store, from the location create_run returned.

        MLflow's client reads the run back from the database to find it on each run's first
        artifact (6 ms here); a resumed run, whose location is not known yet, does the same.
        """
        if self._artifact_repo is None:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            location = self._artifact_uri or self.client.get_run(self.run_id).info.artifact_uri
            self._artifact_repo = get_artifact_repository(location, tracking_uri=self.uri)
        return self._artifact_repo

    def log_artifacts(self, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            self.log_artifact(path, folder)

    def close(self, status: RunStatus = "FINISHED", reason: str = "") -> None:
        """Send what is queued (with the reason as tags, if any) and end the run."""
        if self.closed:
            return
        if reason:
            note = reason[:MAX_TAG_LENGTH]
            self.queue_tags({"interplay.reason": reason[:5000], "mlflow.note.content": note})
        self.flush()
        with_retries(lambda: self.client.set_terminated(self.run_id, status=status), "end run")
        self.closed = True


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A warning about the study's settings, once per process rather than once per run."""
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)


def shown(names: Iterable[str], most: int = 4, width: int = 60) -> str:
    """A few names, each cut to `width` characters, for a one-line message."""
    listed = list(names)
    cut = [repr(n if len(n) <= width else n[: width - 3] + "...") for n in listed[:most]]
    more = f" and {len(listed) - most} more" if len(listed) > most else ""
    return ", ".join(cut) + more


def param_key(key: str, used: set[str] | frozenset[str] = frozenset()) -> str:
    """`key` as a name MLflow accepts, distinct from those in `used`."""
    safe = NOT_KEY_CHARS.sub("_", key)
    if safe in ("", ".") or safe.startswith(".."):
        safe = "_" + safe
    if len(safe) > MAX_KEY_LENGTH or safe in used:
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        safe = f"{safe[: MAX_KEY_LENGTH - 11]}-{digest}"
    return safe


def environment_tags(dataset: str, device: str) -> dict[str, str]:
    import torch

    tags = {"dataset": dataset, "device": device, "torch": torch.__version__}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


# ---------------------------------------------------------------- stores that cannot be written

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST)
# What sqlite says (through MLflow or Optuna) for the same causes; its errors carry no errno.
STORE_TEXTS = {
    "database or disk is full": "the disk is full",
    "disk i/o error": "the disk refused a write (full, at a file size limit, read-only to "
    "this process, or failing)",
    "readonly database": "its file is read-only",
    "unable to open database file": "its file or folder cannot be opened for writing",
    # MLflow's words for a write to a run deleted meanwhile, or to one in a deleted experiment.
    "current state is deleted": "a run or experiment it was writing to was deleted meanwhile "
    "(in the MLflow UI, say)",
}


def describe_os_error(err: OSError, name: bool = True) -> str:
    where = f"{err.filename}: " if err.filename and name else ""
    if err.errno in DISK_FULL:
        return f"{where}the disk is full (or a file size limit is reached)"
    if err.errno in IN_THE_WAY:
        return f"{where}a file is in the way of a folder"
    return f"{where}{err.strerror or err}"


def storage_problem(err: BaseException) -> str | None:
    """Why a store could not be written, when that is what stopped `err` (or its causes).

    A full disk and a read-only or misplaced folder are the user's to fix; nothing is lost
    by stopping on one, since each finished run is in both stores before the next starts.
    """
    from interplay.errors import causes

    for node in causes(err):
        if isinstance(node, OSError) and node.errno in DISK_FULL + NOT_WRITABLE + IN_THE_WAY:
            return f"cannot write {describe_os_error(node)}"
        text = str(node).lower()
        for said, meaning in STORE_TEXTS.items():
            if said in text:
                return f"cannot write a database store (MLflow's, or --storage): {meaning}"
    return None
