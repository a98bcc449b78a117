"""The dataset registry: what the query engine may read, as data (one YAML file per dataset).

A dataset names one table or view and allowlists its columns, and per filterable field the operators allowed.
Nothing outside these lists reaches SQL: the query engine refuses any other column, field or operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo

from bulletin.definitions import load_definition
from bulletin.errors import ConfigError, DefinitionError, NotFoundError, QueryError, RequestError
from bulletin.models import OPERATOR_ALIASES, ColumnName, Filter, Identifier, Operator, OrderBy

#: A table or view, optionally schema-qualified: each part is a plain SQL identifier.
SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")]
#: Logical column types: they decide which Python values a filter may compare the column with.
ColumnType = Literal["string", "integer", "decimal", "number", "date", "timestamp", "boolean"]


#: How a column's values are shown to a reader (PDF, XLSX, email); CSV always keeps the raw values.
FormatKind = Literal["currency", "integer", "decimal", "percent", "date", "timestamp"]
_NUMBER_KINDS = ("currency", "integer", "decimal", "percent")
_KINDS_FOR_TYPE: dict[str, tuple[str, ...]] = {
    "integer": _NUMBER_KINDS,
    "decimal": _NUMBER_KINDS,
    "number": _NUMBER_KINDS,
    "date": ("date",),
    "timestamp": ("date", "timestamp"),
}


class ColumnFormat(BaseModel):
    """A column's display format: ``{kind: currency, currency: EUR}``, ``{kind: decimal, decimals: 1}``,
    ``{kind: percent}`` (the values are fractions: 0.153 shows as 15.3 %), ``integer``, ``date``, ``timestamp``.

    The separators, the currency symbol's place and the order of a date's parts come from the reader's locale
    (tasks/render/display.py); the file format keeps the value a number or a date wherever it can (XLSX)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FormatKind
    currency: str | None = Field(default=None, description="ISO 4217 code (EUR, USD, JPY), for kind currency only.")
    decimals: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Digits after the decimal point; default 2, 1 for a percent, the "
        "currency's own for a currency (0 for JPY).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value  # `format: integer`

    @model_validator(mode="after")
    def _consistent(self) -> ColumnFormat:
        if self.kind == "currency":
            from babel.numbers import is_currency  # here, not at import: a dataset without formats never pays

            if not self.currency:
                raise ValueError("a currency format needs its ISO 4217 code, e.g. {kind: currency, currency: EUR}")
            if self.currency != self.currency.upper() or not is_currency(self.currency):
                raise ValueError(f"{self.currency!r} is not an ISO 4217 currency code (EUR, USD, GBP...)")
        elif self.currency is not None:
            raise ValueError(f"'currency' goes with kind currency, not {self.kind}")
        if self.decimals is not None and self.kind in ("integer", "date", "timestamp"):
            raise ValueError(f"'decimals' does not apply to kind {self.kind}")
        return self

    @property
    def is_number(self) -> bool:
        return self.kind in _NUMBER_KINDS


class ColumnSpec(BaseModel):
    """One column a dataset exposes, and optionally how a reader sees its values (``format``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ColumnName
    type: ColumnType | None = None
    label: str | None = None
    format: ColumnFormat | None = None

    @model_validator(mode="before")
    @classmethod
    def _named_format(cls, value: Any) -> Any:
        # Pydantic would place a bad format at "columns.11.format": say which column by name instead.
        if not isinstance(value, dict) or value.get("format") is None:
            return value
        name = value.get("name", "?")
        try:
            fmt = ColumnFormat.model_validate(value["format"])
        except ValidationError as exc:
            reasons = "; ".join(_reason(e) for e in exc.errors(include_input=False, include_url=False))
            raise ValueError(f"column {name!r}: format: {reasons}") from None
        allowed = _KINDS_FOR_TYPE.get(str(value.get("type")))
        if value.get("type") is not None and (allowed is None or fmt.kind not in allowed):
            raise ValueError(f"column {name!r}: format {fmt.kind} does not suit a {value['type']} column")
        return {**value, "format": fmt}


def _reason(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


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

    def formats(self) -> dict[str, ColumnFormat]:
        """The declared display formats, by column name (undeclared columns are shown as they are)."""
        return {c.name: c.format for c in self.columns if c.format is not None}

    def totals_columns(self, totals: bool | list[str], shown: list[str]) -> tuple[str, ...]:
        """The ``shown`` columns a report's ``totals`` adds up: those named, or with ``true`` every one with a
        declared currency, integer or decimal format (never a percent, nor an undeclared id column)."""
        if totals is True:
            formats = self.formats()
            return tuple(n for n in shown if n in formats and formats[n].is_number and formats[n].kind != "percent")
        return tuple(n for n in shown if totals and n in totals)

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
