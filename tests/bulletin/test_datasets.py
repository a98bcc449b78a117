"""The dataset registry: the shipped files load and match the demo warehouse; a wrong file says where and why."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from bulletin.datasets import DatasetSpec, check_grant, load_datasets
from bulletin.demo_data import build_demo_warehouse
from bulletin.errors import ConfigError, DefinitionError, NotFoundError, QueryError, RequestError
from bulletin.models import Filter
from bulletin.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "deployments" / "datasets"

VALID = """\
id: things
title: Things
source: main.things
columns:
  - {name: id, type: integer}
  - {name: region, type: string, label: Region}
filterable:
  region: ["=", in]
default_order: [{field: id, direction: desc}]
max_limit: 10
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, name: str = "things.yaml") -> DefinitionError:
    path = write(tmp_path / "datasets", name, text)
    with pytest.raises(DefinitionError) as info:
        load_datasets(path.parent)
    assert str(path) in str(info.value)
    return info.value


def test_a_valid_file_loads_with_canonical_operators(tmp_path):
    write(tmp_path, "things.yaml", VALID)
    spec = load_datasets(tmp_path)["things"]
    assert spec.source == "main.things"
    assert spec.operators_for("region") == ["=", "is_one_of"]
    assert spec.operators_for("id") == []
    assert spec.require_secure_filter is True
    assert spec.label_for("region") == "Region"
    assert spec.label_for("id") == "id"


@pytest.fixture(scope="module")
def demo_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "warehouse.duckdb"
    build_demo_warehouse(path, rows=2_000)
    return path


def test_the_shipped_datasets_match_the_demo_warehouse(demo_duckdb):
    registry = load_datasets(SHIPPED)
    assert {"sales", "orders"} <= set(registry)
    duck_types = {"integer": ("BIGINT", "INTEGER"), "date": ("DATE",), "string": ("VARCHAR",), "decimal": ("DECIMAL",)}
    with duckdb.connect(str(demo_duckdb), read_only=True) as con:
        for spec in registry.values():
            described = {row[0]: row[1] for row in con.execute(f'DESCRIBE "{spec.source}"').fetchall()}
            for column in spec.columns:
                assert column.name in described, f"{spec.id}.{column.name} is not in {spec.source}"
                if column.type:
                    assert described[column.name].startswith(duck_types[column.type]), (spec.id, column.name)
            assert spec.require_secure_filter, f"{spec.id} must require a secure filter"


@pytest.mark.parametrize(
    ("text", "location", "reason"),
    [
        (VALID.replace("id: things", "id: other"), "id", "must equal the file name"),
        (VALID + "owner: me\n", "owner", "Extra inputs are not permitted"),
        (VALID.replace("source: main.things", "source: things; DROP TABLE x"), "source", "should match pattern"),
        (VALID.replace("source: main.things", "source: a.b.c"), "source", "should match pattern"),
        (VALID.replace('region: ["=", in]', 'country: ["="]'), "filterable", "'country' is not a declared column"),
        (VALID.replace('region: ["=", in]', 'region: ["=", LIKE]'), "filterable.region.1", "Input should be"),
        (VALID.replace('region: ["=", in]', "region: []"), "filterable", "lists no operators"),
        (VALID.replace("field: id,", "field: nope,"), "default_order", "'nope' is not a declared column"),
        (VALID.replace("{name: id, type: integer}", "{name: region}"), "columns", "declared twice"),
        (VALID.replace("type: integer", "type: bigint"), "columns.0.type", "Input should be"),
        (VALID.replace("{name: id,", "{name: 'id; x',"), "columns.0.name", "should match pattern"),
        (VALID.replace("max_limit: 10", "max_limit: 0"), "max_limit", "greater than or equal to 1"),
        (VALID.replace("title: Things\n", ""), "title", "Field required"),
    ],
)
def test_a_wrong_file_names_path_field_and_reason(tmp_path, text, location, reason):
    error = load_error(tmp_path, text)
    assert f": {location}" in str(error)
    assert reason in str(error)
    assert error.field == location


def test_invalid_yaml_names_the_line(tmp_path):
    error = load_error(tmp_path, "id: things\ncolumns: [\n  - {name: x\n")
    assert "invalid YAML at line" in str(error)


def test_a_key_given_twice_is_refused(tmp_path):
    error = load_error(tmp_path, VALID + "title: Again\n")
    assert "'title' appears twice" in str(error)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path, text):
    assert "must be a YAML mapping" in str(load_error(tmp_path, text))


def test_a_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_datasets(tmp_path / "nope")


def test_only_yaml_files_are_read(tmp_path):
    write(tmp_path, "things.yaml", VALID)
    write(tmp_path, "notes.txt", "not a dataset")
    write(tmp_path, "other.yml.bak", "junk: [")
    assert list(load_datasets(tmp_path)) == ["things"]


def test_the_spec_is_immutable(tmp_path):
    write(tmp_path, "things.yaml", VALID)
    spec = load_datasets(tmp_path)["things"]
    with pytest.raises(ValueError, match="frozen"):
        spec.source = "other"  # type: ignore[misc]
    assert isinstance(spec, DatasetSpec)


def test_check_grant_refuses_what_the_query_engine_would() -> None:
    registry = load_datasets(PROJECT_ROOT / "deployments" / "datasets")
    region = Filter(field="region", op="=", value="APAC")
    check_grant(registry, ["sales"], [region])
    check_grant(registry, ["*"], [])
    with pytest.raises(NotFoundError, match=r"no dataset 'salez' \(known: orders, sales\)"):
        check_grant(registry, ["sales", "salez"], [])
    with pytest.raises(QueryError, match="field 'regoin' is not a column of dataset 'sales'"):
        check_grant(registry, ["sales"], [region.model_copy(update={"field": "regoin"})])
    with pytest.raises(QueryError, match="field 'region' is not a column of dataset 'orders'"):
        check_grant(registry, ["sales", "orders"], [region])
    with pytest.raises(QueryError, match=r"op 'is_one_of' is not allowed on 'amount'.*\(allowed: >, <, >=, <=\)"):
        check_grant(registry, ["sales"], [Filter(field="amount", op="is_one_of", value=[1])])
    with pytest.raises(RequestError, match=r"'\*' with a filter would drop the filter"):
        check_grant(registry, ["*"], [region])
    with pytest.raises(RequestError, match="give it alone"):
        check_grant(registry, ["*", "sales"], [])
