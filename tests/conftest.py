"""Session-wide fixtures: an isolated state folder, a small demo warehouse, and one real Prefect API.

The Prefect test harness starts a real API server (SQLite) once per session: about 15-20 s, so never per test.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports prefect, so the harness, the flow and the CLI all see one isolated environment.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="bulletin-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
os.environ["PREFECT_CLI_PROMPT"] = "false"
# INFO, so run logs reach the API as in production (the secrets-in-logs test reads them back).
os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
os.environ["BULLETIN_HOME"] = str(_SESSION_DIR / "home")
os.environ.pop("BULLETIN_WAREHOUSE_URL", None)
os.environ.pop("BULLETIN_SIGNING_KEYS", None)
# The API answers 503 when a Prefect call takes longer than this (5 s in production). The session's Prefect server
# shares two loaded cores with the flow runs the tests start: give it room, so slowness is not taken for an outage.
# The tests of an unreachable Prefect set their own, shorter timeout.
os.environ["BULLETIN_API_PREFECT_TIMEOUT_SECONDS"] = "30"

TEST_WAREHOUSE_ROWS = 30_000


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def demo_warehouse(session_dir: Path) -> Path:
    """A small deterministic demo warehouse shared by the session (the full demo has 1.2M rows)."""
    from bulletin.demo_data import DEMO_END_DATE, build_demo_warehouse

    path = session_dir / "warehouse.duckdb"
    build_demo_warehouse(path, rows=TEST_WAREHOUSE_ROWS, end_date=DEMO_END_DATE)  # fixed: tests expect its dates
    return path


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real Prefect API server for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def bulletin_env(demo_warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point Bulletin at the session warehouse and a fresh state folder for this test."""
    home = tmp_path / "home"
    monkeypatch.setenv("BULLETIN_HOME", str(home))
    monkeypatch.setenv("BULLETIN_WAREHOUSE_URL", str(demo_warehouse))
    return home


# Loopback services (moto S3, aiosmtpd SMTP, PostgreSQL, OpenSSH sshd, Prefect servers and workers) live in their
# own fixture modules.
pytest_plugins = [
    "tests.fixtures.required",
    "tests.fixtures.s3",
    "tests.fixtures.smtp",
    "tests.fixtures.database",
    "tests.fixtures.webhook_receiver",
    "tests.fixtures.prefect_server",
    "tests.fixtures.prefect_postgres",
    "tests.fixtures.workers",
    "tests.fixtures.sshd",
]
