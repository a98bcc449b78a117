"""Docs that cannot drift: README examples run, and every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bulletin.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_two_commands_come_first() -> None:
    first = blocks("bash")[0]
    assert "make demo" in first and "make test" in first


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`BULLETIN_{name.upper()}`" in README, f"BULLETIN_{name.upper()} is not in the README"


def test_every_documented_setting_exists() -> None:
    documented = set(re.findall(r"`BULLETIN_([A-Z_]+)`", README))
    assert documented <= {n.upper() for n in Settings.model_fields} | {"DEBUG", "TOKEN"}


@pytest.mark.usefixtures("prefect_api")
def test_python_example_runs(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example,) = blocks("python")
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("COMPLETED") and "file://" in out


def test_report_example_is_a_valid_definition(tmp_path: Path) -> None:
    from bulletin.reports import load_report_file

    yaml_block = next(b for b in blocks("yaml") if b.startswith("id: weekly-regional-sales"))
    path = tmp_path / "weekly-regional-sales.yaml"
    path.write_text(yaml_block)
    report = load_report_file(path)
    assert report.audience.recipients[0].ref == "ana"
