"""Errors the user can fix. The CLI prints their message and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input: the message says which setting and what to change."""


class ConfigError(UserError):
    """The study file or an override is invalid."""


class ArchitectureError(UserError):
    """The model described by the study file cannot work (found by shape inference)."""


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
