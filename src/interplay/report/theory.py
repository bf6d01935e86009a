"""What the literature predicts for some pairs of params, and whether a study's numbers agree.

A param's role (normalization, dropout, learning rate, batch size, depth, width) comes from
the setting its `${placeholder}` fills in the study file, else from its name. Each prediction
is the sign of one interaction contrast,

    C = (m[a_hi, b_hi] - m[a_lo, b_hi]) - (m[a_hi, b_lo] - m[a_lo, b_lo]),

read from the analysis's cell means: how much the effect of moving a from its low to its high
level changes when b moves from low to high. The verdict needs the pair's interaction test
at alpha and, where the analysis has an interval for exactly these four cells, that interval
clear of zero; otherwise it is inconclusive. Designs without cell means (random, TPE, GP)
show how strong an interaction is but not its direction: not measurable here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from interplay.report import numbers as fmt

logger = logging.getLogger(__name__)

Role = Literal["norm", "dropout", "lr", "batch_size", "depth", "width"]
# The role of a setting that is known to be none of the above (no guess from the param's name).
NO_ROLE: Literal["none"] = "none"
TheoryVerdict = Literal["agrees", "disagrees", "inconclusive", "not measurable here"]

ROLE_WORDS: dict[str, str] = {
    "norm": "normalization",
    "dropout": "dropout",
    "lr": "learning rate",
    "batch_size": "batch size",
    "depth": "depth",
    "width": "width",
}

# Name patterns for params whose setting cannot be traced (no study file given); the order
# matters: "batch_size" must be taken before "batch" can suggest batch norm.
_NAMES: list[tuple[Role, re.Pattern[str]]] = [
    ("batch_size", re.compile(r"batch_?size|^bs$|^batch$")),
    ("lr", re.compile(r"(^|_)(lr|learning_?rate)($|_)")),
    ("dropout", re.compile(r"drop")),
    ("norm", re.compile(r"norm|(^|_)bn($|_)")),
    ("depth", re.compile(r"depth|repeat|n_?blocks|n_?layers")),
    ("width", re.compile(r"width|channels|units|hidden")),
]
_NONE_LEVELS = ("none", "no", "off", "false", "null")


@dataclass(frozen=True)
class Prediction:
    """One literature prediction: the sign of C for `a` and `b` on a maximized metric."""

    a: Role
    b: Role
    sign: int
    statement: str
    reference: str


PREDICTIONS = (
    Prediction(
        "dropout",
        "norm",
        -1,
        "dropout ahead of batch norm shifts the variance the normalization sees between "
        "training and inference, so dropout should help less, or hurt more, with batch norm "
        "than without it",
        "Li et al., CVPR 2019",
    ),
    Prediction(
        "norm",
        "lr",
        +1,
        "batch norm keeps training stable at larger steps, so its benefit should grow with "
        "the learning rate",
        "Ioffe & Szegedy, ICML 2015; Santurkar et al., NeurIPS 2018",
    ),
    Prediction(
        "norm",
        "depth",
        +1,
        "deeper plain stacks are harder to optimize and normalization is one of the things "
        "that keeps them trainable, so its benefit should grow with depth",
        "He et al., CVPR 2016; Ioffe & Szegedy, ICML 2015",
    ),
    Prediction(
        "dropout",
        "width",
        +1,
        "dropout thins every layer (n units kept with probability q act like about n·q), so "
        "it should cost less, or help more, in wide layers than in narrow ones",
        "Srivastava et al., JMLR 2014",
    ),
    Prediction(
        "lr",
        "batch_size",
        +1,
        "larger batches average away gradient noise and tolerate proportionally larger "
        "steps (linear scaling), so a higher learning rate should pay off more at a large "
        "batch size than at a small one",
        "Goyal et al., 2017; Smith et al., ICLR 2018",
    ),
)


@dataclass
class TheoryCheck:
    """A prediction applied to this study: the params it concerns and what the numbers say."""

    pair: tuple[str, str]
    statement: str
    reference: str
    verdict: TheoryVerdict
    evidence: str


def param_roles(names: list[str], raw: dict[str, Any] | None = None) -> dict[str, Role]:
    """The role of each param: from the setting its placeholder fills, else from its name."""
    roles: dict[str, Role | Literal["none"]] = {}
    if raw is not None:
        body = {k: v for k, v in raw.items() if k not in ("search", "hypothesis", "budgets")}
        for path, parent, text in _strings(body, ()):
            for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
                role = _setting_role(path, parent)
                if name in names and role is not None:
                    roles.setdefault(name, role)
    for name in names:
        if name in roles:
            continue
        for role, pattern in _NAMES:
            if pattern.search(name.lower()):
                roles[name] = role
                break
    return {name: role for name, role in roles.items() if role != NO_ROLE}


def _strings(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, str]]:
    if isinstance(node, str):
        yield path, None, node
    elif isinstance(node, dict):
        for key, child in node.items():
            if isinstance(child, str):
                yield (*path, key), node, child
            else:
                yield from _strings(child, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _strings(child, (*path, i))


def _setting_role(path: tuple[Any, ...], parent: Any) -> Role | Literal["none"] | None:
    key = path[-1] if path else None
    kind = parent.get("type") if isinstance(parent, dict) else None
    if kind == "norm" and key == "kind":
        return "norm"
    if kind == "dropout" and key == "p":
        return "dropout"
    if kind in ("conv", "linear") and key in ("channels", "units"):
        return "width"
    if path[-3:] == ("training", "optimizer", "lr"):
        return "lr"
    if path[-2:] == ("training", "batch_size"):
        return "batch_size"
    if key == "repeat" and "blocks" in path:
        layers = parent.get("layers") if isinstance(parent, dict) else None
        kinds = {layer.get("type") for layer in layers or [] if isinstance(layer, dict)}
        # Repeating a block without weights (a dropout-only block, say) adds no depth.
        return "depth" if kinds & {"conv", "linear"} else NO_ROLE
    return None


def check_theory(summary: dict[str, Any], roles: dict[str, Role]) -> list[TheoryCheck]:
    """Each prediction whose two roles are both among the study's params, judged."""
    by_role: dict[str, list[str]] = {}
    for name, role in roles.items():
        by_role.setdefault(role, []).append(name)
    out = []
    for prediction in PREDICTIONS:
        for a in by_role.get(prediction.a, []):
            for b in by_role.get(prediction.b, []):
                if a != b:
                    out.append(_judge(prediction, a, b, summary))
    return out


