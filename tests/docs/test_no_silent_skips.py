"""In CI no test passes by not running: ``.ci/run`` sets ``CI=true`` and every skip is then a failure
(tests/fixtures/required.py), whether a fixture skipped or a ``skipif`` marker did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bulletin.settings import PROJECT_ROOT

SKIPPING = """
import os

import pytest

from tests.fixtures import required


def test_a_fixture_finds_its_service_missing():
    required.missing("no such service here")


@pytest.mark.skipif(True, reason="a marker skips it")
def test_marked():
    pass


def test_runs():
    assert required.in_ci() == (os.environ["CI"] == "true")
"""


def _pytest(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "CI": "true" if ci else ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.fixtures.required",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )


def test_outside_ci_a_missing_service_skips_with_its_reason(tmp_path: Path) -> None:
    result = _pytest(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 skipped" in result.stdout and "no such service here" in result.stdout


def test_in_ci_every_skip_is_a_failure_with_its_reason(tmp_path: Path) -> None:
    result = _pytest(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout + result.stderr
    # The fixture's skip fails the test; the marker's, raised while setting the test up, is an error of its setup.
    assert "1 failed, 1 passed, 1 error" in result.stdout, result.stdout
    assert "skipped in CI" in result.stdout
    assert "no such service here" in result.stdout and "a marker skips it" in result.stdout


def test_ci_run_requires_every_service() -> None:
    script = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in script.split("\nmake test", 1)[0]
