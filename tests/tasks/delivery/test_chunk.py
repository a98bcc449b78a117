"""A lane's chunk rendered from one warehouse scan (tasks/delivery/chunk.py): each recipient's files are, byte for byte,
those of its own single query; one query serves the chunk (counted at the real warehouse); a recipient whose token
is refused fails alone; a combined query that fails leaves each recipient to its own query. Real lanes, the demo
warehouse (DuckDB), the local bucket and a SQLite ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bulletin.errors import DefinitionError, TransientError
from bulletin.models import DeliveryStatus, Recipient
from bulletin.settings import Settings
from tasks.delivery.chunk import render_chunk
from tasks.delivery.plan import DeliveryPlan
from tasks.delivery.produce import Produced, render_for
from tasks.delivery.services import DeliveryServices
from tasks.warehouse import StreamResult, Warehouse
from tasks.warehouse.base import CompiledQuery
from tests.tasks.delivery.test_lane_ledger import run_lane
from tests.tasks.delivery.test_registry import plan_for

NOW = datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
LIMIT = 100  # an account has ~150 orders in the test warehouse: some recipients are cut, their files say so


def account(ref: str, account_id: str | None) -> Recipient:
    return Recipient(ref=ref, email=f"{ref}@example.com", attributes={"account_id": account_id} if account_id else {})


AUDIENCE = [
    account("a1", "ACC-0001"),
    account("a2", "ACC-0002"),
    account("a1-again", "ACC-0001"),  # the same scope as a1: overlapping rows, each gets them
    account("broken", None),  # no account: its token cannot be made, it fails alone
    account("sly", "ACC-0003' OR '1'='1"),  # bound, never SQL: matches nothing
    account("a4", "ACC-0004"),
]


class CountingWarehouse:
    """The real warehouse, counting the queries it streams; ``fail`` makes the combined one (flags) fail."""

    def __init__(self, real: Warehouse, *, fail: bool = False, midway: bool = False) -> None:
        self.real, self.fail, self.midway, self.streamed = real, fail, midway, [0]

    def stream(self, compiled: CompiledQuery, batch_rows: int) -> StreamResult:
        self.streamed[0] += 1
        combined = "CASE WHEN" in compiled.sql
        if self.fail and combined:
            raise TransientError("the warehouse did not answer")
        result = self.real.stream(compiled, batch_rows)
        if not (self.midway and combined):
            return result

        def broken() -> Iterator[pa.RecordBatch]:  # the connection drops after a few batches
            for n, batch in enumerate(result):
                if n == 3:
                    raise TransientError("the warehouse went away")
                yield batch

        return StreamResult(result.schema, broken(), limit=None, on_close=result.close)

    def fetch_all(self, compiled: CompiledQuery, **kwargs: Any) -> Any:
        return self.real.fetch_all(compiled, **kwargs)


@pytest.fixture
def settings(tmp_path: Path, demo_warehouse: Path) -> Settings:
    state = tmp_path / "state" / "bulletin.db"
    return Settings(home=tmp_path / "home", warehouse_url=str(demo_warehouse), database_url=f"sqlite:///{state}")


def plan(settings: Settings) -> DeliveryPlan:
    base = plan_for(settings, ["s3"])
    # Every order of the account (no date filter), small batches so each recipient's rows span many of them.
    report = base.report.model_copy(update={"filters": [], "limit": LIMIT})
    return replace(base, report=report, formats=["csv", "xlsx"], batch_rows=17)


def counted(
    services: DeliveryServices, *, fail: bool = False, midway: bool = False
) -> tuple[DeliveryServices, list[int]]:
    wrapper = CountingWarehouse(services.warehouse, fail=fail, midway=midway)
    return replace(services, warehouse=wrapper, clock=lambda: NOW), wrapper.streamed  # type: ignore[arg-type]


def alone(p: DeliveryPlan, services: DeliveryServices, recipient: Recipient) -> Produced:
    return render_for(p, services, recipient, p.formats)


def assert_same_files(got: Produced, want: Produced) -> None:
    assert got.claims.secure_filters == want.claims.secure_filters
    for fmt in ("csv", "xlsx"):
        assert got.files[fmt].rows == want.files[fmt].rows
    # CSV byte for byte; XLSX by its rows too (its sheet, down to the truncation note, is made from the same batches).
    assert got.files["csv"].path.read_bytes() == want.files["csv"].path.read_bytes()
    assert got.files["xlsx"].sha256 == want.files["xlsx"].sha256


def test_each_recipient_of_a_chunk_gets_its_single_querys_files(settings: Settings, services: DeliveryServices) -> None:
    p = plan(settings)
    services, streamed = counted(services)
    chunk = render_chunk(p, services, [(r, p.formats) for r in AUDIENCE])
    assert streamed == [1], "one query for the whole chunk"
    assert isinstance(chunk[3], DefinitionError)
    for recipient, got in zip(AUDIENCE, chunk, strict=True):
        if recipient.ref == "broken":
            continue
        assert isinstance(got, Produced), recipient.ref
        assert_same_files(got, alone(p, services, recipient))
    rows = {r.ref: got.files["csv"].rows for r, got in zip(AUDIENCE, chunk, strict=True) if isinstance(got, Produced)}
    assert rows["a1"] == rows["a1-again"] == LIMIT and rows["sly"] == 0  # a1 cut at the limit; nothing for the sly one
    assert "ACC-0001" in chunk[0].files["csv"].path.read_text()  # type: ignore[union-attr]
    assert "ACC-0002" not in chunk[0].files["csv"].path.read_text()  # type: ignore[union-attr]


def test_a_lane_renders_its_chunk_with_one_query_and_fails_only_the_broken_recipient(
    settings: Settings, services: DeliveryServices
) -> None:
    services, streamed = counted(services)
    deliveries = run_lane(plan(settings), services, AUDIENCE)
    assert streamed == [1], "the lane's whole chunk came from one query"
    statuses = {d.recipient: d.status for d in deliveries}
    assert statuses.pop("broken") is DeliveryStatus.FAILED
    assert set(statuses.values()) == {DeliveryStatus.DELIVERED}
    assert len({d.token_id for d in deliveries if d.token_id}) == len(AUDIENCE) - 1, "a token of its own each"


def test_a_failed_combined_query_leaves_each_recipient_to_its_own_query(
    settings: Settings, services: DeliveryServices
) -> None:
    p = plan(settings)
    failing, streamed = counted(services, fail=True)
    chunk = render_chunk(p, failing, [(r, p.formats) for r in AUDIENCE])
    assert streamed == [1] and [type(r).__name__ for r in chunk] == [
        "NoneType",
        "NoneType",
        "NoneType",
        "DefinitionError",
        "NoneType",
        "NoneType",
    ]
    deliveries = run_lane(p, failing, AUDIENCE)
    assert streamed == [1 + 1 + len(AUDIENCE) - 1], "one failed combined query, then one query per recipient"
    assert [d.status for d in deliveries].count(DeliveryStatus.DELIVERED) == len(AUDIENCE) - 1


def test_a_combined_query_failing_midway_leaves_each_recipient_to_its_own_query(
    settings: Settings, services: DeliveryServices
) -> None:
    p = plan(settings)
    breaking, streamed = counted(services, midway=True)
    chunk = render_chunk(p, breaking, [(r, p.formats) for r in AUDIENCE])
    assert streamed == [1] and [r is None for r in chunk] == [True, True, True, False, True, True]
    assert not any(services.workdir.iterdir()), "the half-written files are gone"
    deliveries = run_lane(p, breaking, AUDIENCE)
    assert [d.status for d in deliveries].count(DeliveryStatus.DELIVERED) == len(AUDIENCE) - 1


def test_a_chunk_of_one_takes_the_single_query(settings: Settings, services: DeliveryServices) -> None:
    p = plan(settings)
    services, streamed = counted(services)
    (got,) = render_chunk(p, services, [(AUDIENCE[1], p.formats)])
    assert isinstance(got, Produced) and streamed == [1]
    assert_same_files(got, alone(p, services, AUDIENCE[1]))
