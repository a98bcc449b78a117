"""Definitions as data: one YAML file per report, dataset or trigger, validated with pydantic when loaded.

A wrong file is refused with its path, the field and the reason (every reason, not only the first), and a key given
twice is an error rather than silently the last one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bulletin.errors import DefinitionError

#: libyaml's parser when PyYAML has it (its wheels do): about 3.5 times faster than the pure-Python one, which took
#: 0.5 to 0.7 s, twice per run, for a report with a 1,000-recipient inline audience (docs/benchmarks.md).
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that refuses a key given twice, which plain YAML loading silently resolves to the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
        keys.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """One YAML file that must hold a mapping; any problem is a DefinitionError naming the file and the line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "cannot be parsed"
        raise DefinitionError(f"{path}: invalid YAML{where}: {reason}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: must be a YAML mapping of fields")
    return data


def validation_message(path: Path, exc: ValidationError) -> tuple[str, str]:
    """``path: dotted.location: reason; ...`` for every error, and the first location (for ``BulletinError.field``)."""
    errors = exc.errors(include_input=False, include_url=False)
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error["loc"]) or "(file)"
        parts.append(f"{location}: {error['msg'].removeprefix('Value error, ')}")
    first = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
    return f"{path}: " + "; ".join(parts), first


M = TypeVar("M", bound=BaseModel)


def load_definition(path: Path, model: type[M]) -> M:
    """Load and validate one file as ``model``; its ``id`` must equal the file name without ``.yaml``."""
    data = read_yaml_mapping(path)
    try:
        definition = model.model_validate(data)
    except ValidationError as exc:
        message, field = validation_message(path, exc)
        raise DefinitionError(message, field=field) from exc
    definition_id = getattr(definition, "id", None)
    if definition_id != path.stem:
        raise DefinitionError(f"{path}: id: {definition_id!r} must equal the file name {path.stem!r}", field="id")
    return definition
