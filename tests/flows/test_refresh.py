"""The refresh-dependents flow against the session's Prefect API and the demo warehouse: it delivers what depends
on the upstream once, and a replayed upstream run delivers nothing twice (the ledger)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bulletin.demo_data import DEMO_END_DATE
from bulletin.models import Manifest
from bulletin.reports import ReportDefinition
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.store import list_deliveries, open_store
from flows.deliver_report import deliver_report
from flows.refresh import refresh_dependents

pytestmark = pytest.mark.usefixtures("prefect_api")

DIGEST = {
    "id": "orders-digest",
    "title": "Orders digest",
    "dataset": "orders",
    "columns": ["order_id", "order_date", "account_id", "amount"],
    "parameters": {"as_of": {"type": "date", "default": DEMO_END_DATE.isoformat()}},
    "filters": [{"field": "order_date", "op": "=", "value": "{{ params.as_of }}"}],
    "formats": ["csv"],
    "audience": {
        "recipients": [
            {"ref": "am-acc-0001", "email": "liam.walsh@example.com", "attributes": {"account_id": "ACC-0001"}},
            {"ref": "am-acc-0002", "email": "emma.jones@example.com", "attributes": {"account_id": "ACC-0002"}},
        ]
    },
    "secure_filters": {"orders": [{"field": "account_id", "op": "=", "value": "{{ recipient.account_id }}"}]},
}
SALES = yaml.safe_load((PROJECT_ROOT / "deployments" / "reports" / "weekly-regional-sales.yaml").read_text())


@pytest.fixture
def reports_dir(tmp_path: Path, bulletin_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "orders-digest.yaml").write_text(yaml.safe_dump(DIGEST))
    (folder / "weekly-regional-sales.yaml").write_text(yaml.safe_dump(SALES))
    monkeypatch.setenv("BULLETIN_REPORTS_DIR", str(folder))
    return folder


def refresh(**params: object) -> tuple[str, list[Manifest]]:
    state = refresh_dependents(**params, return_state=True)
    result = state.result(raise_on_failure=False)
    return state.type.value, result


def ledger(report_id: str) -> list:
    with open_store(Settings().database) as store:
        return list_deliveries(store, report_id=report_id, limit=100)


def test_refresh_delivers_the_dependents_once_per_upstream_run(reports_dir: Path) -> None:
    state, manifests = refresh(dataset="orders", upstream_run_id="12345", upstream="dbt-cloud")
    assert state == "COMPLETED"
    (manifest,) = manifests  # weekly-regional-sales reads `sales`: not a dependent
    assert manifest.report_id == "orders-digest"
    assert manifest.run_key == "orders-digest:after:orders:12345"
    assert manifest.delivered == 2
    assert {a.outcome for d in manifest.deliveries for a in d.artifacts} == {"sent"}
    first = ledger("orders-digest")
    assert len(first) == 2

    # The same upstream run again (a replayed event): everything is already in the ledger, nothing is sent.
    state, (again,) = refresh(dataset="orders", upstream_run_id="12345", upstream="dbt-cloud")
    assert state == "COMPLETED"
    assert {a.outcome for d in again.deliveries for a in d.artifacts} == {"already_sent"}
    assert [(r.run_key, r.recipient, r.attempts) for r in ledger("orders-digest")] == [
        (r.run_key, r.recipient, r.attempts) for r in first
    ]

    # A new upstream run is new data: delivered again, under its own key.
    refresh(dataset="orders", upstream_run_id="12346")
    assert len(ledger("orders-digest")) == 4


def test_nothing_depends(reports_dir: Path) -> None:
    state, manifests = refresh(report_id="orders-digest", upstream_run_id="r1")
    assert (state, manifests) == ("COMPLETED", [])


@pytest.mark.skipif(
    "depends_on" not in ReportDefinition.model_fields, reason="ReportDefinition has no depends_on field yet"
)
def test_report_to_report_dependency(reports_dir: Path) -> None:
    (reports_dir / "orders-digest.yaml").write_text(yaml.safe_dump({**DIGEST, "depends_on": ["weekly-regional-sales"]}))
    state, (manifest,) = refresh(report_id="weekly-regional-sales", upstream_run_id="abc123def456", dry_run=True)
    assert state == "COMPLETED"
    assert manifest.report_id == "orders-digest" and manifest.dry_run


def test_the_deployment_trigger_and_the_webhook_path_deliver_once_for_one_upstream_run(reports_dir: Path) -> None:
    # depends_on makes two paths after an upstream run: the Prefect deployment trigger runs the dependent with the
    # upstream run named, and the run.completed webhook starts refresh-dependents. Both fire: one delivery each.
    (reports_dir / "orders-digest.yaml").write_text(yaml.safe_dump({**DIGEST, "depends_on": ["weekly-regional-sales"]}))
    upstream = {"upstream_report": "weekly-regional-sales", "upstream_run_id": "0193f1e2-run"}
    triggered = deliver_report("orders-digest", **upstream, return_state=True).result(raise_on_failure=False)
    assert triggered.run_key == "orders-digest:after:weekly-regional-sales:0193f1e2-run"
    assert {a.outcome for d in triggered.deliveries for a in d.artifacts} == {"sent"}

    state, (refreshed,) = refresh(
        report_id="weekly-regional-sales", upstream_run_id="0193f1e2-run", upstream="bulletin"
    )
    assert state == "COMPLETED" and refreshed.run_key == triggered.run_key
    assert {a.outcome for d in refreshed.deliveries for a in d.artifacts} == {"already_sent"}
    assert len(ledger("orders-digest")) == 2


def test_a_trigger_run_names_its_upstream_whole(reports_dir: Path, bulletin_env: Path) -> None:
    bulletin_home = bulletin_env
    for params in (
        {"upstream_run_id": "r1"},
        {"upstream_report": "weekly-regional-sales", "upstream_run_id": "r1", "run_key": "k"},
    ):
        state = deliver_report("orders-digest", **params, return_state=True)
        assert state.type.value == "FAILED" and "upstream" in state.message
    assert not (bulletin_home / "bulletin.db").exists()  # refused before any work: no state store, no ledger row


def test_a_broken_definition_fails_the_run_with_its_reason(reports_dir: Path) -> None:
    (reports_dir / "broken.yaml").write_text("id: [unclosed")
    state, error = refresh(dataset="orders", upstream_run_id="x")
    assert state == "FAILED"
    assert "invalid YAML" in str(error)
