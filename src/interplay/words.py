"""Counts with their nouns in the right number, for messages, logs and the report."""

from __future__ import annotations


def noun(n: int, word: str, words: str | None = None) -> str:
    """The noun for a count: 'epoch' for 1, else 'epochs' (or `words`)."""
    return word if n == 1 else (words or word + "s")


def plural(n: int, word: str, words: str | None = None) -> str:
    """A count and its noun in the right number: '1 epoch', '2 epochs', '0 runs'."""
    return f"{n} {noun(n, word, words)}"
