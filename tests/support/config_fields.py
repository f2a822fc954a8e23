"""Every field of the configuration model, found by walking it, so a test covers keys added later."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _inner_models(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """Models inside an annotation, with the path suffix to reach one: "" direct, "[]" list, "{}" dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield "", annotation
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple, set, frozenset):
        for _, model in (m for a in args for m in _inner_models(a)):
            yield "[]", model
    elif origin is dict:
        for _, model in _inner_models(args[1]):
            yield "{}", model
    elif origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            yield from _inner_models(arg)


def walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted path, field) for every field of `model` and of every model nested in it.

    Lists show as `[]` and dicts as `{}` in the path: `heal.warm[].commands[].cwd`. Fields excluded
    from dumps (`exclude=True`) are state cachewarden derives while loading, not keys a person writes,
    and are left out.
    """
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        path = f"{prefix}.{name}" if prefix else name
        yield path, field
        for suffix, inner in _inner_models(field.annotation):
            yield from walk_fields(inner, path + suffix)


def _annotated_metadata(annotation: Any) -> Iterator[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        yield from annotation.__metadata__
    for arg in typing.get_args(annotation):
        yield from _annotated_metadata(arg)


def validator_names(field: FieldInfo) -> set[str]:
    """The __qualname__ of each validator function on the field, inside Optional[...] and lists too."""
    names = set()
    for meta in (*field.metadata, *_annotated_metadata(field.annotation)):
        func = getattr(meta, "func", None)
        if func is not None:
            names.add(getattr(func, "__qualname__", ""))
    return names


def leaf_types(annotation: Any) -> set[Any]:
    """The plain types an annotation can hold: `Path | None` gives {Path, NoneType}, list[Path] {Path}."""
    if typing.get_origin(annotation) is typing.Annotated:
        return leaf_types(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    return set().union(*(leaf_types(a) for a in args))
