"""Loading a study file: YAML, --set overrides, budget presets, ${param} placeholders.

Every problem ends as a ConfigError naming the setting (as a dotted path) and what to change.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import logging
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from interplay.config import SearchConfig, Study
from interplay.errors import ConfigError
from interplay.words import format_params

logger = logging.getLogger(__name__)

_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_INNER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_INDEX = re.compile(r"\[(\d+)\]")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (the last would win)."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one section", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str) -> Any:
    """Plain data from YAML text, through the safe loader (no tags that build objects)."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@dataclass
class StudyFile:
    """A study file after overrides, before its ${param} placeholders are filled in.

    `resolve(params)` gives the validated Study for one assignment of the search params;
    `base()` fills each param with its first level, for summaries and single runs.
    """

    path: Path | None
    raw: dict[str, Any]
    search: SearchConfig
    overrides: list[str] = field(default_factory=list)
    budget: str | None = None

    @property
    def name(self) -> str:
        return str(self.raw.get("name", "study"))

    def param_names(self) -> list[str]:
        return list(self.search.params)

    def default_params(self) -> dict[str, Any]:
        """The first level of each param (the low end of a range)."""
        out: dict[str, Any] = {}
        for name, spec in self.search.params.items():
            if spec.levels is not None:
                out[name] = spec.levels[0]
            else:
                low = spec.low if spec.low is not None else 0.0
                out[name] = int(low) if spec.int else low
        return out

    def resolve(self, params: Mapping[str, Any] | None = None) -> Study:
        filled = {**self.default_params(), **dict(params or {})}
        params_ = self.search.params
        settings = {k: params_[k].setting(v) if k in params_ else v for k, v in filled.items()}
        data = substitute(self.raw, settings)
        where = f" (with {format_params(filled)})" if filled else ""
        return validate(data, source=self.source, where=where)

    def base(self) -> Study:
        return self.resolve({})

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "<study>"


def load_study(
    path: str | Path,
    overrides: list[str] | None = None,
    budget: str | None = None,
) -> StudyFile:
    """Read, override and check a study file.

    Args:
        path: the YAML study file.
        overrides: `dotted.key=value` strings; values are read as YAML.
        budget: the name of a preset under `budgets:` (its overrides apply before `overrides`).

    Returns:
        The StudyFile, already checked with every param at its first level.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"study file {p} not found: give the path to a .yaml study file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read study file {p}: {err}") from None
    study_file = load_study_text(text, path=p, overrides=overrides, budget=budget)
    if study_file.base().model.factory is not None:
        # A model factory usually lives next to its study file: make that folder importable.
        folder = str(p.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return study_file


def load_study_text(
    text: str,
    path: Path | None = None,
    overrides: list[str] | None = None,
    budget: str | None = None,
) -> StudyFile:
    source = str(path) if path is not None else "<study>"
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = ""
        if (
            mark is not None
            and "${" in text.splitlines()[min(mark.line, len(text.splitlines()) - 1)]
        ):
            hint = '; inside {...} a placeholder needs quotes: kind: "${norm}"'
        raise ConfigError(f"{source}{line}: YAML syntax error: {problem}{hint}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study file is a mapping of settings (name:, model:, ...)")
    return from_dict(raw, path=path, overrides=overrides, budget=budget)


def from_dict(
    raw: dict[str, Any],
    path: Path | None = None,
    overrides: list[str] | None = None,
    budget: str | None = None,
) -> StudyFile:
    raw = copy.deepcopy(raw)
    source = str(path) if path is not None else "<study>"
    if budget is not None:
        presets = raw.get("budgets") or {}
        if budget not in presets:
            names = ", ".join(sorted(presets)) or "none defined"
            raise ConfigError(f"--budget {budget}: not in the study's budgets ({names})")
        for key, value in presets[budget].items():
            set_dotted(raw, str(key), value, source=f"budgets.{budget}.{key}")
    overrides = list(overrides or [])
    for item in overrides:
        key, sep, value = item.partition("=")
        # Error messages write list items as blocks[0]; accept that form as well as blocks.0.
        key = _INDEX.sub(r".\1", key)
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write it as dotted.key=value")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        set_dotted(raw, key.strip(), parsed, source=f"--set {item}")

    try:
        search = SearchConfig.model_validate(raw.get("search") or {})
    except ValidationError as err:
        raise ConfigError(format_validation(err, source, prefix=("search",))) from None
    _check_placeholders(raw, search, source)
    _check_levels(search, source)
    study_file = StudyFile(path=path, raw=raw, search=search, overrides=overrides, budget=budget)
    base = study_file.base()
    if base.hypothesis.claims:
        # Checked now, before any training, so a typo in a claim cannot strand a finished study.
        from interplay.analysis.claims import check_claims
        from interplay.analysis.table import params_from_search

        try:
            check_claims(base.hypothesis.claims, params_from_search(search))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return study_file


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set `a.b.0.c` in nested dicts and lists, creating dicts where missing."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"{source}: {'.'.join(parts[:i]) or 'top'} has {len(node)} items; "
                    f"{part!r} is not an index of it"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{source}: {'.'.join(parts[:i])} is a value, not a section")


def placeholders(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield from _INNER.findall(node)
    elif isinstance(node, dict):
        for value in node.values():
            yield from placeholders(value)
    elif isinstance(node, list):
        for value in node:
            yield from placeholders(value)


def _check_placeholders(raw: dict[str, Any], search: SearchConfig, source: str) -> None:
    if any(placeholders(raw.get("name"))):
        raise ConfigError(
            f"{source}: name {raw['name']!r} holds a placeholder; a study has one name for all "
            "its runs (the levels are logged as params), so write it without ${...}"
        )
    body = {k: v for k, v in raw.items() if k not in ("search", "hypothesis", "budgets")}
    used = set(placeholders(body))
    for name in sorted(used - set(search.params)):
        close = difflib.get_close_matches(name, list(search.params), n=1)
        hint = f" (did you mean ${{{close[0]}}}?)" if close else ""
        raise ConfigError(
            f"{source}: ${{{name}}} is used but not declared under search.params{hint}"
        )
    for name in sorted(set(search.params) - used):
        raise ConfigError(
            f"{source}: search.params.{name} is declared but no setting uses ${{{name}}}; "
            "use it in a setting or remove it (each level would train the same model again)"
        )


def _check_levels(search: SearchConfig, source: str) -> None:
    for name, spec in search.params.items():
        raw = list(spec.values.values() if isinstance(spec.values, dict) else spec.values or [])
        values = [json.dumps(v, sort_keys=True, default=str) for v in raw]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            # Two levels with one value would train the same model twice as if it differed.
            raise ConfigError(
                f"{source}: search.params.{name}.values repeats {', '.join(repeated)}; "
                "list each level once"
            )


def substitute(node: Any, params: Mapping[str, Any]) -> Any:
    """Fill ${name} placeholders: a whole-string placeholder takes the param's own type."""
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return _INNER.sub(lambda m: str(params.get(m.group(1), m.group(0))), node)
    if isinstance(node, dict):
        return {k: substitute(v, params) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, params) for v in node]
    return node


