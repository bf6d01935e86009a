"""How counts and param levels read in messages, logs, tables and the report."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any


def noun(n: int, word: str, words: str | None = None) -> str:
    """The noun for a count: 'epoch' for 1, else 'epochs' (or `words`)."""
    return word if n == 1 else (words or word + "s")


def plural(n: int, word: str, words: str | None = None) -> str:
    """A count and its noun in the right number: '1 epoch', '2 epochs', '0 runs'."""
    return f"{n} {noun(n, word, words)}"


def format_level(value: Any) -> str:
    """A short readable label: 0.001 -> 1e-3, 0.00025 -> 2.5e-4, 0.5 -> 0.5, 0.0 -> 0, 'batch'."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if x == int(x) and abs(x) < 1e5:
        return str(int(x))
    if abs(x) < 1e-2 or abs(x) >= 1e5:
        mantissa, exponent = f"{x:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return f"{x:.3g}"


def format_params(params: Mapping[str, Any]) -> str:
    """'dropout=0.5, norm=batch': the levels of one configuration, as tables show them."""
    return ", ".join(f"{k}={format_level(v)}" for k, v in params.items())
