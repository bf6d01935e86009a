"""Errors the user can fix. The CLI prints their message and exits with code 2."""

from __future__ import annotations

from collections.abc import Iterator


class UserError(Exception):
    """A mistake in the user's input: the message says which setting and what to change."""


class ConfigError(UserError):
    """The study file or an override is invalid."""


class ArchitectureError(UserError):
    """The model described by the study file cannot work (found by shape inference)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (from kill, timeout or a job scheduler), handled as Ctrl-C is: the run being
    trained ends KILLED with what it logged, and a study resumes where it stopped."""


def stop_on_sigterm() -> None:
    """Raise Terminated in the main thread when the process is asked to terminate."""
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)


class DataError(UserError):
    """A dataset is missing, truncated or corrupt."""


# Environment variables that steer the training engine (docs/performance.md), and the values
# each takes; the first is what an unset variable means.
ENGINE_ENV = {
    "INTERPLAY_PRECISION": ("auto", "fp32", "bf16"),
    "INTERPLAY_MALLOC": ("tuned", "default"),
    "INTERPLAY_DENORMALS": ("flush", "keep"),
}


def engine_env(name: str) -> str:
    """The value of one of ENGINE_ENV's variables; a value it does not take is a ConfigError."""
    import os

    allowed = ENGINE_ENV[name]
    value = os.environ.get(name, "") or allowed[0]
    if value not in allowed:
        raise ConfigError(
            f"environment variable {name}={value!r}: use {', '.join(allowed)}, or unset it"
        )
    return value


def causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then the exception it was raised from or during, and so on (each once)."""
    seen: set[int] = set()
    node: BaseException | None = err
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__
