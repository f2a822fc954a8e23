"""Dashboard JSON checked against the dashboard schema that Grafana's own SDK carries.

grafana-foundation-sdk is generated from Grafana's schemas (CUE, via cog): one typed model class per
schema object, with `from_json` and `to_json`. It has no validator of its own, so the check uses the
models two ways:
- keys: `from_json` keeps only what the schema defines (per panel type for `options` and
  `fieldConfig.defaults.custom`, per datasource for queries, once the SDK's plugins are registered), so
  every key that does not come back from `to_json` is one the schema does not know;
- types: every value the decoded models hold is checked against the model's annotation (int, float,
  str, bool, enums, literals, lists, nested models).

The SDK release is pinned to the Grafana version whose schemaVersion the dashboards declare.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from typing import Any

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

plugins.register_default_plugins()

_MODEL_PACKAGE = "grafana_foundation_sdk.models"


def unknown_keys(dashboard: dict[str, Any]) -> set[str]:
    """Paths (list indexes as `[]`) of keys in `dashboard` that the schema does not define."""
    decoded = json.loads(json.dumps(Dashboard.from_json(dashboard), cls=JSONEncoder))
    dropped: set[str] = set()
    _dropped(dashboard, decoded, "", dropped)
    return dropped


def type_errors(dashboard: dict[str, Any]) -> list[str]:
    """`path: value is not <annotation>` for every value whose type the schema rules out."""
    errors: list[str] = []
    _check_model(Dashboard.from_json(dashboard), "", errors)
    return errors


def _dropped(sent: Any, back: Any, path: str, out: set[str]) -> None:
    if isinstance(sent, dict) and isinstance(back, dict):
        for key, value in sent.items():
            if key not in back:
                out.add(f"{path}.{key}")
            else:
                _dropped(value, back[key], f"{path}.{key}", out)
    elif isinstance(sent, list) and isinstance(back, list):
        for a, b in zip(sent, back, strict=False):
            _dropped(a, b, f"{path}[]", out)


def _is_model(value: Any) -> bool:
    return type(value).__module__.startswith(_MODEL_PACKAGE) and hasattr(value, "to_json")


def _check_model(model: Any, path: str, errors: list[str]) -> None:
    hints = typing.get_type_hints(type(model))
    for name, hint in hints.items():
        if hasattr(model, name):
            _check(getattr(model, name), hint, f"{path}.{_json_name(name)}", errors)


def _json_name(attribute: str) -> str:
    # the models rename JSON keys that clash with Python (`type` -> `type_val`) and use snake_case
    name = re.sub(r"_val$", "", attribute)
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _check(value: Any, hint: Any, path: str, errors: list[str]) -> None:
    if _fits(value, hint, path, errors):
        return
    errors.append(f"{path}: {value!r} is not {_describe(hint)}")


def _fits(value: Any, hint: Any, path: str, errors: list[str]) -> bool:
    """Whether `value` fits `hint`; nested problems of a fitting container are appended to `errors`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object:
        if _is_model(value):
            _check_model(value, path, errors)
        return True
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return type(None) in args
        for option in args:
            nested: list[str] = []
            if option is not type(None) and _fits(value, option, path, nested):
                errors.extend(nested)
                return True
        return False
    if origin is typing.Literal:
        return value in args
    if origin is list:
        if not isinstance(value, list):
            return False
        for i, item in enumerate(value):
            _check(item, args[0] if args else typing.Any, f"{path}[{i}]", errors)
        return True
    if origin is dict:
        if not isinstance(value, dict):
            return False
        for key, item in value.items():
            _check(item, args[1] if len(args) == 2 else typing.Any, f"{path}.{key}", errors)
        return True
    if not isinstance(hint, type):
        return True  # a construct the models do not use for data: nothing to check against
    if issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(value, dict) and hasattr(hint, "from_json"):
        value = hint.from_json(value)  # a few models leave nested objects undecoded (transformations)
    try:
        fits = isinstance(value, hint)
    except TypeError:  # a Protocol (the dataquery and panel-config variants): judge the value itself
        fits = _is_model(value)
    if fits and _is_model(value):
        _check_model(value, path, errors)
    return fits


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_describe(arg) for arg in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
