"""The delivery tests' shared fixture: a run's real services (warehouse, ledger, channels) opened from the module's
own ``settings`` fixture, with the ledger migrated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bulletin.settings import Settings
from bulletin.store import migrate
from tasks.delivery.services import DeliveryServices, open_services
from tests.tasks.delivery.test_registry import KEYSET


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Iterator[DeliveryServices]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with ExitStack() as stack:
        opened = open_services(settings, stack, workdir=workdir, dry_run=False, keyset=KEYSET)
        assert opened.store is not None
        migrate(opened.store)
        yield opened
