"""The dataset registry: what the query engine may read, as data (one YAML file per dataset).

A dataset names one table or view and allowlists its columns, and per filterable field the operators allowed.
Nothing outside these lists reaches SQL: the query engine refuses any other column, field or operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core.core_schema import ValidationInfo

from bulletin.definitions import load_definition
from bulletin.errors import ConfigError, DefinitionError, NotFoundError, QueryError, RequestError
from bulletin.models import OPERATOR_ALIASES, ColumnName, Filter, Identifier, Operator, OrderBy

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

    def filter_problem(self, field: str, op: str) -> tuple[Literal["field", "op"], str] | None:
        """Which part of ``field op value`` this dataset refuses (its query engine allowlist) and why; None if none."""
        if self.column(field) is None:
            return "field", f"is not a column of dataset {self.id!r}"
        allowed = self.operators_for(field)
        if not allowed:
            return "field", f"is not filterable in dataset {self.id!r}"
        if op not in allowed:
            return "op", f"is not allowed on {field!r} in dataset {self.id!r} (allowed: {', '.join(allowed)})"
        return None

    def label_for(self, name: str) -> str:
        column = self.column(name)
        return column.label if column and column.label else name


def check_grant(registry: Mapping[str, DatasetSpec], dataset_ids: Sequence[str], filters: Sequence[Filter]) -> None:
    """Refuse a token request the query engine would refuse at every query: an unknown dataset, a secure filter on
    a field or with an operator a granted dataset does not allow, or secure filters with ``*`` (every dataset),
    which has no dataset to put them on and would otherwise be dropped, leaving a token that sees nothing."""
    if "*" in dataset_ids:
        if len(dataset_ids) > 1:
            raise RequestError("dataset '*' already grants every dataset: give it alone", field="dataset")
        if filters:
            raise RequestError(
                "secure filters need named datasets: '*' with a filter would drop the filter (name each dataset)",
                field="filter",
            )
        return
    for dataset_id in dataset_ids:
        spec = registry.get(dataset_id)
        if spec is None:
            raise NotFoundError(
                f"no dataset {dataset_id!r} (known: {', '.join(sorted(registry)) or 'none'})", field="dataset"
            )
        for flt in filters:
            refused = spec.filter_problem(flt.field, flt.op)
            if refused is not None:
                part, reason = refused
                raise QueryError(f"secure filter {part} {getattr(flt, part)!r} {reason}", field=flt.field)


def load_dataset(path: Path) -> DatasetSpec:
    """One dataset file. Its ``id`` must equal the file name without ``.yaml``."""
    return load_definition(path, DatasetSpec)


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
