"""The dataset registry: what the query engine may read, as data (one YAML file per dataset).

A dataset names one table or view and allowlists its columns, and per filterable field the operators allowed.
Nothing outside these lists reaches SQL: the query engine refuses any other column, field or operator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic_core.core_schema import ValidationInfo

from bulletin.errors import ConfigError, DefinitionError
from bulletin.models import OPERATOR_ALIASES, ColumnName, Identifier, Operator, OrderBy

#: A table or view, optionally schema-qualified: each part is a plain SQL identifier.
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")]
#: Logical column types: they decide which Python values a filter may compare the column with.
ColumnType = Literal["string", "integer", "decimal", "number", "date", "timestamp", "boolean"]


class ColumnSpec(BaseModel):
    """One column a dataset exposes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ColumnName
    type: ColumnType | None = None
    label: str | None = None


class DatasetSpec(BaseModel):
    """One dataset: its source, its allowed columns, and per filterable field its allowed operators."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Identifier
    title: str = Field(min_length=1)
    description: str = ""
    source: SourceName
    columns: list[ColumnSpec] = Field(min_length=1)
    filterable: dict[ColumnName, list[Operator]] = Field(default_factory=dict)
    require_secure_filter: bool = True
    default_order: list[OrderBy] = Field(default_factory=list)
    max_limit: int | None = Field(default=None, ge=1)

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[ColumnSpec]) -> list[ColumnSpec]:
        seen: set[str] = set()
        for column in columns:
            if column.name in seen:
                raise ValueError(f"column {column.name!r} is declared twice")
            seen.add(column.name)
        return columns

    @field_validator("filterable", mode="before")
    @classmethod
    def _canonical_operators(cls, value: Any) -> Any:
        # Accept the short aliases ("in", "==") in files, store the canonical names the engine checks against.
        if isinstance(value, dict):
            return {
                key: [OPERATOR_ALIASES.get(op, op) if isinstance(op, str) else op for op in ops]
                if isinstance(ops, list)
                else ops
                for key, ops in value.items()
            }
        return value

    @field_validator("filterable")
    @classmethod
    def _filterable_columns(cls, value: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        declared = {c.name for c in info.data.get("columns", [])}
        for name, ops in value.items():
            if declared and name not in declared:
                raise ValueError(f"{name!r} is not a declared column")
            if not ops:
                raise ValueError(f"{name!r} lists no operators (leave it out to make it unfilterable)")
        return value

    @field_validator("default_order")
    @classmethod
    def _order_columns(cls, value: list[OrderBy], info: ValidationInfo) -> list[OrderBy]:
        declared = {c.name for c in info.data.get("columns", [])}
        for item in value:
            if declared and item.field not in declared:
                raise ValueError(f"{item.field!r} is not a declared column")
        return value

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec | None:
        """The declared column called ``name``, or None."""
        return next((c for c in self.columns if c.name == name), None)

    def operators_for(self, field: str) -> list[str]:
        """The operators allowed on ``field``; empty when it is not filterable."""
        return list(self.filterable.get(field, []))

    def label_for(self, name: str) -> str:
        column = self.column(name)
        return column.label if column and column.label else name


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice, which plain YAML loading silently resolves to the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node)


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


def load_dataset(path: Path) -> DatasetSpec:
    """One dataset file. Its ``id`` must equal the file name without ``.yaml``."""
    data = read_yaml_mapping(path)
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as exc:
        message, field = validation_message(path, exc)
        raise DefinitionError(message, field=field) from exc
    if spec.id != path.stem:
        raise DefinitionError(f"{path}: id: {spec.id!r} must equal the file name {path.stem!r}", field="id")
    return spec


def load_datasets(folder: Path) -> dict[str, DatasetSpec]:
    """Every ``*.yaml`` dataset in ``folder``, by id. Any wrong file fails the whole load."""
    if not folder.is_dir():
        raise ConfigError(f"datasets folder {folder} does not exist")
    registry: dict[str, DatasetSpec] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_dataset(path)
        if spec.id in registry:
            raise DefinitionError(f"{path}: id: dataset {spec.id!r} is defined twice", field="id")
        registry[spec.id] = spec
    return registry