def _judge(prediction: Prediction, a: str, b: str, summary: dict[str, Any]) -> TheoryCheck:
    def result(verdict: TheoryVerdict, evidence: str) -> TheoryCheck:
        return TheoryCheck((a, b), prediction.statement, prediction.reference, verdict, evidence)

    entry = _interaction(summary, a, b)
    if entry is None:
        return result("not measurable here", "the analysis has no entry for this pair")
    cells = entry.get("cell_means")
    if not cells:
        size = fmt.with_upper(entry.get("size"), entry.get("size_ci"))
        p = entry.get("p")
        test = f"its F test {fmt.p_value(p)}" if p is not None else "untested"
        return result(
            "not measurable here",
            f"without a grid there are no cell means to give the direction; Friedman's H size "
            f"{size}, {test}, says only how strong the interaction may be",
        )
    a_levels = _low_high(prediction.a, _levels_of(cells, a))
    b_levels = _low_high(prediction.b, _levels_of(cells, b))
    if isinstance(a_levels, str):
        return result("not measurable here", f"{a}: {a_levels}")
    if isinstance(b_levels, str):
        return result("not measurable here", f"{b}: {b_levels}")
    (a_lo, a_hi), (b_lo, b_hi) = a_levels, b_levels
    m = {(x, y): _cell(cells, a, x, b, y) for x in (a_lo, a_hi) for y in (b_lo, b_hi)}
    if any(v is None for v in m.values()):
        return result("not measurable here", "a cell of the four has no compared run")
    v = {key: float(x or 0.0) for key, x in m.items()}
    contrast = (v[a_hi, b_hi] - v[a_lo, b_hi]) - (v[a_hi, b_lo] - v[a_lo, b_lo])
    ci = _same_cells_interval(entry, a, a_levels, b, b_levels)
    metric = summary.get("metric") or {}
    sign = prediction.sign * (1 if metric.get("direction", "maximize") == "maximize" else -1)
    alpha = float(metric.get("alpha", 0.05))
    p = entry.get("p")
    what = (
        f"effect of {a} {fmt.level(a_lo)} → {fmt.level(a_hi)} at {b}={fmt.level(b_hi)} minus "
        f"at {b}={fmt.level(b_lo)}: {fmt.signed(contrast)}"
    )
    what += f" {fmt.interval(ci, fmt.signed)}" if ci else " (no interval for these four cells)"
    what += f"; interaction {fmt.p_value(p)}" if p is not None else "; the interaction is untested"
    significant = p is not None and p < alpha
    clear = ci is None or ci[0] > 0 or ci[1] < 0
    if not (significant and clear) or contrast == 0:
        return result("inconclusive", what)
    verdict: TheoryVerdict = "agrees" if contrast * sign > 0 else "disagrees"
    return result(verdict, what)