def validate(data: dict[str, Any], source: str = "<study>", where: str = "") -> Study:
    try:
        return Study.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation(err, source, where=where)) from None


def grid_levels(search: SearchConfig) -> dict[str, list[Any]]:
    """The levels of each param in a full-factorial grid (ranges give grid_points levels)."""
    import numpy as np

    levels: dict[str, list[Any]] = {}
    for name, spec in search.params.items():
        if spec.levels is not None:
            levels[name] = spec.levels
            continue
        low, high = float(spec.low or 0.0), float(spec.high or 0.0)
        if spec.step is not None:
            points = list(np.arange(low, high + spec.step / 2, spec.step))
        elif spec.log:
            points = list(np.geomspace(low, high, search.grid_points))
        else:
            points = list(np.linspace(low, high, search.grid_points))
        levels[name] = sorted({int(round(x)) if spec.int else float(x) for x in points})
    return levels


def grid_points(search: SearchConfig) -> list[dict[str, Any]]:
    levels = grid_levels(search)
    names = list(levels)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*levels.values())]


# ---------------------------------------------------------------- error messages


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_validation(
    err: ValidationError,
    source: str,
    prefix: tuple[str, ...] = (),
    where: str = "",
) -> str:
    lines = []
    for item in err.errors():
        raw_loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        loc = _clean_loc(raw_loc)
        path = format_loc(prefix + loc)
        kind = item["type"]
        if kind == "extra_forbidden":
            valid = _fields_at(Study, prefix + raw_loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            lines.append(f"{path}: unknown key; {hint}")
        elif kind == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags", "")
            lines.append(f"{path}.type: unknown layer type; use one of {expected}")
        elif kind == "union_tag_not_found":
            lines.append(f"{path}: every layer needs a type ({', '.join(_layer_types())})")
        else:
            got = item.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {message}{shown}" if path else message)
    head = f"{source}: invalid study{where}:" if len(lines) > 1 else f"{source}{where}:"
    if len(lines) == 1:
        return f"{head} {lines[0]}"
    return "\n  ".join([head, *lines])


def _layer_types() -> list[str]:
    from interplay.config import LAYER_KINDS

    return list(LAYER_KINDS)


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic puts the discriminator tag (e.g. 'conv') and validator names in the location.
    from interplay.config import LAYER_KINDS

    out: list[int | str] = []
    for i, part in enumerate(loc):
        after_index = i > 0 and isinstance(loc[i - 1], int)
        if (
            isinstance(part, str)
            and after_index
            and part in LAYER_KINDS
            and out[-2:-1] == ["layers"]
        ):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The valid keys of the section at `loc`, found by walking the schema's annotations."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else Any
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(part)
            annotation = info.annotation if info is not None else Any
        else:
            # A discriminated union: the part is the tag that picked the member.
            tagged = [
                m
                for m in typing.get_args(annotation)
                if isinstance(m, type)
                and issubclass(m, BaseModel)
                and "type" in m.model_fields
                and part in typing.get_args(m.model_fields["type"].annotation)
            ]
            if not tagged:
                return []
            annotation = tagged[0]
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    members = [a for a in typing.get_args(annotation) if isinstance(a, type)]
    return sorted({f for m in members if issubclass(m, BaseModel) for f in m.model_fields})


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation
