"""Every path-typed key resolves a relative value against the configuration file's folder, never the
current directory (under systemd it is /). The keys are found by walking the model, so a path key
added later is covered without anyone remembering to add it here."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from exporter.config import (
    Config,
    DatabaseTarget,
    HealWarm,
    LaravelTarget,
    PhpFpmTarget,
    RedisTarget,
    WarmCommand,
    load,
)
from tests.support.config_fields import leaf_types, validator_names, walk_fields

PATH_CHECKS = {"_relative_to_config", "_command_path"}


def path_fields() -> list[str]:
    return [path for path, field in walk_fields(Config) if Path in leaf_types(field.annotation)]


def laravel_root(base: Path) -> Path:
    root = base / "abs-app"
    for sub in ("resources/views", "storage/framework/views"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


# The smallest valid entry of each model that sits in a list, to carry the key under test.
def minimal(model: type[BaseModel], base: Path) -> dict[str, Any]:
    entries: dict[type[BaseModel], dict[str, Any]] = {
        LaravelTarget: {"name": "shop", "root": str(laravel_root(base))},
        PhpFpmTarget: {"name": "www", "address": "127.0.0.1:9000"},
        RedisTarget: {"name": "cache"},
        DatabaseTarget: {"name": "main", "url": "mysql+asyncmy://exporter@127.0.0.1:3306/shop"},
        HealWarm: {"target": "shop"},
        WarmCommand: {"argv": ["true"]},
    }
    return dict(entries.get(model, {}))


def inner_model(model: type[BaseModel], key: str) -> type[BaseModel]:
    annotation = model.model_fields[key].annotation
    stack = [annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
        stack.extend(typing.get_args(a))
    raise AssertionError(f"{model.__name__}.{key} holds no model")


def document(model: type[BaseModel], parts: list[str], value: str, base: Path) -> dict[str, Any]:
    """A configuration (or part) that sets the dotted path `parts` to `value` and is otherwise valid."""
    key = parts[0].removesuffix("[]")
    if len(parts) == 1:
        return {key: value}
    inner = inner_model(model, key)
    doc = {**minimal(inner, base), **document(inner, parts[1:], value, base)}
    return {key: [doc] if parts[0].endswith("[]") else doc}


def value_at(config: Any, parts: list[str]) -> Any:
    for part in parts:
        config = getattr(config, part.removesuffix("[]"))
        if part.endswith("[]"):
            config = config[0]
    return config


def test_every_path_key_carries_the_resolution() -> None:
    fields = dict(walk_fields(Config))
    assert len(path_fields()) >= 12  # the walk found the keys (a broken walk must not pass vacuously)
    for path in path_fields():
        assert PATH_CHECKS & {n.split(".")[0] for n in validator_names(fields[path])}, (
            f"{path} is a Path without ConfigPath/CommandPath: a relative value would follow the "
            "current directory")


@pytest.mark.parametrize("key", path_fields())
def test_a_relative_path_resolves_against_the_configuration_files_folder(
        key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc" / "cachewarden"
    relative = Path("rel") / key.replace("[]", "").replace(".", "-")
    target = etc / relative
    target.parent.mkdir(parents=True)
    if key.rsplit(".", 1)[-1].endswith("_file"):
        target.write_text("a-secret-of-sixteen-chars\n")
        target.chmod(0o600)
    elif key.endswith("root"):
        laravel_root(etc).rename(target)
    else:
        target.mkdir()
    config_file = etc / "cachewarden.yaml"
    parts = key.split(".")
    config_file.write_text(yaml.safe_dump(document(Config, parts, str(relative), etc)))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / relative.parent).mkdir(parents=True)  # a decoy where the current directory would lead
    monkeypatch.chdir(elsewhere)

    config = load(config_file)

    assert value_at(config, parts) == target


def test_a_bare_program_name_is_left_for_path_lookup(tmp_path: Path) -> None:
    config_file = tmp_path / "cachewarden.yaml"
    config_file.write_text("heal: {php_cli: php8.2}\n")
    assert load(config_file).heal.php_cli == Path("php8.2")
