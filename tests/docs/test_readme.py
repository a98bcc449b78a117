"""Docs that cannot drift: README examples run, and every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bulletin.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text()
DOCS = PROJECT_ROOT / "docs"
#: The reference the README links to: docs/**/*.md, one page per subject, keyed by path under docs/.
REFERENCE = {path.relative_to(DOCS).as_posix(): path.read_text() for path in sorted(DOCS.rglob("*.md"))}
CONFIGURATION = REFERENCE["configuration.md"]
#: Benchmarks are a history of measurements: they name settings that were since removed.
EVERYTHING = "\n".join([README, *(text for name, text in REFERENCE.items() if name != "benchmarks.md")])


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_two_commands_come_first() -> None:
    first = blocks("bash")[0]
    assert "make demo" in first and "make test" in first


def test_every_setting_is_documented() -> None:
    for name in Settings.model_fields:
        assert f"`BULLETIN_{name.upper()}`" in CONFIGURATION, f"BULLETIN_{name.upper()} is not in docs/configuration.md"


#: Variables of the test suite, not settings: .ci/run sets them for its PostgreSQL databases (docs/operations.md).
TEST_VARIABLES = {"TEST_POSTGRES_URL", "TEST_PREFECT_POSTGRES_URL"}


def test_every_documented_setting_exists() -> None:
    documented = set(re.findall(r"`BULLETIN_([A-Z_]+)`", EVERYTHING))
    assert documented <= {n.upper() for n in Settings.model_fields} | {"DEBUG", "TOKEN"} | TEST_VARIABLES
    ci_run = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert all(f"export BULLETIN_{name}=" in ci_run for name in TEST_VARIABLES)


@pytest.mark.usefixtures("prefect_api")
def test_python_example_runs(bulletin_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (example,) = blocks("python")
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("COMPLETED") and "file://" in out


def test_report_example_is_a_valid_definition(tmp_path: Path) -> None:
    from bulletin.reports import load_report_file

    yaml_block = next(b for b in blocks("yaml", REFERENCE["reports.md"]) if b.startswith("id: weekly-regional-sales"))
    path = tmp_path / "weekly-regional-sales.yaml"
    path.write_text(yaml_block)
    report = load_report_file(path)
    assert report.audience.recipients[0].ref == "ana"


def test_the_tour_comes_before_the_reference() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.M)
    assert headings[0] == "Two commands" and headings[1].startswith("A tour")
    assert headings[-1] == "Reference"


def test_no_page_speaks_of_the_documents_the_product_was_specified_from() -> None:
    for name, text in {"README.md": README, **REFERENCE}.items():
        assert not re.search(r"\bseeds?\b", text, flags=re.I), f"{name} says 'seed'"


def test_every_shell_variable_an_api_example_uses_is_defined() -> None:
    """$BULLETIN_API and $BULLETIN_API_KEY are defined by the README's tour, which the API page points to."""
    defined = set(re.findall(r"^export (BULLETIN_[A-Z_]+)=", README, flags=re.M))
    for name, text in {"README.md": README, **REFERENCE}.items():
        for block in blocks("bash", text) + blocks("sh", text):
            for used in re.findall(r"\$\{?(BULLETIN_[A-Z_]+)", block):
                assert used in defined, f"{name} uses ${used}, which the README's tour does not define"


def test_every_relative_link_resolves() -> None:
    for name, text in {"README.md": README, **REFERENCE}.items():
        base = PROJECT_ROOT if name == "README.md" else (DOCS / name).parent
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{name} links to {target}, which does not exist"


def test_every_reference_page_is_in_the_readme_reference_table() -> None:
    """A page nobody links to is a page nobody finds: docs/deploy/ included."""
    table = README.split("\n## Reference\n", 1)[1]
    for name in REFERENCE:
        assert f"](docs/{name})" in table, f"docs/{name} is not in the README's Reference table"


def headings_as_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_anchor_of_a_relative_link_resolves() -> None:
    pages = {"README.md": PROJECT_ROOT / "README.md", **{name: DOCS / name for name in REFERENCE}}
    for name, path in pages.items():
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]*)\)", re.sub(r"```.*?```", "", path.read_text())):
            anchors = headings_as_anchors((path.parent / target if target else path).read_text())
            assert anchor in anchors, f"{name} links to {target}#{anchor}, which is no heading there"
