"""The study-file reference, generated from the pydantic schema so that it cannot drift.

`python -m interplay.reference > docs/study-reference.md` regenerates the committed file;
tests/test_reference.py fails when the two differ. Every key is listed by its dotted path, e.g.
`training.optimizer.lr` or `model.blocks[].layers[] (type: conv).kernel`, with its type, its
default and the description written next to the field in `interplay.config`.
"""

from __future__ import annotations

import logging
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from interplay.config import Study

logger = logging.getLogger(__name__)

REGENERATE = "python -m interplay.reference > docs/study-reference.md"


@dataclass(frozen=True)
class Row:
    """One key of the study file."""

    path: str
    model: type[BaseModel]
    field: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """One mapping of the study file: the keys of one pydantic model at one path."""

    path: str
    model: type[BaseModel]
    description: str
    rows: list[Row]


# ---------------------------------------------------------------- walking the schema


def _strip_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _strip_annotated(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [_strip_annotated(a) for a in typing.get_args(annotation)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tag(model: type[BaseModel]) -> str | None:
    """The discriminator value of a layer model (its `type: Literal[...]`), if it has one."""
    info = model.model_fields.get("type")
    if info is None or typing.get_origin(info.annotation) is not Literal:
        return None
    return str(typing.get_args(info.annotation)[0])


def _type_description(model: type[BaseModel]) -> str:
    info = model.model_fields["type"]
    return f"A layer of type {_tag(model)}: {info.description or ''}".strip()


def _nested(path: str, info: FieldInfo) -> list[tuple[str, type[BaseModel], str]]:
    """The sections under a field (models directly, in lists, or as mapping values)."""
    about = info.description or ""
    out: list[tuple[str, type[BaseModel], str]] = []
    for member in _union_members(info.annotation):
        origin = typing.get_origin(member)
        if _is_model(member):
            out.append((path, member, about))
        elif origin is list:
            items = [m for m in _union_members(typing.get_args(member)[0]) if _is_model(m)]
            if len(items) == 1:
                out.append((f"{path}[]", items[0], about))
                continue
            # A discriminated union (the layers): one section per value of `type`.
            for item in items:
                out.append((f"{path}[] (type: {_tag(item)})", item, _type_description(item)))
        elif origin is dict:
            value = typing.get_args(member)[1]
            out.extend((f"{path}.<name>", m, about) for m in _union_members(value) if _is_model(m))
    return out


def reference_sections(root: type[BaseModel] = Study) -> list[Section]:
    """Every section of the study file, depth first in the order the schema declares them.

    Args:
        root: the model at the top of the file.

    Returns:
        One Section per (path, model), the top level first with an empty path.
    """
    sections: list[Section] = []

    def visit(path: str, model: type[BaseModel], description: str) -> None:
        rows = []
        children: list[tuple[str, type[BaseModel], str]] = []
        for name, info in model.model_fields.items():
            key = f"{path}.{name}" if path else name
            rows.append(
                Row(
                    path=key,
                    model=model,
                    field=name,
                    type=type_text(info),
                    default=default_text(info),
                    description=info.description or "",
                )
            )
            children.extend(_nested(key, info))
        sections.append(Section(path, model, description, rows))
        for child_path, child, child_description in children:
            visit(child_path, child, child_description)

    visit("", root, "The top level of a study file.")
    return sections


# ---------------------------------------------------------------- rendering values


def _annotation_text(annotation: Any) -> str:
    annotation = _strip_annotated(annotation)
    if annotation is Any:
        return "any"
    if annotation is type(None):
        return "null"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(_value_text(v) for v in typing.get_args(annotation))
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        members = _union_members(annotation)
        if all(_is_model(m) for m in members):
            return "layer"
        return " | ".join(_annotation_text(m) for m in members)
    if origin is list:
        return f"list of {_plural(_annotation_text(typing.get_args(annotation)[0]))}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"mapping of {_annotation_text(key)} to {_annotation_text(value)}"
    if _is_model(annotation):
        return "mapping"
    names = {bool: "bool", int: "int", float: "float", str: "string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraint_text(info: FieldInfo) -> str:
    bounds = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            bounds.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.MinLen):
            bounds.append(f"at least {item.min_length}")
        elif getattr(item, "pattern", None) is not None:
            bounds.append(f"matching `{item.pattern}`")
    return ", ".join(bounds)


def type_text(info: FieldInfo) -> str:
    """The type of a field as a reader of a YAML file sees it, with its bounds."""
    text = _annotation_text(info.annotation)
    bounds = _constraint_text(info)
    return f"{text} ({bounds})" if bounds else text


def _value_text(value: Any) -> str:
    # YAML spellings, since that is what the reader writes in a study file.
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(info: FieldInfo) -> str:
    """The default of a field: `required`, `(section)` for a nested section, or its value."""
    if info.default_factory is not None:
        value = info.get_default(call_default_factory=True, validated_data={})
        if isinstance(value, BaseModel):
            return "(section)"
        return _value_text(value)
    if info.default is PydanticUndefined:
        return "required"
    return _value_text(info.default)


def _plural(noun: str) -> str:
    if noun == "any":
        return "values"
    return noun if " " in noun or noun.endswith("s") else f"{noun}s"


def _cell(text: str) -> str:
    # A bare | would end the table cell.
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference(root: type[BaseModel] = Study) -> str:
    """The Markdown reference of every key of a study file.

    Args:
        root: the model at the top of the file.

    Returns:
        The text of docs/study-reference.md.
    """
    lines = [
        "# Study-file reference",
        "",
        "<!-- Generated from src/interplay/config.py; do not edit by hand. -->",
        f"<!-- Regenerate with: {REGENERATE} -->",
        "",
        "Every key of a study file, by its dotted path. `[]` marks an item of a list, "
        "`<name>` a key you choose, `(type: conv)` the layer kind a key belongs to. "
        "Unknown keys are errors. Any value may be a `${param}` placeholder filled in from "
        '`search.params`; in a YAML flow mapping quote it: `{type: norm, kind: "${norm}"}`.',
        "",
    ]
    for section in reference_sections(root):
        title = f"`{section.path}`" if section.path else "Top level"
        lines += [f"## {title}", "", section.description, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for row in section.rows:
            cells = [f"`{row.path}`", _cell(row.type), f"`{row.default}`", _cell(row.description)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    print(render_reference(), end="")


if __name__ == "__main__":
    main()
