"""Errors the user can fix. The CLI prints their message and exits with code 2."""


class UserError(Exception):
    """A mistake in the user's input: the message says which setting and what to change."""


class ConfigError(UserError):
    """The study file or an override is invalid."""


class ArchitectureError(UserError):
    """The model described by the study file cannot work (found by shape inference)."""


class DataError(UserError):
    """A dataset is missing, truncated or corrupt."""