def _interaction(summary: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    for entry in summary.get("interactions") or []:
        if set(entry.get("params") or []) == {a, b}:
            return dict(entry)
    return None


def _levels_of(cells: dict[str, Any], name: str) -> list[Any]:
    first = (cells.get("params") or [None])[0]
    return list(cells["levels_a"] if first == name else cells["levels_b"])


def _cell(cells: dict[str, Any], a: str, x: Any, b: str, y: Any) -> float | None:
    if (cells.get("params") or [None])[0] != a:
        a, x, b, y = b, y, a, x
    i = _index(cells["levels_a"], x)
    j = _index(cells["levels_b"], y)
    value = cells["means"][i][j]
    return float(value) if value is not None and math.isfinite(value) else None


def _index(levels: list[Any], x: Any) -> int:
    return next(i for i, v in enumerate(levels) if _same(v, x))


def _same(u: Any, v: Any) -> bool:
    if _number(u) and _number(v):
        return math.isclose(float(u), float(v), rel_tol=1e-9, abs_tol=1e-12)
    return str(u) == str(v)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _low_high(role: Role, levels: list[Any]) -> tuple[Any, Any] | str:
    """The two levels a prediction compares, or why the study has no such pair of levels."""
    if role == "norm":
        off = [v for v in levels if v is False or str(v).lower() in _NONE_LEVELS]
        on = [v for v in levels if v is True or str(v).lower() in ("batch", "batchnorm", "bn")]
        if not off or not on:
            return "no pair of levels 'none' and 'batch' to compare"
        return off[0], on[0]
    numeric = [v for v in levels if _number(v)]
    if len(numeric) < 2:
        return "fewer than two numeric levels"
    return min(numeric), max(numeric)


def _same_cells_interval(
    entry: dict[str, Any], a: str, a_levels: tuple[Any, Any], b: str, b_levels: tuple[Any, Any]
) -> tuple[float, float] | None:
    """The analysis's contrast interval, oriented like C, when it is about the same cells."""
    chosen = entry.get("contrast_levels") or {}
    ci = entry.get("contrast_ci")
    if not ci or a not in chosen or b not in chosen or None in ci:
        return None
    orientation = 1
    for name, (lo, hi) in ((a, a_levels), (b, b_levels)):
        first, second = chosen[name]
        if _same(first, lo) and _same(second, hi):
            continue
        if _same(first, hi) and _same(second, lo):
            orientation = -orientation
            continue
        return None
    low, high = orientation * float(ci[0]), orientation * float(ci[1])
    return (min(low, high), max(low, high))
